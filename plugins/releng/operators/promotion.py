"""Operators of ``promote_to_production``: thin wrappers around :mod:`releng.core.promotion`.

Each one reads the site settings, calls one core function, logs what it did
and returns a small dict for XCom. XComs are for people and the UI only: any
user with DAG edit rights can write them through the REST API, so every task
after the report acts on the run's record file (its path comes from the run
id) and on the decision the approval task stored from Airflow's own record of
the answer (:mod:`releng.core.approval`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from releng.assets import STAGING_ASSET
from releng.core import approval, promotion
from releng.core.profile import ProfileError
from releng.core.repoverify import RepoError
from releng.core.settings import Settings, settings

DECISION_KEY = "decision"


def _state(cfg: Settings) -> promotion.StateDir:
    return promotion.StateDir(Path(cfg.production_root) / promotion.STATE_DIR)


def _refuse(context: Context, state: promotion.StateDir, exc: approval.PromotionRefused) -> AirflowFailException:
    """Log a refused production step in the audit log; returns the task failure to raise."""
    run_id = context["run_id"]
    try:
        record: Mapping | None = approval.run_record(state, run_id)
    except promotion.PromotionError:
        record = None
    promotion.append_audit(state, approval.refusal_entry(record, run_id, context["dag"].dag_id,
                                                         context["task"].task_id, str(exc)))
    return AirflowFailException(f"refused: {exc}")


def _approved_record(context: Context, cfg: Settings) -> dict:
    state = _state(cfg)
    try:
        return approval.approved_record(state, context["run_id"], cfg.approvers)
    except approval.PromotionRefused as exc:
        raise _refuse(context, state, exc) from None
    except promotion.PromotionError as exc:
        raise AirflowFailException(str(exc)) from None


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
    """

    template_fields = ("release",)

    def __init__(self, *, release: str | None = None, rc: bool | None = None, dry_run: bool | None = None,
                 allow_large_delete: bool | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.release = release
        self.rc = rc
        self.dry_run = dry_run
        self.allow_large_delete = allow_large_delete

    def execute(self, context: Context) -> dict:
        params = context["params"]
        dry_run = bool(params.get("dry_run", False) if self.dry_run is None else self.dry_run)
        allow = bool(params.get("allow_large_delete", False) if self.allow_large_delete is None
                     else self.allow_large_delete)
        cfg = settings()
        try:
            if self.release:
                release, rc, extras = self.release, bool(self.rc), []
            else:
                extras = _staging_event_extras(context)
                release, rc = promotion.release_from_run(params, extras)
            target = promotion.resolve_target(release, rc, cfg)
            promotion.check_event_staging_dir(target, extras)
        except (promotion.PromotionError, ProfileError) as exc:
            raise AirflowFailException(str(exc)) from None
        self.log.info("promoting %s: %s -> %s%s", release, target.staging_dir, target.production_dir,
                      " (dry run)" if dry_run else "")
        try:
            record = promotion.make_report(target, run_id=context["run_id"], dry_run=dry_run,
                                           allow_large_delete=allow, max_delete=cfg.promotion_max_delete,
                                           signing_key=cfg.repo_signing_key, gnupghome=cfg.gnupghome,
                                           log=self.log.info)
        except (promotion.PromotionError, RepoError) as exc:
            raise AirflowFailException(str(exc)) from None
        state = _state(cfg)
        for entry in approval.close_abandoned(state, context["run_id"], context["dag"].dag_id):
            self.log.warning("audit: run %s %s", entry["run_id"], entry["outcome"])
        approval.revoke(state, context["run_id"])
        path = promotion.write_record(target, record)
        self.log.info("promotion record %s (%s)", path, record["digest"])
        for item in record["items"][:200]:
            self.log.info("%s %s", item["code"], item["path"])
        if len(record["items"]) > 200:
            self.log.info("... %d more changes in the record", len(record["items"]) - 200)
        stale = promotion.lists_stale(target)
        if not dry_run:
            try:
                promotion.check_delete_bound(record)
            except promotion.PromotionError as exc:
                raise AirflowFailException(str(exc)) from None
            if approval.needs_approval(record, stale):
                approval.open_run(state, record)
        return {"record": str(path), "digest": record["digest"], "target": target.as_dict(), "dry_run": dry_run,
                "changes": len(record["items"]), "lists_stale": stale,
                "totals": record["totals"], "delete_bound": record["delete_bound"],
                "subject": promotion.subject(record), "markdown": promotion.markdown(record)}


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
        cfg = settings()
        state = _state(cfg)
        approval.revoke(state, context["run_id"])  # asking again (a cleared task) withdraws an earlier answer
        try:
            record = approval.run_record(state, context["run_id"])
        except promotion.PromotionError as exc:
            raise AirflowFailException(str(exc)) from None
        if record["dry_run"]:
            raise AirflowSkipException("dry run: the change report is the result; nothing to approve or promote")
        if not approval.pending_file(state, context["run_id"]).exists():
            raise AirflowSkipException("staging and production are identical; nothing to approve")
        if not self.assigned_users:
            raise AirflowFailException(
                "RELENG_APPROVERS is empty, so nobody is assigned to approve this promotion (an unassigned request "
                "could be answered by any user). Set RELENG_APPROVERS=user1,user2 for the dag-processor, scheduler "
                "and workers, then trigger the promotion again")
        self.subject = promotion.subject(record)
        self.body = promotion.markdown(record)
        self.log.info("asking %s to approve %s", ", ".join(u["id"] for u in self.assigned_users), record["digest"])
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        # ``event`` is Airflow's own record of the answer: the API server (or the scheduler's timeout
        # sweep) builds it from the request's hitl_detail row and resumes the task with it through the
        # execution API; no REST route can write it, unlike XComs.
        ti = context["ti"]
        cfg = settings()
        state = _state(cfg)
        try:
            record = approval.run_record(state, context["run_id"])
            if "error" in event:
                raise approval.PromotionRefused(f"the approval request ended without an answer ({event.get('error')})"
                                                "; nothing was promoted. Trigger the promotion again")
            at = event.get("responded_at")
            decision = approval.record_decision(
                state, record, chosen_options=event.get("chosen_options"), responded_by=event.get("responded_by_user"),
                responded_at=at.isoformat() if hasattr(at, "isoformat") else at, response_received=True,
                approvers=cfg.approvers,
                task={"dag_id": context["dag"].dag_id, "task_id": self.task_id, "ti_id": str(ti.id),
                      "try_number": ti.try_number})
        except approval.PromotionRefused as exc:
            raise _refuse(context, state, exc) from None
        except promotion.PromotionError as exc:
            raise AirflowFailException(str(exc)) from None
        self.log.info("Airflow recorded %s by %s at %s for %s", decision["choice"],
                      (decision["decided_by"] or {}).get("id", "nobody (timeout default)"), decision["decided_at"],
                      decision["digest"])
        # For people reading the run in the UI; the phases read the decision file, never this XCom.
        ti.xcom_push(key=DECISION_KEY, value={"chosen_options": [decision["choice"]],
                                              "responded_by_user": decision["decided_by"],
                                              "responded_at": decision["decided_at"]})
        return super().execute_complete(context, event)


class _AfterApprovalOperator(BaseOperator):
    """A step that changes or checks production for the record an approver approved in this run."""

    def step_name(self) -> str:
        raise NotImplementedError

    def run_step(self, record: dict, cfg: Settings) -> dict:
        raise NotImplementedError

    def execute(self, context: Context) -> dict:
        cfg = settings()
        record = _approved_record(context, cfg)
        try:
            result = self.run_step(record, cfg)
        except promotion.PromotionError as exc:
            raise AirflowFailException(str(exc)) from None
        approval.save_step(_state(cfg), context["run_id"], record["digest"], self.step_name(), result)
        return result


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

    def run_step(self, record: dict, cfg: Settings) -> dict:
        return promotion.promote_phase(record, self.phase, log=self.log.info, bwlimit_kbps=self.bwlimit_kbps)


class VerifyProductionOperator(_AfterApprovalOperator):
    """Check every repomd.xml of the promoted release: named files exist with their checksums, signatures verify."""

    def step_name(self) -> str:
        return "verify_production"

    def run_step(self, record: dict, cfg: Settings) -> dict:
        return promotion.verify_production(promotion.PromotionTarget.from_dict(record), cfg, log=self.log.info)


class UpdateFileListsOperator(_AfterApprovalOperator):
    """Regenerate ``fullfilelist`` and ``fullfiletimelist-<category>`` for the production category."""

    def step_name(self) -> str:
        return "update_file_lists"

    def run_step(self, record: dict, cfg: Settings) -> dict:
        return promotion.update_file_lists(promotion.PromotionTarget.from_dict(record), log=self.log.info)


class RecordPromotionOperator(BaseOperator):
    """Append the promotion's audit record (decision, who, when, digest, what was transferred) to the log.

    Meant as the teardown of the change report: it runs whatever happened after the report, so
    rejections, timeouts, bypass attempts and promotions that failed half way are recorded too; dry
    runs and runs that never asked are not. Every field comes from the gate's files, never from XComs.
    """

    def execute(self, context: Context) -> dict:
        cfg = settings()
        state = _state(cfg)
        run_id = context["run_id"]
        if not approval.pending_file(state, run_id).exists() and approval.load_decision(state, run_id) is None:
            raise AirflowSkipException("no approval was asked in this run (dry run, nothing to approve, or the "
                                       "report failed); nothing to record")
        try:
            record = approval.run_record(state, run_id)
        except promotion.PromotionError as exc:
            raise AirflowFailException(str(exc)) from None
        entry, appended = approval.close_run(state, record, context["dag"].dag_id)
        user = (entry["decided_by"] or {}).get("id")
        self.log.info("audit: %s by %s (%s)%s", entry["outcome"], user or "nobody", record["digest"],
                      "" if appended else "; already in the log")
        return {"outcome": entry["outcome"], "decided_by": user, "digest": record["digest"]}
