"""Operators of ``promote_to_production``: thin wrappers around :mod:`releng.core.promotion`.

Each one reads the site settings, calls one core function, logs what it did
and returns a small dict for XCom. The change report's XCom (record path,
digest, target) is what every later task acts on, so an Asset-triggered run and
a manual one behave the same after the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from releng.assets import STAGING_ASSET
from releng.core import promotion
from releng.core.profile import ProfileError
from releng.core.repoverify import RepoError
from releng.core.settings import settings

REPORT_TASK = "change_report"
APPROVAL_TASK = "approve_promotion"
PHASE_TASKS = {"payload": "promote_payload", "metadata": "promote_metadata", "deletions": "promote_deletions"}
VERIFY_TASK = "verify_production"
FILE_LISTS_TASK = "update_file_lists"
DECISION_KEY = "decision"


def approvers_as_users(approvers: tuple[str, ...]) -> list[dict[str, str]]:
    """HITL ``assigned_users`` for SimpleAuthManager, whose user id is the user name."""
    return [{"id": name, "name": name} for name in approvers]


def _report(context: Context, task_id: str = REPORT_TASK) -> dict:
    report = context["ti"].xcom_pull(task_ids=task_id)
    if not report:
        raise AirflowFailException(f"no change report from task {task_id}; it must succeed before this task runs")
    return report


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
        path = promotion.write_record(target, record)
        self.log.info("promotion record %s (%s)", path, record["digest"])
        for item in record["items"][:200]:
            self.log.info("%s %s", item["code"], item["path"])
        if len(record["items"]) > 200:
            self.log.info("... %d more changes in the record", len(record["items"]) - 200)
        if not dry_run:
            try:
                promotion.check_delete_bound(record)
            except promotion.PromotionError as exc:
                raise AirflowFailException(str(exc)) from None
        return {"record": str(path), "digest": record["digest"], "target": target.as_dict(), "dry_run": dry_run,
                "changes": len(record["items"]), "lists_stale": promotion.lists_stale(target),
                "totals": record["totals"], "delete_bound": record["delete_bound"],
                "subject": promotion.subject(record), "markdown": promotion.markdown(record)}


class PromotionApprovalOperator(ApprovalOperator):
    """Ask the assigned approvers to approve the change report (Approve/Reject; the timeout default rejects).

    Skipped for a dry run and when staging equals production; fails when no
    approver is configured, since an unassigned request could be answered by anyone.

    :param report_task_id: the task whose XCom holds the change report
    """

    def __init__(self, *, report_task_id: str = REPORT_TASK, **kwargs) -> None:
        super().__init__(**kwargs)
        self.report_task_id = report_task_id

    def execute(self, context: Context):
        report = _report(context, self.report_task_id)
        if report["dry_run"]:
            raise AirflowSkipException("dry run: the change report is the result; nothing to approve or promote")
        if not report["changes"] and not report["lists_stale"]:
            raise AirflowSkipException("staging and production are identical; nothing to approve")
        if not self.assigned_users:
            raise AirflowFailException(
                "RELENG_APPROVERS is empty, so nobody is assigned to approve this promotion (an unassigned request "
                "could be answered by any user). Set RELENG_APPROVERS=user1,user2 for the dag-processor, scheduler "
                "and workers, then trigger the promotion again")
        self.log.info("asking %s to approve %s", ", ".join(u["id"] for u in self.assigned_users), report["digest"])
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        # Reject skips the downstream tasks by raising, so the return value never reaches XCom:
        # the decision is pushed first, under its own key, for the phases and the audit record.
        if "error" not in event:
            at = event.get("responded_at")
            context["ti"].xcom_push(key=DECISION_KEY, value={
                "chosen_options": list(event.get("chosen_options") or []),
                "responded_by_user": event.get("responded_by_user"),
                "responded_at": at.isoformat() if hasattr(at, "isoformat") else at,
            })
        return super().execute_complete(context, event)


class PromotePhaseOperator(BaseOperator):
    """Apply one phase of the approved promotion record to production.

    :param phase: ``payload``, ``metadata`` or ``deletions``
    :param report_task_id: the task whose XCom holds the change report
    :param approval_task_id: the approval task; its recorded answer must be Approve
    :param bwlimit_kbps: optional rsync bandwidth limit (KiB/s)
    """

    template_fields = ("phase",)

    def __init__(self, *, phase: str, report_task_id: str = REPORT_TASK, approval_task_id: str = APPROVAL_TASK,
                 bwlimit_kbps: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.phase = phase
        self.report_task_id = report_task_id
        self.approval_task_id = approval_task_id
        self.bwlimit_kbps = bwlimit_kbps

    def execute(self, context: Context) -> dict:
        report = _report(context, self.report_task_id)
        answer = context["ti"].xcom_pull(task_ids=self.approval_task_id, key=DECISION_KEY) or {}
        if answer.get("chosen_options") != [ApprovalOperator.APPROVE]:
            raise AirflowFailException(
                f"no recorded approval for {report['digest']} (task {self.approval_task_id} answered "
                f"{answer.get('chosen_options')!r}); production only changes after an approver chose Approve")
        try:
            record = promotion.load_record(report["record"], report["digest"])
        except promotion.PromotionError as exc:
            raise AirflowFailException(str(exc)) from None
        return promotion.promote_phase(record, self.phase, log=self.log.info, bwlimit_kbps=self.bwlimit_kbps)


class _AfterReportOperator(BaseOperator):
    """A step that acts on the release the change report describes.

    :param report_task_id: the task whose XCom holds the change report
    """

    def __init__(self, *, report_task_id: str = REPORT_TASK, **kwargs) -> None:
        super().__init__(**kwargs)
        self.report_task_id = report_task_id

    def target(self, context: Context) -> promotion.PromotionTarget:
        return promotion.PromotionTarget.from_dict(_report(context, self.report_task_id)["target"])


class VerifyProductionOperator(_AfterReportOperator):
    """Check every repomd.xml of the promoted release: named files exist with their checksums, signatures verify."""

    def execute(self, context: Context) -> dict:
        return promotion.verify_production(self.target(context), settings(), log=self.log.info)


class UpdateFileListsOperator(_AfterReportOperator):
    """Regenerate ``fullfilelist`` and ``fullfiletimelist-<category>`` for the production category."""

    def execute(self, context: Context) -> dict:
        return promotion.update_file_lists(self.target(context), log=self.log.info)


class RecordPromotionOperator(BaseOperator):
    """Append the promotion's audit record (decision, who, when, digest, what was transferred) to the log.

    Meant as the teardown of the change report: it runs whatever happened after the report, so
    rejections, timeouts and promotions that failed half way are recorded too; dry runs and runs that
    never asked are not.

    :param report_task_id: the task whose XCom holds the change report
    :param approval_task_id: the approval task
    """

    def __init__(self, *, report_task_id: str = REPORT_TASK, approval_task_id: str = APPROVAL_TASK,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.report_task_id = report_task_id
        self.approval_task_id = approval_task_id

    def execute(self, context: Context) -> dict:
        ti = context["ti"]
        report = ti.xcom_pull(task_ids=self.report_task_id)
        answer = ti.xcom_pull(task_ids=self.approval_task_id, key=DECISION_KEY)
        if not report or report["dry_run"] or not answer:
            raise AirflowSkipException("no decision was made in this run (dry run, nothing to approve, or the "
                                       "report failed); nothing to record")
        phases = {p: ti.xcom_pull(task_ids=t) for p, t in PHASE_TASKS.items()}
        verification, lists = ti.xcom_pull(task_ids=VERIFY_TASK), ti.xcom_pull(task_ids=FILE_LISTS_TASK)
        decision = (answer.get("chosen_options") or ["?"])[0]
        user = answer.get("responded_by_user")
        done = {**{t: phases[p] for p, t in PHASE_TASKS.items()}, VERIFY_TASK: verification, FILE_LISTS_TASK: lists}
        if decision != ApprovalOperator.APPROVE:
            outcome = "rejected" if user else "timed out (default: Reject)"
        elif all(done.values()):
            outcome = "promoted"
        else:
            outcome = "incomplete: " + ", ".join(t for t, v in done.items() if not v) + " did not finish"
        target = report["target"]
        entry = {
            "run_id": context["run_id"], "dag_id": context["dag"].dag_id, "release": target["release"],
            "rc": target["rc"], "staging_dir": target["staging_dir"], "production_dir": target["production_dir"],
            "record": report["record"], "digest": report["digest"], "decision": decision, "outcome": outcome,
            "decided_by": user, "decided_at": answer.get("responded_at"), "phases": phases,
            "verification": verification, "file_lists": lists, "logged_at": promotion.utc_now(),
        }
        appended = promotion.append_audit(promotion.PromotionTarget.from_dict(target).state, entry)
        self.log.info("audit: %s by %s (%s)%s", outcome, user, report["digest"],
                      "" if appended else "; already in the log")
        return {"outcome": outcome, "decided_by": user, "digest": report["digest"]}
