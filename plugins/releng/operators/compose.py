"""Compose bookkeeping operators: prepare_compose (validate, lay out, plan) and finalize_compose."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from releng.core import metadata
from releng.core.checksums import Checksum, parse_checksum_file, write_checksum_file
from releng.core.compose import finalize_compose, prepare_compose
from releng.core.compose import status as compose_status
from releng.core.layout import ComposeLayout, compose_timestamp
from releng.core.modes import make_public_tree
from releng.core.settings import settings
from releng.operators.common import load_release

log = logging.getLogger(__name__)
PLAN_KINDS = ("reposync", "kickstart", "repoclosure", "lorax", "dvd", "cloud")


def layout_of(summary: dict) -> ComposeLayout:
    """The ComposeLayout a prepare_compose summary describes."""
    return ComposeLayout(load_release(summary["release"]), Path(summary["compose_root"]), summary["compose_id"])


class PrepareComposeOperator(BaseOperator):
    """Validate the run's parameters against the release and create the compose tree.

    Returns the compose summary that every later task reads. The compose id is the run's ``run_after``
    plus a counter (``<Short>-<X.Y>-<YYYYMMDD.HHMMSS>.<n>``); the directory records the run id, so a
    retry or rerun of this run reuses it and another run started in the same second gets the next ``n``.
    """

    ui_color = "#e8f4ea"

    def execute(self, context: Context) -> dict:
        params = dict(context["params"])
        profile = load_release(params.get("release", ""))
        try:
            run = prepare_compose.validate_params(profile, params)
        except prepare_compose.ComposeParamsError as exc:
            raise AirflowFailException(str(exc)) from None
        dag_run = context["dag_run"]
        layout = prepare_compose.claim_compose(profile, settings().compose_root, compose_timestamp(dag_run.run_after),
                                       dag_run.run_id)
        previous = prepare_compose.start_compose(layout)
        plan = prepare_compose.plan_compose(profile, run)
        summary = {
            "release": profile.name, "compose_id": layout.compose_id, "compose_root": str(layout.compose_root),
            "top": str(layout.top), "compose_dir": str(layout.compose), "previous": str(previous) if previous else None,
            "rc": run.rc, "hashed": run.hashed, "arches": list(run.arches), "images": list(run.images),
            "full_run": run.full_run, "repoclosure": run.repoclosure,
        }
        self.log.info("compose %s at %s: %d repo syncs, %d closure checks, %d lorax, %d ISOs, %d cloud images; "
                      "previous compose: %s", layout.compose_id, layout.top, len(plan.reposync), len(plan.repoclosure),
                      len(plan.lorax), len(plan.dvd), len(plan.cloud), previous or "none")
        return summary


def plan_items(summary: dict, kind: str) -> list[dict]:
    """One work list of the compose (``PLAN_KINDS``), each item carrying the summary."""
    profile = load_release(summary["release"])
    run = prepare_compose.ComposeParams(tuple(summary["arches"]), summary["rc"], summary["hashed"],
                                        summary["repoclosure"], tuple(summary["images"]), summary["full_run"])
    plan = prepare_compose.plan_compose(profile, run)
    if kind == "kickstart":  # primary arches only: multilib i686 has os and debug trees (empanadas §3)
        return [{"repo": i["repo"], "arch": i["arch"], "summary": summary}
                for i in plan.reposync if i["kind"] == "os" and i["primary"] and run.full_run]
    return [{k: v for k, v in item.items() if k != "primary"} | {"summary": summary} for item in getattr(plan, kind)]


def reopen_compose(context: Context) -> None:
    """``pre_execute`` hook of the tasks that rewrite compose content: a finished compose goes back to STARTED.

    finalize_compose decides the status again; a failure here fails the task before it writes anything.
    """
    summary = context["ti"].xcom_pull(task_ids="prepare_compose")
    if not summary:
        return
    layout = layout_of(summary)
    before = compose_status.reopen(layout)
    if before:
        log.warning("compose %s was %s and is being rewritten: STATUS is STARTED until finalize_compose runs again",
                    layout.compose_id, before)


class PlanWorkOperator(BaseOperator):
    """Return one of the compose's work lists for a mapped task (Airflow maps only over return values).

    :param kind: one of ``reposync``, ``kickstart``, ``repoclosure``, ``lorax``, ``dvd``, ``cloud``
    """

    ui_color = "#f4f4f4"

    def __init__(self, *, kind: str, **kwargs):
        super().__init__(**kwargs)
        if kind not in PLAN_KINDS:
            raise ValueError(f"unknown work list {kind!r}; one of {', '.join(PLAN_KINDS)}")
        self.kind = kind

    def execute(self, context: Context) -> list[dict]:
        items = plan_items(context["ti"].xcom_pull(task_ids="prepare_compose"), self.kind)
        self.log.info("%d %s items", len(items), self.kind)
        return items


# --- .map() callables: one planned item -> one mapped task's kwargs (run on the worker, pure) ------------


def reposync_kwargs(item: dict) -> dict:
    """sync_repos: ``{"repo", "arch", "kind", "summary"}`` -> SyncReposOperator kwargs."""
    summary = item["summary"]
    layout = layout_of(summary)
    repo, arch, kind = item["repo"], item["arch"], item["kind"]
    previous = None
    if summary.get("previous"):
        previous = str(ComposeLayout(layout.profile, layout.compose_root, Path(summary["previous"]).name)
                       .repo_tree(repo, arch, kind))
    return {"release": summary["release"], "repo": repo, "arch": arch, "kind": kind,
            "dest": str(layout.repo_tree(repo, arch, kind)),
            "work_dir": str(layout.work / "dnf" / f"{repo}-{arch}-{kind}"),
            "hashed": bool(summary["hashed"]), "previous": previous}


def repoclosure_kwargs(item: dict) -> dict:
    """repoclosure: ``{"repo", "arch", "summary"}`` -> RepoclosureOperator kwargs."""
    summary = item["summary"]
    layout = layout_of(summary)
    return {"release": summary["release"], "repo": item["repo"], "arch": item["arch"],
            "compose_dir": str(layout.compose), "work_dir": str(layout.work / "repoclosure")}


def _link_tree(src: Path, dest: Path) -> int:
    """Hard-link files (and copy symlinks) from src into dest; existing identical entries are kept."""
    count = 0
    for root, _dirs, files in os.walk(src):
        target_dir = dest / Path(root).relative_to(src)
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in files:
            s, d = Path(root) / name, target_dir / name
            if s.is_symlink():
                if not d.is_symlink() or os.readlink(d) != os.readlink(s):
                    d.unlink(missing_ok=True)
                    d.symlink_to(os.readlink(s))
            elif not d.exists() or not os.path.samefile(s, d):
                d.unlink(missing_ok=True)
                os.link(s, d)
            count += 1
    return count


def _checksum_entries(directory: Path) -> list[Checksum]:
    """The per-file ``.CHECKSUM`` entries of a directory, reused (never re-hash a multi-GB ISO)."""
    entries = []
    for sidecar in sorted(directory.glob("*.CHECKSUM")):
        lines = sidecar.read_text().splitlines()
        sizes = {line[2:].split(":", 1)[0]: int(line.rsplit(":", 1)[1].split()[0])
                 for line in lines if line.startswith("# ") and line.endswith(" bytes")}
        for algo, name, hexdigest in parse_checksum_file(sidecar.read_text()):
            entries.append(Checksum(name, sizes.get(name, 0), algo, hexdigest))
    return entries


class FinalizeComposeOperator(BaseOperator):
    """Decide the compose's STATUS from the run's task states, publish ISOs and images, write metadata.

    Runs with ``trigger_rule=all_done`` directly downstream of every work task. While any watched task
    has not ended (running, queued, up for retry, not started...) it refuses: it fails and leaves STATUS
    as it is. A failed required task writes DOOMED and fails this task (so staging never sees the
    compose); failed tasks listed in ``failable`` make it FINISHED_INCOMPLETE. The latest link moves
    only for a finished compose.

    :param deliverables: mapped task id -> the plan list it runs over, for the deliverables the profile
        may mark ``failable`` (``{"pull_cloud_images": "cloud", "build_dvd_iso": "dvd"}``)
    :param watched: task ids whose states decide the outcome (the compose's work tasks)
    """

    template_fields = ()

    def __init__(self, *, deliverables: dict[str, str] | None = None, watched: Iterable[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.deliverables = dict(deliverables or {})
        self.watched = tuple(watched)

    def execute(self, context: Context) -> dict:
        ti = context["ti"]
        summary = ti.xcom_pull(task_ids="prepare_compose")
        if not summary:
            raise AirflowFailException("prepare_compose left no summary; the compose was never created")
        layout = layout_of(summary)
        run_id = context["dag_run"].run_id
        states = ti.get_task_states(dag_id=self.dag_id, run_ids=[run_id], task_ids=list(self.watched)).get(run_id, {})
        plan = prepare_compose.plan_compose(layout.profile, prepare_compose.ComposeParams(
            tuple(summary["arches"]), summary["rc"], summary["hashed"], summary["repoclosure"],
            tuple(summary["images"]), summary["full_run"]))
        failable = finalize_compose.failable_keys(layout.profile, plan, self.deliverables)
        # a watched task without any instance in this run has not started either
        states = {**dict.fromkeys(finalize_compose.missing_tasks(states, self.watched)), **states}
        try:
            outcome = finalize_compose.compose_outcome(states, failable, self.watched)
        except finalize_compose.ComposeNotEnded as exc:
            raise AirflowFailException(f"compose {layout.compose_id}: {exc}") from None
        if outcome.status == "DOOMED":
            compose_status.write_status(layout, "DOOMED")
            raise AirflowFailException(
                f"compose {layout.compose_id} is DOOMED; failed: {', '.join(outcome.failed_required)}. "
                f"The latest link still points at the previous compose. Fix the cause and trigger a new compose."
            )
        compose_status.reopen(layout)  # a rerun rewrites checksums and metadata: not FINISHED while it does
        try:
            records = self._publish(layout, summary["arches"], summary["rc"])
            self._write_metadata(layout, summary, records)
        except Exception as exc:
            compose_status.write_status(layout, "DOOMED")  # never leave a compose STARTED after its last task failed
            raise AirflowFailException(f"compose {layout.compose_id} is DOOMED: finalizing failed: {exc}") from exc
        compose_status.write_status(layout, outcome.status)
        finalize_compose.move_latest_link(layout)
        if outcome.failed_optional:
            self.log.warning("compose %s is FINISHED_INCOMPLETE; optional deliverables failed: %s",
                             layout.compose_id, ", ".join(outcome.failed_optional))
        self.log.info("compose %s %s; %s -> %s", layout.compose_id, outcome.status, layout.latest_link, layout.top.name)
        return {"compose_id": layout.compose_id, "status": outcome.status, "top": str(layout.top),
                "failed_optional": list(outcome.failed_optional), "images": len(records)}

    def _publish(self, layout: ComposeLayout, arches: list[str], rc: bool) -> list[metadata.ImageRecord]:
        """work/isos and work/images -> compose/ (hard links), per-arch CHECKSUM, images.json records."""
        records: list[metadata.ImageRecord] = []
        for arch in arches:
            for work, published, kind in ((layout.work_isos(arch), layout.iso_dir(arch), "iso"),
                                          (layout.work_images(arch), layout.images_dir(arch), "image")):
                if not work.is_dir():
                    continue
                linked = _link_tree(work, published)
                entries = [e for e in _checksum_entries(published) if e.name != "CHECKSUM"]
                write_checksum_file(published / "CHECKSUM", entries)
                self.log.info("published %d files into %s (%d checksum entries)", linked, published, len(entries))
                records += self._records(layout, published, arch, kind, rc)
        return records

    def _records(self, layout: ComposeLayout, directory: Path, arch: str, kind: str,
                 rc: bool) -> list[metadata.ImageRecord]:
        out = []
        for path in sorted(directory.iterdir()):
            if path.is_symlink() or not path.is_file() or path.suffix in (".CHECKSUM", ".manifest") \
                    or path.name in ("CHECKSUM", "README"):
                continue
            st = path.stat()
            rel = str(path.relative_to(layout.compose))
            sha = metadata.recorded_sha256(path)
            if kind == "iso":
                image_name = path.name.rsplit("-", 1)[1].removesuffix(".iso")
                variant = (layout.profile.iso_images[image_name].variant if image_name in layout.profile.iso_images
                           else layout.profile.lorax.variant)
                out.append(metadata.ImageRecord(
                    rel, arch, variant, "boot" if image_name == "boot" else "dvd", "iso", st.st_size,
                    int(st.st_mtime), sha, volume_id=layout.volid(arch, rc), bootable=True,
                    implant_md5=metadata.implanted_md5(path), subvariant=variant))
            else:
                image_type, variant = self._cloud_kind(layout, path.name)
                fmt = layout.profile.cloud_images[image_type].format
                ptype, pformat = metadata.cloud_image_type(fmt, variant)
                out.append(metadata.ImageRecord(rel, arch, "BaseOS", ptype, pformat, st.st_size, int(st.st_mtime),
                                                sha, subvariant=f"{image_type}-{variant}" if variant else image_type))
        return out

    @staticmethod
    def _cloud_kind(layout: ComposeLayout, filename: str) -> tuple[str, str | None]:
        prefix = f"{layout.profile.shortname}-{layout.profile.major}-"
        rest = filename.removeprefix(prefix)
        for image_type, image in layout.profile.cloud_images.items():
            for variant in image.variants or (None,):
                stem = f"{image_type}-{variant}-" if variant else f"{image_type}-"
                if rest.startswith(stem):
                    return image_type, variant
        raise AirflowFailException(f"{filename} in images/ matches no cloud image of {layout.profile.name}")

    def _write_metadata(self, layout: ComposeLayout, summary: dict, records: list[metadata.ImageRecord]) -> None:
        date = layout.compose_id.rsplit("-", 1)[1].split(".")[0]
        ci = metadata.compose_info(layout, summary["arches"], date, summary["rc"],
                                   metadata.iso_variants(layout, summary["images"]),
                                   has_images=any(r.path.startswith("images/") for r in records))
        metadata.dump(ci, layout.metadata / "composeinfo.json")
        metadata.dump(metadata.images_manifest(layout, records, date), layout.metadata / "images.json")
        rpms = list(self._rpm_records(layout, summary))
        metadata.dump(metadata.rpms_manifest(layout, rpms, date), layout.metadata / "rpms.json")
        self.log.info("metadata: %d variants, %d images, %d packages in %s", len(ci.variants.variants),
                      len(records), len(rpms), layout.metadata)

    def _trees(self, layout: ComposeLayout, summary: dict):
        """(repo, arch, kind, tree) of every repo tree this compose made."""
        profile = layout.profile
        kinds = ("os", "kickstart", "debug") if summary["full_run"] else ("os",)
        for repo in profile.repos:
            for arch in profile.repo_arches(repo.id, summary["arches"]):
                for kind in kinds:
                    tree = layout.repo_tree(repo.id, arch, kind)
                    if tree.is_dir():
                        yield repo, arch, kind, tree
            source = layout.repo_tree(repo.id, "src", "source")
            if summary["full_run"] and source.is_dir():
                yield repo, "src", "source", source

    def _rpm_records(self, layout: ComposeLayout, summary: dict):
        """rpms.json entries from each tree's repodata, with the key id each package is really signed with;
        also the basic .treeinfo/.discinfo/media.repo of every plain repo tree."""
        from releng.core.repodata import iter_packages
        from releng.core.treeinfo import write_repo_treeinfo

        timestamp = layout.timestamp
        for repo, arch, kind, tree in self._trees(layout, summary):
            write_repo_treeinfo(tree, layout.profile, arch, repo.dir, timestamp)
            if kind == "kickstart":
                continue  # the same packages as os; rpms.json lists each package once per variant and arch
            packages = list(iter_packages(tree))
            keys = metadata.signature_keys([tree / p.href for p in packages])
            category = {"os": "binary", "debug": "debug", "source": "source"}[kind]
            # productmd lists source packages under each binary arch of the variant
            arches = layout.profile.repo_arches(repo.id, summary["arches"]) if kind == "source" else (arch,)
            for p in packages:
                path = str((tree / p.href).relative_to(layout.compose))
                srpm = None if kind == "source" else metadata.srpm_nevra(p.sourcerpm, p.epoch)
                for record_arch in arches:
                    yield metadata.RpmRecord(repo.dir, record_arch, p.nevra, path, keys[tree / p.href], category, srpm)


class SyncToStagingOperator(BaseOperator):
    """rsync a finished compose into its staging release directory, point the staging links, emit the asset.

    A compose whose STATUS is not FINISHED or FINISHED_INCOMPLETE (STARTED again because a task is
    rewriting it, or DOOMED) is refused before anything is copied.

    Steps (``releng.core.staging``): payload, repodata files, repomd.xml; nothing is deleted, because
    updates published into the same release directory must stay. With ``RELENG_REPO_SIGNING_KEY`` set,
    each staged repomd.xml is signed with that key instead of keeping the build system's signature.
    The staging asset event's extra names the release, rc, staging dir and compose, which
    ``promote_to_production`` reads. Runs in the ``rsync`` pool.
    """

    def execute(self, context: Context) -> dict:
        from releng.assets import STAGING_ASSET
        from releng.core import staging
        from releng.core.layout import ReleaseTrees
        from releng.core.updates import UpdatesError

        summary = context["ti"].xcom_pull(task_ids="prepare_compose")
        layout = layout_of(summary)
        status = compose_status.read_status(layout)
        if status not in compose_status.FINISHED_STATUSES:
            raise AirflowFailException(f"compose {layout.compose_id} STATUS is {status or 'missing'}, not FINISHED: "
                                       f"only a finalized compose is staged; let finalize_compose run (clear it) "
                                       f"and then this task")
        s = settings()
        trees = ReleaseTrees(layout.profile, s.staging_root, s.production_root)
        dest = trees.staging_dir(summary["rc"])
        try:
            totals = staging.sync_compose(layout.compose, dest, signing_key=s.repo_signing_key,
                                          gnupghome=s.gnupghome, log=self.log.info)
        except UpdatesError as exc:
            raise AirflowFailException(str(exc)) from None
        links = staging.point_links(trees, summary["rc"])
        extra = {"release": layout.profile.name, "rc": bool(summary["rc"]), "staging_dir": str(dest),
                 "source": self.dag_id, "compose_id": layout.compose_id}
        context["outlet_events"][STAGING_ASSET].extra = extra
        self.log.info("staged %s into %s; links %s", layout.compose_id, dest, links)
        return {**extra, "changes": totals, "links": links}


class DeployExtraFilesOperator(BaseOperator):
    """Fetch the profile's extra files (EULA, LICENSE, GPG keys...) from its git repository and branch.

    Every listed file must exist; they land in ``work/global/extra-files`` (grafted onto the DVDs) and
    ``compose/metadata``, each directory replaced as a whole. ``RELENG_EXTRA_FILES_GIT`` names a mirror
    of the repository. Empanadas only warned when the clone failed, so DVDs went out without EULA.
    """

    def execute(self, context: Context) -> dict:
        import shutil
        import subprocess
        import tempfile

        summary = context["ti"].xcom_pull(task_ids="prepare_compose")
        layout = layout_of(summary)
        extra = layout.profile.extra_files
        if extra is None:
            self.log.info("%s lists no extra files", layout.profile.name)
            return {"files": 0}
        url = settings().extra_files_git or extra.git_repo
        dest = layout.work / "global" / "extra-files"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".extra-files-", dir=dest.parent) as tmp:
            clone = Path(tmp) / "clone"
            result = subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", extra.branch, "--", url,
                                     str(clone)], capture_output=True, text=True, env={**os.environ,
                                                                                       "GIT_TERMINAL_PROMPT": "0"})
            if result.returncode != 0:
                raise RuntimeError(f"git clone of {url} (branch {extra.branch}) failed: {result.stderr.strip()}; "
                                   "check extra_files in the profile or RELENG_EXTRA_FILES_GIT")
            missing = [rel for rel in extra.files if not (clone / rel).is_file()]
            if missing:
                raise AirflowFailException(f"{url} branch {extra.branch} lacks {', '.join(missing)} "
                                           f"(listed under extra_files in {layout.profile.path})")
            staged = Path(tmp) / "files"
            staged.mkdir()
            for rel in extra.files:
                shutil.copyfile(clone / rel, staged / Path(rel).name)
            make_public_tree(staged)  # TemporaryDirectory and the umask would leave them private
            metadata_copy = Path(tmp) / "metadata"
            shutil.copytree(staged, metadata_copy)
            old = Path(tmp) / "old"
            if dest.exists():
                dest.rename(old)
            staged.rename(dest)
            for path in metadata_copy.iterdir():
                os.replace(path, layout.metadata / path.name)
        self.log.info("%d extra files from %s (%s) in %s and %s", len(extra.files), url, extra.branch, dest,
                      layout.metadata)
        return {"files": len(extra.files), "source": url, "branch": extra.branch}
