"""Operators of ``general_updates``: thin wrappers around :mod:`releng.core.updates`.

``prepare_updates`` validates the run and lays out the work area; the plan operators return the lists the
mapped tasks run over (RepoSyncOperator and RepoclosureOperator do the syncing and checking); then the
synced packages go into staging, each staging tree's repodata is regenerated and swapped in, and the
staging Asset is updated when something changed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from releng.assets import STAGING_ASSET
from releng.core import rsync, staging, updates
from releng.core.layout import ComposeLayout, compose_timestamp
from releng.core.profile import ReleaseProfile
from releng.core.repodata import REPOMD, RepodataError
from releng.operators.common import load_release, site_settings

PLAN_KINDS = ("reposync", "repoclosure", "repodata")
ADDED_SHOWN = 20


def _layout(summary: dict) -> ComposeLayout:
    return ComposeLayout(load_release(summary["release"]), Path(summary["compose_root"]), summary["updates_id"])


def _plan(summary: dict, profile: ReleaseProfile) -> updates.UpdatesPlan:
    return updates.plan_updates(profile, updates.UpdatesParams(tuple(summary["repos"]), summary["rc"]))


class PrepareUpdatesOperator(BaseOperator):
    """Check the run's params against the release, check staging and the signing key, lay out the work area.

    Returns the run summary every later task reads. Nothing is synced or written to staging when a check
    fails; the work area's name comes from the run's ``run_after``, so a retry reuses it.
    """

    ui_color = "#e8f4ea"

    def execute(self, context: Context) -> dict:
        params = dict(context["params"])
        profile = load_release(params.get("release") or "")
        site = site_settings()
        try:
            run = updates.validate_params(profile, params)
            staging_dir = updates.release_staging_dir(profile, site.staging_root, site.production_root, run.rc)
            if not staging_dir.is_dir():
                raise updates.UpdatesError(
                    f"staging release directory {staging_dir} does not exist; stage {profile.name} with full_compose "
                    f"first, or check `rc` (this run has rc={run.rc})")
            if site.repo_signing_key:
                problem = updates.signing_key_problem(site.repo_signing_key, site.gnupghome)
                if problem:
                    raise updates.UpdatesError(problem)
            layout = updates.updates_layout(profile, site.compose_root,
                                            compose_timestamp(context["dag_run"].run_after))
            plan = updates.plan_updates(profile, run)
            view = updates.closure_view(layout, staging_dir, plan)
        except updates.UpdatesError as exc:
            raise AirflowFailException(str(exc)) from None
        if site.repo_signing_key:
            self.log.info("repomd.xml will be signed with %s (GNUPGHOME %s)", site.repo_signing_key,
                          site.gnupghome or "~/.gnupg")
        else:
            self.log.warning("RELENG_REPO_SIGNING_KEY is not set: staging repodata will not be signed")
        self.log.info("updates of %s (%s) into %s: %d trees to sync, %d closure checks; work area %s",
                      profile.name, ", ".join(run.repos), staging_dir, len(plan.trees), len(plan.repoclosure),
                      layout.top)
        return {"release": profile.name, "repos": list(run.repos), "rc": run.rc, "staging_dir": str(staging_dir),
                "compose_root": str(layout.compose_root), "updates_id": layout.compose_id, "top": str(layout.top),
                "closure_dir": str(view)}


class PlanUpdatesOperator(BaseOperator):
    """Return one work list of the run for a mapped task (Airflow maps only over return values).

    :param kind: ``reposync`` (RepoSyncOperator kwargs), ``repoclosure`` (RepoclosureOperator kwargs) or
        ``repodata`` (RefreshRepodataOperator kwargs)
    :param summary: prepare_updates' summary
    """

    template_fields = ("summary",)
    ui_color = "#f4f4f4"

    def __init__(self, *, kind: str, summary: dict, **kwargs):
        super().__init__(**kwargs)
        if kind not in PLAN_KINDS:
            raise ValueError(f"unknown work list {kind!r}; one of {', '.join(PLAN_KINDS)}")
        self.kind = kind
        self.summary = summary

    def execute(self, context: Context) -> list[dict]:
        items = plan_items(self.summary, self.kind)
        self.log.info("%d %s items", len(items), self.kind)
        return items


def plan_items(summary: dict, kind: str) -> list[dict]:
    """One work list of the run (``PLAN_KINDS``) as the mapped operator's kwargs."""
    layout = _layout(summary)
    plan = _plan(summary, layout.profile)
    release, staging_dir = summary["release"], Path(summary["staging_dir"])
    if kind == "repoclosure":
        return [{"release": release, "repo": i["repo"], "arch": i["arch"], "compose_dir": summary["closure_dir"],
                 "work_dir": str(layout.work / "repoclosure")} for i in plan.repoclosure]
    items = []
    for tree in plan.trees:
        repo, arch, tree_kind = tree["repo"], tree["arch"], tree["kind"]
        name = f"{repo}-{arch}-{tree_kind}"
        synced = layout.repo_tree(repo, arch, tree_kind)
        staged = updates.staging_tree(layout, staging_dir, repo, arch, tree_kind)
        common = {"release": release, "repo": repo, "arch": arch, "kind": tree_kind}
        if kind == "reposync":
            # Packages staging already has are hard-linked from it instead of downloaded again.
            items.append({**common, "dest": str(synced), "work_dir": str(layout.work / "dnf" / name), "hashed": True,
                          "previous": str(staged) if (staged / REPOMD).is_file() else None})
        else:
            items.append({**common, "tree": str(staged), "synced": str(synced),
                          "scratch": str(layout.work / "repodata" / name)})
    return items


