"""Operators of ``promote_to_production``: thin wrappers around :mod:`releng.core.promotion`.

Each one reads the site settings, calls one core function, logs what it did
and returns a small dict for XCom. XComs are for people and the UI only: any
user with DAG edit rights can write them through the REST API, so every task
after the report acts on the run's record file (its path comes from the run
id) and on the decision the approval task stored from Airflow's own record of
the answer (:mod:`releng.core.promotion.approval`).

The core modules are imported where a task runs, not at module level: every DAG file that builds these
tasks imports this module at parse time (tests/test_dag_parse_imports.py checks it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from releng.assets import STAGING_ASSET
from releng.core import notify
from releng.core.profile import ProfileError
from releng.core.settings import Settings, settings
from releng.notifiers import airflow_url, send
from releng.operators.staging import acquire, give_back, require_lease

if TYPE_CHECKING:
    from releng.core.promotion.target import PromotionTarget

DECISION_KEY = "decision"


def approvers_as_users(approvers: tuple[str, ...]) -> list[dict[str, str]]:
    """HITL ``assigned_users`` for SimpleAuthManager, whose user id is the user name."""
    return [{"id": name, "name": name} for name in approvers]


def _staging_event_extras(context: Context) -> list[Mapping[str, Any]]:
    events = context.get("triggering_asset_events") or {}
    found = list(events.get(STAGING_ASSET, ())) if events else []
    found.sort(key=lambda e: e.timestamp)
    return [dict(e.extra or {}) for e in found]


class PromotionReportOperator(BaseOperator):
    """Compare a release's staging tree with production and write the promotion record.

    The release and rc come from the triggering staging Asset event, else from
    the run's params; a non-dry run whose deletions exceed the bound fails here,
    before anyone is asked to approve.

    :param release: release profile to promote (default: from the Asset event or params)
    :param rc: promote the ``X.Y-RCn`` staging directory (default: from the Asset event or params)
    :param dry_run: only report (default: the ``dry_run`` param)
    :param allow_large_delete: allow deletions above RELENG_PROMOTION_MAX_DELETE (default: the param)
    :param lease_wait: seconds to wait for the staging lease while another run's staging steps hold it

    The report first takes the staging lease for the run (releng.core.staging.lease); record_promotion, the
    run's teardown, gives it back, so staging cannot change between the report and the last phase.
    """

    template_fields: tuple[str, ...] = ("release",)

    def __init__(self, *, release: str | None = None, rc: bool | None = None, dry_run: bool | None = None,
                 allow_large_delete: bool | None = None, lease_wait: float = 3600, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lease_wait = lease_wait
        self.release = release
        self.rc = rc
        self.report_only = dry_run  # BaseOperator.dry_run is a method
        self.allow_large_delete = allow_large_delete

    def execute(self, context: Context) -> dict:
        from releng.core.promotion import change_report
        from releng.core.promotion.base import PromotionError
        from releng.core.repo.repomd import RepoError
        params = context["params"]
        dry_run = bool(params.get("dry_run", False) if self.report_only is None else self.report_only)
        allow = bool(params.get("allow_large_delete", False) if self.allow_large_delete is None
                     else self.allow_large_delete)
        self._refuse_unpromotable(context)
        self._take_staging_lease(context)
        try:
            summary = change_report.change_report(
                settings(), run_id=context["run_id"], dag_id=context["dag"].dag_id, release=self.release,
                rc=self.rc, params=params, event_extras=[] if self.release else _staging_event_extras(context),
                dry_run=dry_run, allow_large_delete=allow, plan=self.report_plan(context), log=self.log.info,
                warn=self.log.warning)
        except (PromotionError, ProfileError, RepoError) as exc:
            give_back(context, self.log, settings().staging_root)  # record_promotion runs only after a report
            raise AirflowFailException(str(exc)) from None
        except BaseException:
            give_back(context, self.log, settings().staging_root)
            raise
        return summary.to_xcom()

    def _refuse_unpromotable(self, context: Context) -> None:
        """A beta or lookahead release is refused before the lease is taken and before any tree is read: failed
        when a person asked for it, skipped (nothing to do) when its own staging event started the run."""
        from releng.core.promotion.base import PromotionError
        from releng.core.promotion.target import NotPromotable, choose_release, promotable_profile
        events = [] if self.release else _staging_event_extras(context)
        try:
            release, _rc, _events = choose_release(self.release, self.rc, context["params"], events)
            promotable_profile(release, settings())
        except NotPromotable as exc:
            if events:
                raise AirflowSkipException(str(exc)) from None
            raise AirflowFailException(str(exc)) from None
        except (PromotionError, ProfileError):
            return  # change_report says what is wrong, with the run's record

    def report_plan(self, context: Context) -> Callable[[PromotionTarget], Mapping] | None:
        """More for the record than the release directory's changes (a point release's plan); None here."""
        return None

    def _take_staging_lease(self, context: Context) -> None:
        """Wait (up to ``lease_wait`` seconds) for the staging lease; the wait is logged once a minute."""
        deadline, next_note = time.monotonic() + self.lease_wait, 0.0
        while True:
            attempt = acquire(context, "promotion: from its change report to its last phase", self.log,
                              settings().staging_root)
            if attempt.acquired:
                self.log.info("staging lease held by this run until record_promotion")
                return
            if time.monotonic() >= deadline:
                raise AirflowFailException(f"staging is leased to {attempt.holder.describe()}; waited "
                                           f"{self.lease_wait:.0f} s. Trigger the promotion again when that run "
                                           "has ended")
            if time.monotonic() >= next_note:
                self.log.info("staging is leased to %s; waiting", attempt.holder.describe())
                next_note = time.monotonic() + 60
            time.sleep(min(5.0, max(0.5, self.lease_wait / 10)))


class PromotionApprovalOperator(ApprovalOperator):
    """Ask the assigned approvers to approve this run's promotion record (Approve/Reject; the timeout rejects).

    The subject and body are rendered from the run's record file, not from an
    XCom. Skipped for a dry run and when staging equals production; fails when
    no approver is configured, since an unassigned request could be answered by
    anyone. When Airflow resumes it with the answer it recorded for the request,
    it refuses an Approve from a user outside RELENG_APPROVERS and stores the
    decision for the phases.
    """

    def execute(self, context: Context):
        from releng.core.promotion import approval, render, vetting
        from releng.core.promotion.base import PromotionError
        from releng.core.promotion.target import state_dir
        try:
            record = approval.approval_request(state_dir(settings()), context["run_id"], str(context["ti"].id))
        except approval.NothingToApprove as exc:
            raise AirflowSkipException(str(exc)) from None
        except PromotionError as exc:
            raise AirflowFailException(str(exc)) from None
        if not self.assigned_users:
            raise AirflowFailException(
                "RELENG_APPROVERS is empty, so nobody is assigned to approve this promotion (an unassigned request "
                "could be answered by any user). Set RELENG_APPROVERS=user1,user2 for the dag-processor, scheduler "
                "and workers, then trigger the promotion again")
        try:
            verdict = vetting.require_cleared(state_dir(settings()), record)
        except PromotionError as exc:
            approval.asked_file(state_dir(settings()), context["run_id"]).unlink(missing_ok=True)
            raise AirflowFailException(f"refused: {exc}") from None
        self.subject = render.subject(record)
        self.body = vetting.approval_body(render.markdown(record, approvers=[u["id"] for u in self.assigned_users]),
                                          verdict)
        self.log.info("asking %s to approve %s", ", ".join(u["id"] for u in self.assigned_users), record["digest"])
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        from releng.core.promotion import approval
        from releng.core.promotion.base import PromotionError
        from releng.core.promotion.target import state_dir
        ti = context["ti"]
        cfg = settings()
        try:
            decision = approval.decide(state_dir(cfg), context["run_id"], event, cfg.approvers,
                                       {"dag_id": context["dag"].dag_id, "task_id": self.task_id,
                                        "ti_id": str(ti.id), "try_number": ti.try_number})
        except approval.PromotionRefused as exc:
            raise AirflowFailException(f"refused: {exc}") from None
        except PromotionError as exc:
            raise AirflowFailException(str(exc)) from None
        self.log.info("Airflow recorded %s by %s at %s for %s", decision["choice"],
                      (decision["decided_by"] or {}).get("id", "nobody (timeout default)"), decision["decided_at"],
                      decision["digest"])
        # For people reading the run in the UI; the phases read the decision file, never this XCom.
        ti.xcom_push(key=DECISION_KEY, value=approval.decision_for_people(decision))
        return super().execute_complete(context, event)


class PlanVettingOperator(BaseOperator):
    """List the vetting checks of the run's report: ``[{"kind", "target"}]``, what ``vet_staging`` maps over.

    The list is also written to the run's plan file, which the checks and the verdict read: a check
    changed through the XComs is refused. Empty when the run asks nobody (dry run, nothing to approve).
    """

    def execute(self, context: Context) -> list[dict]:
        from releng.core.profile import find_profile
        from releng.core.promotion import approval, vetting
        from releng.core.promotion.base import PromotionError
        from releng.core.promotion.target import state_dir
        cfg = settings()
        require_lease(context, context["task"].task_id, cfg.staging_root)
        try:
            state = state_dir(cfg)
            record = approval.run_record(state, context["run_id"])
            checks = vetting.plan_vetting(state, context["run_id"], find_profile(record["release"], cfg.config_dir),
                                          log=self.log.info)
        except (PromotionError, ProfileError) as exc:
            raise AirflowFailException(str(exc)) from None
        return [{"kind": kind, "target": target} for kind in vetting.KINDS for target in checks[kind]]


class VetOperator(BaseOperator):
    """One vetting check of staging (``releng.core.promotion.vetting``); fails when the check fails.

    :param kind: ``isos``, ``repos``, ``repoclosure``, ``install`` or ``checksums``
    :param target: what to check (an ISO or CHECKSUM path in the staging release directory, or an arch); it
        must be in the run's vetting plan file
    """

    template_fields = ("kind", "target")

    def __init__(self, *, kind: str, target: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.target = target

    def execute(self, context: Context) -> dict:
        from releng.core.profile import find_profile
        from releng.core.promotion import approval, vetting
        from releng.core.promotion.base import PromotionError
        from releng.core.promotion.target import state_dir
        cfg = settings()
        require_lease(context, context["task"].task_id, cfg.staging_root)
        state, run_id = state_dir(cfg), context["run_id"]
        try:
            record = approval.run_record(state, run_id)
            result = vetting.vet(state, run_id, self.kind, self.target,
                                 find_profile(record["release"], cfg.config_dir), signing_key=cfg.repo_signing_key,
                                 gnupghome=cfg.gnupghome, key_dir=cfg.gpg_key_dir,
                                 boot_timeout=cfg.vetting_boot_timeout, log=self.log.info)
        except (PromotionError, ProfileError) as exc:
            raise AirflowFailException(str(exc)) from None
        failed = vetting.failed_rows(result["rows"])
        for r in result["rows"]:
            self.log.info("%s %s: %s: %s", r["check"], r["target"], r["result"], r["detail"])
        if failed:
            raise AirflowFailException("vetting check failed: " + "; ".join(
                f"{vetting.describe(r)}: {r['detail']}" for r in failed))
        return {"kind": self.kind, "target": self.target, "rows": len(result["rows"])}


class VettingVerdictOperator(BaseOperator):
    """Read every planned check's result file and decide: passed, failed (the run stops before anyone is
    asked) or overridden (``vetting_override``: asked anyway, recorded in the audit log).

    The failed checks are named in the first line of the log and in the task's error; record_promotion tells
    release engineering. Skipped when the run asks nobody.

    :param override: ask the approvers even when a check failed (default: the ``vetting_override`` param)
    """

    def __init__(self, *, override: bool | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.override = override

    def execute(self, context: Context) -> dict:
        from releng.core.promotion import vetting
        from releng.core.promotion.base import PromotionError
        from releng.core.promotion.target import state_dir
        override = bool(context["params"].get("vetting_override", False) if self.override is None
                        else self.override)
        try:
            verdict = vetting.vetting_verdict(state_dir(settings()), context["run_id"], context["dag"].dag_id,
                                              override=override)
        except PromotionError as exc:
            raise AirflowFailException(str(exc)) from None
        if verdict is None:
            raise AirflowSkipException("nothing will be asked in this run (dry run, nothing to approve, or the "
                                       "report failed); nothing to vet")
        failed = ", ".join(verdict["failed"])
        if verdict["status"] == vetting.FAILED:
            self.log.error("VETTING FAILED: %s", failed)
            for r in vetting.failed_rows(verdict["rows"]):
                self.log.error("  %s %s: %s: %s", r["check"], r["target"], r["result"], r["detail"])
            raise AirflowFailException(f"vetting failed: {failed}. Nobody is asked to approve; fix staging, or "
                                       "trigger the promotion with vetting_override=true to ask anyway")
        if verdict["status"] == "overridden":
            self.log.warning("VETTING FAILED, OVERRIDDEN (vetting_override; in the audit log): %s", failed)
        else:
            self.log.info("vetting passed: %d checks", verdict["checks"])
        return {"status": verdict["status"], "failed": verdict["failed"], "checks": verdict["checks"]}


class _AfterApprovalOperator(BaseOperator):
    """A step that changes or checks production for the record an approver approved in this run."""

    uses_staging = False  # reads or writes staging (the phases read it): the run must hold the staging lease

    def step_name(self) -> str:
        raise NotImplementedError

    def action(self, cfg: Settings) -> Callable[[dict], dict]:
        raise NotImplementedError

    def execute(self, context: Context) -> dict:
        from releng.core.promotion import approval
        from releng.core.promotion.base import PromotionError
        from releng.core.promotion.target import state_dir
        from releng.core.rsync import PHASES
        cfg = settings()
        action = self.action(cfg)
        if self.uses_staging or self.step_name() in PHASES:  # after the approval check, the staging lease
            step = action

            def action(record: dict) -> dict:
                require_lease(context, context["task"].task_id, cfg.staging_root)
                return step(record)
        try:
            return approval.approved_step(state_dir(cfg), context["run_id"], cfg.approvers, self.step_name(),
                                          action, dag_id=context["dag"].dag_id, task_id=context["task"].task_id)
        except approval.PromotionRefused as exc:
            raise AirflowFailException(f"refused: {exc}") from None
        except PromotionError as exc:
            raise AirflowFailException(str(exc)) from None


class PromotePhaseOperator(_AfterApprovalOperator):
    """Apply one phase of the approved promotion record to production.

    :param phase: ``payload``, ``metadata`` or ``deletions``
    :param bwlimit_kbps: optional rsync bandwidth limit (KiB/s)
    """

    template_fields = ("phase",)

    def __init__(self, *, phase: str, bwlimit_kbps: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.phase = phase
        self.bwlimit_kbps = bwlimit_kbps

    def step_name(self) -> str:
        return self.phase

    def action(self, cfg: Settings) -> Callable[[dict], dict]:
        from releng.core.promotion import promote_phases
        return lambda record: promote_phases.promote_phase(record, self.phase, log=self.log.info,
                                                           bwlimit_kbps=self.bwlimit_kbps)


class VerifyProductionOperator(_AfterApprovalOperator):
    """Check every repomd.xml of the promoted release: named files exist with their checksums, signatures verify."""

    def step_name(self) -> str:
        from releng.core.promotion import approval
        return approval.VERIFY_STEP

    def action(self, cfg: Settings) -> Callable[[dict], dict]:
        from releng.core.promotion import verify_production
        from releng.core.promotion.target import PromotionTarget
        return lambda record: verify_production.verify_production(PromotionTarget.from_dict(record), cfg,
                                                                  log=self.log.info)


class UpdateFileListsOperator(_AfterApprovalOperator):
    """Regenerate ``fullfilelist`` and ``fullfiletimelist-<category>`` for the production category."""

    def step_name(self) -> str:
        from releng.core.promotion import approval
        return approval.FILE_LISTS_STEP

    def action(self, cfg: Settings) -> Callable[[dict], dict]:
        from releng.core.promotion import update_file_lists
        from releng.core.promotion.target import PromotionTarget
        return lambda record: update_file_lists.update_file_lists(PromotionTarget.from_dict(record),
                                                                  log=self.log.info)


class RecordPromotionOperator(BaseOperator):
    """Append the promotion's audit record (decision, who, when, digest, what was transferred) to the log.

    Meant as the teardown of the change report: it runs whatever happened after the report, so
    rejections, timeouts, bypass attempts and promotions that failed half way are recorded too; dry
    runs and runs that never asked are not. Every field comes from the gate's files, never from XComs.
    """

    def execute(self, context: Context) -> dict:
        from releng.core.promotion import approval
        from releng.core.promotion.base import PromotionError
        from releng.core.promotion.target import state_dir
        try:
            closed = approval.record_promotion(state_dir(settings()), context["run_id"], context["dag"].dag_id)
        except PromotionError as exc:
            raise AirflowFailException(str(exc)) from None
        finally:
            give_back(context, self.log, settings().staging_root)
        if closed is None:
            raise AirflowSkipException("no approval was asked in this run (dry run, nothing to approve, or the "
                                       "report failed); nothing to record")
        entry, appended = closed
        user = (entry["decided_by"] or {}).get("id")
        self.log.info("audit: %s by %s (%s)%s", entry["outcome"], user or "nobody", entry["digest"],
                      "" if appended else "; already in the log")
        if appended:  # a rerun of the teardown tells nobody twice
            url = notify.run_url(airflow_url(settings()), context["dag"].dag_id, context["run_id"])
            send(notify.promotion_ended(entry, url), context, self.log)
        return {"outcome": entry["outcome"], "decided_by": user, "digest": entry["digest"]}


class MirrorHandoffOperator(BaseOperator):
    """Hand the promoted release to the mirror system: RELENG_MIRROR_HANDOFF_COMMAND and/or _URL, with retries.

    Runs only for this run's approved promotion once every phase, the verification and the file lists finished
    (``releng.core.promotion.mirror_handoff``); skipped, saying so, when no hand-off is configured. The command's
    output goes to the task log. A failure fails this task only: production keeps what the promotion wrote. The
    result is kept as a step file and appears in the run's audit entry.
    """

    def execute(self, context: Context) -> dict:
        from releng.core.promotion import approval, mirror_handoff
        from releng.core.promotion.base import PromotionError
        from releng.core.promotion.target import state_dir
        cfg = settings()
        if not cfg.mirror_handoff_argv and not cfg.mirror_handoff_url:
            raise AirflowSkipException("no mirror hand-off configured (RELENG_MIRROR_HANDOFF_COMMAND and "
                                       "RELENG_MIRROR_HANDOFF_URL are empty); mirrors pick the release up on their "
                                       "own schedule")
        state, run_id = state_dir(cfg), context["run_id"]
        try:
            record, steps = mirror_handoff.promoted_record(state, run_id, cfg.approvers,
                                                           dag_id=context["dag"].dag_id, task_id=self.task_id)
            result = mirror_handoff.mirror_handoff(
                record, steps, command=cfg.mirror_handoff_argv, url=cfg.mirror_handoff_url,
                attempts=cfg.mirror_handoff_attempts, retry_delay=cfg.mirror_handoff_retry_delay, log=self.log)
        except approval.PromotionRefused as exc:
            raise AirflowFailException(f"refused: {exc}") from None
        except PromotionError as exc:
            raise AirflowFailException(str(exc)) from None
        approval.save_step(state, run_id, record["digest"], mirror_handoff.HANDOFF_STEP, result)
        self.log.info("mirror hand-off of %s (%s) done", record["release"], record["production_dir"])
        return result


# --- the task chains promote_to_production and point_release share (built inside a DAG context) ---------------


def vetted_approval(change_report_task: BaseOperator, *, subject: str, site: Settings) -> PromotionApprovalOperator:
    """``plan_vetting >> vet_staging >> vetting_verdict``, then ``approve_promotion``, after ``change_report_task``.

    The approval also hangs on the report directly: a failed report fails it (upstream_failed) whatever the
    verdict does. Returns the approval task.
    """
    from datetime import timedelta

    from airflow.sdk import TriggerRule

    from releng.notifiers import ApprovalWaitingNotifier

    plan_vetting = PlanVettingOperator(task_id="plan_vetting", retries=0)
    # One instance per check (kind and target); a failed check fails its instance, the verdict reads every result.
    vet_staging = VetOperator.partial(task_id="vet_staging", retries=0,
                                      map_index_template="{{ task.kind }} {{ task.target }}"
                                      ).expand_kwargs(plan_vetting.output)
    vetting_verdict = VettingVerdictOperator(task_id="vetting_verdict", trigger_rule=TriggerRule.ALL_DONE,
                                             retries=0)
    approve = PromotionApprovalOperator(
        task_id="approve_promotion",
        subject=subject,
        assigned_users=approvers_as_users(site.approvers),
        response_timeout=timedelta(hours=site.approval_timeout_hours),
        defaults="Reject",
        notifiers=[ApprovalWaitingNotifier()],
        retries=2,
        retry_delay=timedelta(seconds=30),
    )
    change_report_task >> plan_vetting >> vet_staging >> vetting_verdict
    [change_report_task, vetting_verdict] >> approve
    return approve


def promotion_phases() -> tuple[BaseOperator, BaseOperator]:
    """``promote_payload >> promote_metadata >> promote_deletions >> verify_production``: (first, last)."""
    payload = PromotePhaseOperator(task_id="promote_payload", phase="payload", pool="promotion")
    metadata = PromotePhaseOperator(task_id="promote_metadata", phase="metadata", pool="promotion")
    deletions = PromotePhaseOperator(task_id="promote_deletions", phase="deletions", pool="promotion")
    verify = VerifyProductionOperator(task_id="verify_production", pool="promotion")
    payload >> metadata >> deletions >> verify
    return payload, verify


def publish_and_record(change_report_task: BaseOperator, after: BaseOperator) -> None:
    """``after >> update_file_lists >> mirror_handoff >> record_promotion``, the end of every promotion DAG.

    ``mirror_handoff``'s retries are its own (``RELENG_MIRROR_HANDOFF_ATTEMPTS``), so a failure shows at once.
    ``record_promotion`` is a teardown of the change report: it records rejections and half-done promotions too,
    and the run's state still comes from the promotion tasks.
    """
    update_file_lists = UpdateFileListsOperator(task_id="update_file_lists", pool="promotion")
    mirror_handoff = MirrorHandoffOperator(task_id="mirror_handoff", retries=0)
    record_promotion = RecordPromotionOperator(task_id="record_promotion", pool="promotion")
    after >> update_file_lists >> mirror_handoff >> record_promotion.as_teardown(setups=change_report_task)
