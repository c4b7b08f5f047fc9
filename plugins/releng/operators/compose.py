"""The compose's bookkeeping tasks: prepare_compose, plan.<kind>, deploy_extra_files, finalize_compose.

Each reads its settings, calls its step in ``releng.core.compose``, logs and returns the step's result.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from releng.core.settings import settings
from releng.operators.common import SummaryOperator, WorkListOperator, load_release
from releng.operators.staging import require_lease

if TYPE_CHECKING:
    from releng.core.compose import finalize_compose, prepare_compose
    from releng.core.layout import ComposeLayout

log = logging.getLogger(__name__)
PLAN_KINDS = ("reposync", "kickstart", "repoclosure", "lorax", "dvd", "cloud")


def layout_of(summary: Mapping) -> ComposeLayout:
    """The ComposeLayout a prepare_compose summary describes."""
    from releng.core.layout import ComposeLayout
    return ComposeLayout(load_release(summary["release"]), Path(summary["compose_root"]), summary["compose_id"])


class PrepareComposeOperator(BaseOperator):
    """prepare_compose: validate the run's parameters against the release and claim the compose tree.

    Returns the compose summary (``ComposeSummary.to_xcom()``) that later tasks get as ``prepare.output``.
    The compose id is the run's ``run_after`` plus a counter (``<Short>-<X.Y>-<YYYYMMDD.HHMMSS>.<n>``); the
    directory records the run id, so a retry or rerun of this run reuses it and another run started in the
    same second gets the next ``n``.
    """

    ui_color = "#e8f4ea"

    def execute(self, context: Context) -> dict:
        from releng.core.compose import prepare_compose
        from releng.core.layout import compose_timestamp
        params = dict(context["params"])
        profile = load_release(params.get("release", ""))
        dag_run = context["dag_run"]
        try:
            summary, plan = prepare_compose.prepare_compose(profile, params, settings().compose_root,
                                                            compose_timestamp(dag_run.run_after), dag_run.run_id)
        except prepare_compose.ComposeParamsError as exc:
            self.log.error("%s", refusal(exc))  # the log's first error line, above Airflow's traceback
            raise AirflowFailException(refusal(exc)) from None
        self.log.info("compose %s at %s: %d repo syncs, %d closure checks, %d lorax, %d ISOs, %d cloud images; "
                      "previous compose: %s", summary.compose_id, summary.top, len(plan.reposync),
                      len(plan.repoclosure), len(plan.lorax), len(plan.dvd), len(plan.cloud),
                      summary.previous or "none")
        return summary.to_xcom()


def refusal(exc: prepare_compose.ComposeParamsError) -> str:
    """The one-line reason a person reads first in the task's log and the failure line: no traceback is worth
    reading for a refused form, so each problem is a short clause, then what to do."""
    return (f"refused the {exc.release} compose, nothing was started: {'; '.join(exc.problems)}. Trigger "
            "full_compose again with these fixed")


# What reposync_kwargs and repoclosure_kwargs read of the summary. Their work lists have an item per tree (110 for
# el9 on four arches), and each list is one XCom: with the whole summary in every item (its params, the arches
# list) plan.reposync was 67 KB for four arches; with these keys about a third of that.
MAPPED_SUMMARY_KEYS = ("release", "compose_root", "compose_id", "previous", "hashed")


def plan_items(summary: Mapping, kind: str) -> list[dict]:
    """One work list of the compose (``PLAN_KINDS``), each item carrying the summary (``reposync`` and
    ``repoclosure``: only the summary keys their ``.map()`` callables read, ``MAPPED_SUMMARY_KEYS``)."""
    from releng.core.compose import prepare_compose
    from releng.core.compose.prepare_compose import ComposeSummary
    params = ComposeSummary.from_xcom(summary).params
    profile = load_release(summary["release"])
    plan = prepare_compose.plan_compose(profile, params)
    if kind == "kickstart":  # primary arches only: multilib i686 has os and debug trees but no installer tree
        return [{"repo": i["repo"], "arch": i["arch"], "summary": summary}
                for i in plan.reposync if i["kind"] == "os" and i["primary"] and params.full_run and not profile.sig]
    if kind in ("reposync", "repoclosure"):
        summary = {key: summary[key] for key in MAPPED_SUMMARY_KEYS}
    return [{k: v for k, v in item.items() if k != "primary"} | {"summary": summary} for item in getattr(plan, kind)]


def reopen_compose(context: Context, prepare_task_id: str) -> None:
    """Before a task rewrites compose content: a finished compose goes back to STARTED.

    finalize_compose decides the status again; a failure here fails the task before it writes anything.
    """
    from releng.core.compose import status as compose_status
    summary = context["ti"].xcom_pull(task_ids=prepare_task_id)
    if not summary:
        return
    layout = layout_of(summary)
    before = compose_status.reopen(layout)
    if before:
        log.warning("compose %s was %s and is being rewritten: STATUS is STARTED until finalize_compose runs again",
                    layout.compose_id, before)


def reopen_before(prepare: BaseOperator) -> Callable[[Context], None]:
    """The ``pre_execute`` hook of the tasks that rewrite compose content, for the compose ``prepare`` claimed."""
    return functools.partial(reopen_compose, prepare_task_id=prepare.task_id)


class PlanWorkOperator(WorkListOperator):
    """plan.<kind>: one of the compose's work lists for a mapped task (Airflow maps only over return values).

    :param kind: one of ``reposync``, ``kickstart``, ``repoclosure``, ``lorax``, ``dvd``, ``cloud``
    :param summary: prepare_compose's summary (``prepare.output``)
    """

    kinds = PLAN_KINDS

    def work_list(self, summary: Mapping) -> list[dict]:
        return plan_items(summary, self.kind)


# --- .map() callables: one planned item -> one mapped task's kwargs (run on the worker, pure) ------------


def reposync_kwargs(item: dict) -> dict:
    """sync_repos: ``{"repo", "arch", "kind", "summary"}`` -> SyncReposOperator kwargs."""
    from releng.core.layout import ComposeLayout
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


def distribution() -> finalize_compose.Distribution:
    """Torrents and CHECKSUM signing as the site settings say."""
    from releng.core.compose import finalize_compose
    from releng.core.torrents import TorrentSettings
    s = settings()
    return finalize_compose.Distribution(
        TorrentSettings(s.download_url, s.torrent_trackers, s.torrent_piece_size),
        s.repo_signing_key, s.gnupghome)


class FinalizeComposeOperator(SummaryOperator):
    """finalize_compose: STATUS from the run's task states, ISOs and images published with their torrents and
    CHECKSUM files (clear-signed with ``RELENG_REPO_SIGNING_KEY`` when set), metadata written.

    Runs with ``trigger_rule=all_done`` directly downstream of every work task; the rules are
    ``releng.core.compose.finalize_compose``. Refusing (a watched task has not ended) or a DOOMED compose
    fails this task, so staging never sees the compose.

    :param summary: prepare_compose's summary (``prepare.output``)
    :param deliverables: mapped task id -> the plan list it runs over, for the deliverables the profile
        may mark ``failable`` (``{"pull_cloud_images": "cloud", "build_dvd_iso": "dvd"}``)
    :param watched: task ids whose states decide the outcome (default: every task upstream of this one)
    """

    def __init__(self, *, deliverables: dict[str, str] | None = None, watched: Iterable[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.deliverables = dict(deliverables or {})
        self._watched = tuple(watched)

    @property
    def watched(self) -> tuple[str, ...]:
        """The work tasks: the DAG wires finalize directly downstream of each, so no list of ids is kept."""
        return self._watched or tuple(sorted(self.upstream_task_ids))

    def execute(self, context: Context) -> dict:
        from releng.core.compose import finalize_compose
        from releng.core.compose.prepare_compose import ComposeSummary
        from releng.core.staging.signing import SigningError

        if not self.summary:
            # Airflow decides the run's state by its last tasks, so this task fails with the run rather than
            # skip (which would turn the run green); it only points at the cause.
            raise AirflowFailException("no compose to finalize: prepare_compose did not prepare one (it refused the "
                                       "parameters or failed); the reason is in prepare_compose's log")
        summary = ComposeSummary.from_xcom(self.summary)
        layout = layout_of(self.summary)
        run_id = context["dag_run"].run_id
        ti = context["ti"]
        states = ti.get_task_states(dag_id=self.dag_id, run_ids=[run_id], task_ids=list(self.watched)).get(run_id, {})
        try:
            result = finalize_compose.finalize_compose(layout, summary, states, self.watched, self.deliverables,
                                                       self.log, distribution())
        except (finalize_compose.ComposeNotEnded, SigningError) as exc:
            raise AirflowFailException(f"compose {layout.compose_id}: {exc}") from None
        except finalize_compose.ComposeDoomed as exc:
            self._tell(context, layout, run_id, "DOOMED", [str(exc)])
            raise AirflowFailException(str(exc)) from exc.__cause__
        if result.failed_optional:
            self.log.warning("compose %s is FINISHED_INCOMPLETE; optional deliverables failed: %s",
                             layout.compose_id, ", ".join(result.failed_optional_named))
            self._tell(context, layout, run_id, result.status, list(result.failed_optional_named))
        self.log.info("compose %s %s; %s -> %s", layout.compose_id, result.status, layout.latest_link, layout.top.name)
        return result.to_xcom()

    def _tell(self, context: Context, layout: ComposeLayout, run_id: str, status: str, failed: list[str]) -> None:
        """Release engineering hears of a DOOMED or FINISHED_INCOMPLETE compose (never fails this task)."""
        from releng.core import notify
        from releng.notifiers import airflow_url, send

        try:
            url = notify.run_url(airflow_url(settings()), self.dag_id, run_id)
            message = notify.compose_ended(layout.compose_id, status, str(layout.top), failed, url,
                                           layout.profile.name)
        except Exception as exc:
            self.log.warning("compose notification not built: %s: %s", type(exc).__name__, exc)
            return
        send(message, context, self.log)


class SyncToStagingOperator(SummaryOperator):
    """sync_to_staging: a finished compose into its staging release directory, the staging links, the asset.

    ``releng.core.staging.sync_to_staging.stage_compose``: a compose whose STATUS is not FINISHED or
    FINISHED_INCOMPLETE is refused before anything is copied; payload, repodata files, repomd.xml (signed with
    ``RELENG_REPO_SIGNING_KEY`` when set), never deleting (a SIG: then what its compose no longer has is deleted
    from its own directory); the channel's links. The staging asset event's extra names the release,
    rc, staging dir and compose, which ``promote_to_production`` reads. Runs in the ``rsync`` pool.

    :param summary: prepare_compose's summary (``prepare.output``)
    """

    def execute(self, context: Context) -> dict:
        from releng.assets import STAGING_ASSET
        from releng.core.layout import ReleaseTrees
        from releng.core.staging.signing import SigningError
        from releng.core.staging.sync_to_staging import StagingError, stage_compose

        require_lease(context, "sync_to_staging")
        summary = self.require_summary()
        layout = layout_of(summary)
        s = settings()
        trees = ReleaseTrees(layout.profile, s.staging_root, s.production_root)
        try:
            staged = stage_compose(layout, trees, summary["rc"], signing_key=s.repo_signing_key,
                                   gnupghome=s.gnupghome, log=self.log.info)
        except (StagingError, SigningError) as exc:
            raise AirflowFailException(str(exc)) from None
        context["outlet_events"][STAGING_ASSET].extra = staged.event_extra(self.dag_id)
        self.log.info("staged %s into %s; links %s", staged.compose_id, staged.staging_dir, staged.links)
        return staged.to_xcom(self.dag_id)


class DeployExtraFilesOperator(SummaryOperator):
    """deploy_extra_files: the profile's extra files (EULA, LICENSE, GPG keys...) from its git branch.

    ``releng.core.compose.deploy_extra_files``; ``RELENG_EXTRA_FILES_GIT`` names a mirror of the repository.

    :param summary: prepare_compose's summary (``prepare.output``)
    """

    def execute(self, context: Context) -> dict:
        from releng.core.compose.deploy_extra_files import ExtraFilesError, deploy_extra_files
        layout = layout_of(self.require_summary())
        try:
            result = deploy_extra_files(layout, settings().extra_files_git)
        except ExtraFilesError as exc:
            raise AirflowFailException(str(exc)) from None
        if result.source is None:
            self.log.info("%s lists no extra files", layout.profile.name)
        else:
            self.log.info("%d extra files from %s (%s) in %s and %s", result.files, result.source, result.branch,
                          layout.work / "global" / "extra-files", layout.metadata)
        return result.to_xcom()
