"""Operators of ``general_updates``, one per task id, each wrapping one function of :mod:`releng.core.updates`
or :mod:`releng.core.staging` (SyncReposOperator and RepoclosureOperator do the syncing and checking).

Each task gets what it needs from upstream tasks as arguments (the DAG passes ``.output``): prepare_updates'
summary and update_repodata's per-tree results.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from releng.assets import STAGING_ASSET
from releng.core.updates import PLAN_KINDS
from releng.operators.common import WorkListOperator, load_release, site_settings
from releng.operators.staging import require_lease


class PrepareUpdatesOperator(BaseOperator):
    """prepare_updates: check the run's params against the release, check staging and the signing key, lay out
    the work area (named after the run's ``run_after``, so a retry reuses it).

    Returns the run summary (:class:`UpdatesSummary`) every later task reads. Nothing is synced or written to
    staging when a check fails.
    """

    ui_color = "#e8f4ea"

    def execute(self, context: Context) -> dict:
        from releng.core.layout import compose_timestamp
        from releng.core.updates import UpdatesError
        from releng.core.updates.prepare_updates import prepare_updates
        params = dict(context["params"])
        profile = load_release(params.get("release") or "")
        site = site_settings()
        try:
            summary, plan = prepare_updates(profile, params, site, compose_timestamp(context["dag_run"].run_after))
        except UpdatesError as exc:
            raise AirflowFailException(str(exc)) from None
        if site.repo_signing_key:
            self.log.info("repomd.xml will be signed with %s (GNUPGHOME %s)", site.repo_signing_key,
                          site.gnupghome or "~/.gnupg")
        else:
            self.log.warning("RELENG_REPO_SIGNING_KEY is not set: staging repodata will not be signed")
        self.log.info("updates of %s (%s) into %s: %d trees to sync, %d closure checks; work area %s",
                      profile.name, ", ".join(summary.repos), summary.staging_dir, len(plan.trees),
                      len(plan.repoclosure), summary.top)
        if summary.skipped:
            self.log.info("not in staging, so not updated (a compose stages them): %d trees: %s",
                          len(summary.skipped), ", ".join(" ".join(t) for t in summary.skipped))
        return summary.to_xcom()


class PlanOperator(WorkListOperator):
    """plan.<kind>: one work list of the run for a mapped task (Airflow maps only over return values).

    :param kind: ``reposync`` (SyncReposOperator kwargs), ``repoclosure`` (RepoclosureOperator kwargs) or
        ``repodata`` (UpdateRepodataOperator kwargs)
    :param summary: prepare_updates' summary
    """

    kinds = PLAN_KINDS

    def work_list(self, summary: Mapping) -> list[dict]:
        from releng.core.updates.prepare_updates import UpdatesSummary, work_list
        updates = UpdatesSummary.from_xcom(summary)
        return work_list(updates, load_release(updates.release), self.kind)


class SyncToStagingOperator(BaseOperator):
    """sync_to_staging: the synced packages into the staging release directory, keeping what staging has.

    Packages only (no repodata: update_repodata regenerates it), never a deletion: older builds stay
    installable for the life of the point release.

    :param summary: prepare_updates' summary
    """

    template_fields = ("summary",)

    def __init__(self, *, summary: Mapping, **kwargs):
        super().__init__(**kwargs)
        self.summary = summary

    def execute(self, context: Context) -> dict:
        from releng.core.rsync import RsyncError
        from releng.core.staging.sync_to_staging import stage_packages
        from releng.core.updates.prepare_updates import UpdatesSummary
        require_lease(context, "sync_to_staging")
        summary = UpdatesSummary.from_xcom(self.summary)
        layout = summary.layout(load_release(summary.release))
        try:
            staged = stage_packages(layout.compose, summary.staging_dir, log=self.log.info)
        except RsyncError as exc:
            raise AirflowException(f"{exc}\nRerun the task; the sync converges.") from None
        return staged.to_xcom()


class UpdateRepodataOperator(BaseOperator):
    """update_repodata: regenerate one staging tree's repodata over all its packages and swap it in safely.

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
        from releng.core.repo.repomd import RepoError
        from releng.core.run import ToolError
        from releng.core.staging.signing import SigningError
        from releng.core.updates import UpdatesError
        from releng.core.updates.update_repodata import update_repodata
        require_lease(context, "update_repodata")
        profile = load_release(self.release)
        site = site_settings()
        try:
            result = update_repodata(profile, self.repo, self.arch, self.kind, tree=Path(self.tree),
                                     synced=Path(self.synced), scratch=Path(self.scratch),
                                     signing_key=site.repo_signing_key, gnupghome=site.gnupghome,
                                     workers=min(4, os.cpu_count() or 1), log=self.log.info)
        except (UpdatesError, SigningError) as exc:
            raise AirflowFailException(str(exc)) from None
        except (ToolError, RepoError, OSError) as exc:
            raise AirflowException(f"regenerating the repodata of {self.tree} failed: {exc}\nStaging still "
                                   "shows its previous, complete metadata; rerun the task.") from None
        return result.to_xcom()


class EmitStagingAssetOperator(BaseOperator):
    """emit_staging_asset: update the staging Asset (which starts promote_to_production) when the run changed
    staging; a run that changed nothing is skipped here, so no promotion is asked for.

    The event's extra: ``{"release", "rc", "staging_dir", "source": "general_updates", "repos", "packages_added"}``.

    :param summary: prepare_updates' summary
    :param results: update_repodata's results, one per tree
    """

    template_fields = ("summary", "results")

    def __init__(self, *, summary: Mapping, results: Sequence[Mapping], **kwargs):
        super().__init__(**kwargs)
        self.summary = summary
        self.results = results

    def execute(self, context: Context) -> dict:
        from releng.core.updates.emit_staging_asset import staging_event
        from releng.core.updates.prepare_updates import UpdatesSummary
        from releng.core.updates.update_repodata import TreeUpdate
        summary = UpdatesSummary.from_xcom(self.summary)
        results = [TreeUpdate.from_xcom(r) for r in self.results or []]
        extra = staging_event(summary, results, self.dag_id)
        if extra is None:
            raise AirflowSkipException(f"staging {summary.staging_dir} is unchanged ({len(results)} trees, "
                                       "no new packages or metadata); no staging event, no promotion")
        context["outlet_events"][STAGING_ASSET].extra = extra
        self.log.info("staging %s updated: %d of %d trees changed, %d packages added; staging asset event %s",
                      summary.staging_dir, sum(r.changed for r in results), len(results), extra["packages_added"],
                      extra)
        return extra


class RemoveWorkAreaOperator(BaseOperator):
    """remove_work_area: the run's work area, and those earlier failed runs of the release left for inspection.

    :param summary: prepare_updates' summary
    """

    template_fields = ("summary",)

    def __init__(self, *, summary: Mapping, **kwargs):
        super().__init__(**kwargs)
        self.summary = summary

    def execute(self, context: Context) -> list[str]:
        from releng.core.updates.prepare_updates import UpdatesSummary
        from releng.core.updates.remove_work_area import remove_work_areas
        summary = UpdatesSummary.from_xcom(self.summary)
        try:
            return remove_work_areas(load_release(summary.release), summary.compose_root, log=self.log.info)
        except OSError as exc:
            raise AirflowException(str(exc)) from None