class StageUpdatesOperator(BaseOperator):
    """rsync the synced packages into the staging release directory, keeping what staging already has.

    Packages only (no repodata: update_repodata regenerates it), never a deletion: older builds stay
    installable for the life of the point release.

    :param summary: prepare_updates' summary
    """

    template_fields = ("summary",)

    def __init__(self, *, summary: dict, **kwargs):
        super().__init__(**kwargs)
        self.summary = summary

    def execute(self, context: Context) -> dict:
        layout = _layout(self.summary)
        dest = Path(self.summary["staging_dir"])
        argv = staging.staging_argv("payload", layout.compose, dest)
        try:
            result = rsync.run(argv, source_root=layout.compose, log=self.log.info, what="staging payload")
        except rsync.RsyncError as exc:
            raise AirflowException(f"{exc}\nRerun the task; the sync converges.") from None
        new = [c for c in result.changes if c.is_new and c.file_type == "f"]
        self.log.info("staged %d new files (%s) into %s; %d files were already there", len(new),
                      rsync.human_bytes(sum(c.size for c in new)), dest,
                      result.stats.files.get("reg", 0) - len(new))
        return {"staging_dir": str(dest), "new_files": len(new), "bytes": result.bytes}


class RefreshRepodataOperator(BaseOperator):
    """Regenerate one staging tree's repodata over all its packages and swap it in safely.

    comps groups, modules and updateinfo are kept; repomd.xml is signed when RELENG_REPO_SIGNING_KEY is
    set. Nothing is published when the metadata did not change.

    :param release: release profile name
    :param repo: build-system repo id
    :param arch: arch (``src`` for a source tree)
    :param kind: ``os``, ``debug`` or ``source``
    :param tree: the staging tree
    :param synced: the same repo as this run synced it from the build system
    :param scratch: an empty work directory for the new metadata
    """

    template_fields = ("release", "repo", "arch", "kind", "tree", "synced", "scratch")
    ui_color = "#fef7e0"

    def __init__(self, *, release: str, repo: str, arch: str, kind: str, tree: str, synced: str, scratch: str,
                 **kwargs):
        super().__init__(**kwargs)
        self.release, self.repo, self.arch, self.kind = release, repo, arch, kind
        self.tree, self.synced, self.scratch = tree, synced, scratch

    def execute(self, context: Context) -> dict:
        profile = load_release(self.release)
        site = site_settings()
        repo = profile.repo(self.repo)
        job = updates.RepodataJob(
            tree=Path(self.tree), synced=Path(self.synced), scratch=Path(self.scratch),
            label=f"{self.repo} {self.arch} {self.kind}", distro=updates.distro_tag(profile),
            comps_required=repo.comps and self.kind == "os", modules_required=repo.modules and self.kind == "os",
            signing_key=site.repo_signing_key, gnupghome=site.gnupghome, workers=min(4, os.cpu_count() or 1))
        try:
            result = updates.regenerate_repodata(job, log=self.log.info)
        except updates.UpdatesError as exc:
            raise AirflowFailException(str(exc)) from None
        except (updates.ToolError, RepodataError, OSError) as exc:
            raise AirflowException(f"regenerating the repodata of {self.tree} failed: {exc}\nStaging still "
                                   "shows its previous, complete metadata; rerun the task.") from None
        out = result.as_dict()
        out.update(repo=self.repo, arch=self.arch, kind=self.kind, added=len(result.added),
                   added_sample=result.added[:ADDED_SHOWN])
        return out


class EmitStagingAssetOperator(BaseOperator):
    """Update the staging Asset (which starts promote_to_production) when the run changed staging.

    The event's extra: ``{"release", "rc", "staging_dir", "source": "general_updates", "repos", "packages_added"}``.
    A run that changed nothing is skipped here, so no promotion is asked for.

    :param summary: prepare_updates' summary
    :param results: update_repodata's results, one per tree
    """

    template_fields = ("summary", "results")

    def __init__(self, *, summary: dict, results: Sequence[dict], **kwargs):
        super().__init__(**kwargs)
        self.summary = summary
        self.results = results

    def execute(self, context: Context) -> dict:
        results = list(self.results or [])
        changed = [r for r in results if r["changed"]]
        added = sum(r["added"] for r in results)
        if not changed:
            raise AirflowSkipException(f"staging {self.summary['staging_dir']} is unchanged ({len(results)} trees, "
                                       "no new packages or metadata); no staging event, no promotion")
        extra = {"release": self.summary["release"], "rc": bool(self.summary["rc"]),
                 "staging_dir": self.summary["staging_dir"], "source": self.dag_id, "repos": self.summary["repos"],
                 "packages_added": added}
        context["outlet_events"][STAGING_ASSET].extra = extra
        self.log.info("staging %s updated: %d of %d trees changed, %d packages added; staging asset event %s",
                      self.summary["staging_dir"], len(changed), len(results), added, extra)
        return extra


class RemoveWorkAreaOperator(BaseOperator):
    """Remove the run's work area, and those earlier failed runs of the release left for inspection: staging
    holds their packages now, and one run at a time means no other run is using them.

    :param summary: prepare_updates' summary
    """

    template_fields = ("summary",)

    def __init__(self, *, summary: dict, **kwargs):
        super().__init__(**kwargs)
        self.summary = summary

    def execute(self, context: Context) -> list[str]:
        layout = _layout(self.summary)
        removed = []
        for area in updates.work_areas(layout.profile, layout.compose_root):
            shutil.rmtree(area, ignore_errors=True)
            if area.exists():
                raise AirflowException(f"{area} could not be removed completely; remove it by hand")
            removed.append(str(area))
            self.log.info("removed %s", area)
        return removed
