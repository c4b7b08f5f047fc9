"""The promotion's approval gate: what production phases may act on, kept where REST users cannot write.

Airflow's REST API lets any user with DAG edit rights write XComs and set task
states, so nothing a promotion phase acts on comes from an XCom. Instead:

* the change report writes the run's record to ``<state>/promotions/<run>.json``
  (path derived from the run id) and a *pending* marker;
* the approval task, when Airflow resumes it with the answer Airflow itself
  recorded for its request (built from the request's ``hitl_detail`` row and
  handed over by the execution API, which no REST route writes), checks the
  user and writes a *decision* file: choice, user, time, record digest;
* every phase loads the decision for its run id, refuses unless it is Approve
  by a user in ``RELENG_APPROVERS`` for this run's record, and records what it
  did in a *step result* file;
* the audit teardown builds its entry from those files only, and a later
  change report records runs that ended without one (``abandoned``).

Refusals are audit entries too, so a bypass attempt is visible in the log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from releng.core import fs
from releng.core.promotion import vetting_files
from releng.core.promotion.audit import append_audit
from releng.core.promotion.base import PromotionError, slug, utc_now
from releng.core.promotion.record import load_record, record_digest
from releng.core.promotion.target import StateDir

APPROVE = "Approve"
REJECT = "Reject"
VERIFY_STEP = "verify_production"
FILE_LISTS_STEP = "update_file_lists"
STEPS = ("payload", "metadata", "deletions", VERIFY_STEP, FILE_LISTS_STEP)
# Steps a record may add (``extra_steps``): a point release switches links and vaults the previous release.
EXTRA_STEPS = ("switch_links", "vault_release")


def steps_of(record: Mapping) -> tuple[str, ...]:
    """Every step an approved record's promotion must finish: :data:`STEPS` and the record's extra steps."""
    extra = tuple(record.get("extra_steps", ()))
    unknown = [s for s in extra if s not in EXTRA_STEPS]
    if unknown:
        raise PromotionError(f"the promotion record names unknown steps {unknown}; it is damaged: run again")
    return STEPS + extra


class PromotionRefused(PromotionError):
    """A production step was asked to run without a valid recorded approval; nothing was changed."""


def _run_dir(state: StateDir, kind: str) -> Path:
    return state.root / kind


def decision_file(state: StateDir, run_id: str) -> Path:
    return _run_dir(state, "decisions") / f"{slug(run_id)}.json"


def asked_file(state: StateDir, run_id: str) -> Path:
    return _run_dir(state, "asked") / f"{slug(run_id)}.json"


def pending_file(state: StateDir, run_id: str) -> Path:
    return _run_dir(state, "pending") / f"{slug(run_id)}.json"


def step_file(state: StateDir, run_id: str, step: str) -> Path:
    return _run_dir(state, "steps") / f"{slug(run_id)}.{step}.json"


def _write_json(path: Path, data: Mapping) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fs.atomic_write(path, json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False, default=str),
                    errors="surrogateescape")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PromotionError(f"cannot read {path} ({exc}); it is promotion state: run the promotion again") from None


# --- the run's record --------------------------------------------------------------------------


def run_record(state: StateDir, run_id: str) -> dict:
    """This run's promotion record, from the path its run id gives (never a path taken from an XCom)."""
    path = state.record_file(run_id)
    try:
        record = json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
    except FileNotFoundError:
        raise PromotionError(f"run {run_id} has no promotion record ({path}); change_report must succeed in this "
                             "run first") from None
    except (OSError, ValueError) as exc:
        raise PromotionError(f"cannot read the promotion record {path} ({exc}); clear change_report to make a new "
                             "report") from None
    if record.get("run_id") != run_id or record.get("digest") != record_digest(record):
        raise PromotionError(f"promotion record {path} is not this run's or was changed after the report; clear "
                             "change_report to make a new report, which needs a new approval")
    return record


def needs_approval(record: Mapping, lists_stale: bool) -> bool:
    """Something to approve: files to promote, stale file lists, or planned ``actions`` (a point release's)."""
    return not record["dry_run"] and bool(record["items"] or lists_stale or record.get("actions"))


def needs_vetting(state: StateDir, record: Mapping) -> bool:
    """The run will ask the approvers (a report that opened the run at the gate), so staging is vetted first."""
    return not record["dry_run"] and pending_file(state, record["run_id"]).exists()


def open_run(state: StateDir, record: Mapping) -> None:
    """A new report revokes any earlier decision and open request of its run and marks the run as owing an
    audit entry."""
    revoke(state, record["run_id"])
    asked_file(state, record["run_id"]).unlink(missing_ok=True)
    for step in STEPS + EXTRA_STEPS:
        step_file(state, record["run_id"], step).unlink(missing_ok=True)
    _write_json(pending_file(state, record["run_id"]), {
        "run_id": record["run_id"], "digest": record["digest"], "release": record["release"],
        "staging_dir": record["staging_dir"], "production_dir": record["production_dir"],
        "record": str(state.record_file(record["run_id"])), "opened_at": utc_now()})


def revoke(state: StateDir, run_id: str) -> None:
    decision_file(state, run_id).unlink(missing_ok=True)


class NothingToApprove(Exception):
    """The run has nothing for an approver to decide: a dry run, or staging equals production."""


def approval_request(state: StateDir, run_id: str, ti_id: str) -> dict:
    """The record to ask the approvers about; asking again (a cleared task) withdraws an earlier answer.

    The request is bound to this record's digest and to the asking task instance: an answer only counts
    for the report the approvers were shown (a report made again while they are asked withdraws it).
    :class:`NothingToApprove` for a dry run and for a run whose report opened nothing at the gate.
    """
    revoke(state, run_id)
    record = run_record(state, run_id)
    if record["dry_run"]:
        raise NothingToApprove("dry run: the change report is the result; nothing to approve or promote")
    if not pending_file(state, run_id).exists():
        raise NothingToApprove("staging and production are identical; nothing to approve")
    _write_json(asked_file(state, run_id), {"run_id": run_id, "digest": record["digest"], "ti_id": ti_id,
                                            "asked_at": utc_now()})
    return record


# --- the decision ------------------------------------------------------------------------------


def record_decision(state: StateDir, record: Mapping, *, chosen_options: Iterable[str] | None,
                    responded_by: Mapping | None, responded_at: str | None, response_received: bool,
                    approvers: Iterable[str], task: Mapping) -> dict:
    """Store the answer Airflow recorded for this run's approval request; refuse an Approve by a non-approver.

    ``task`` names the approval task instance (dag_id, task_id, ti_id, try_number) for the audit.
    """
    chosen = list(chosen_options or [])
    if not response_received or len(chosen) != 1 or chosen[0] not in (APPROVE, REJECT):
        raise PromotionRefused(f"Airflow holds no single Approve/Reject answer for this run's approval request "
                               f"(received: {response_received}, options: {chosen!r}); nothing was promoted. "
                               "Clear approve_promotion to ask the approvers again")
    user = {"id": str(responded_by.get("id")), "name": str(responded_by.get("name"))} if responded_by else None
    decision = {
        "run_id": record["run_id"], "digest": record["digest"], "record": str(state.record_file(record["run_id"])),
        "choice": chosen[0], "decided_by": user, "decided_at": responded_at, "read_at": utc_now(), **task,
    }
    allowed = set(approvers)
    if decision["choice"] == APPROVE and (user is None or user["id"] not in allowed):
        who = f"user {user['id']!r}" if user else "nobody (a default answer)"
        raise PromotionRefused(f"Approve was given by {who}, who is not in RELENG_APPROVERS "
                               f"({', '.join(sorted(allowed)) or 'empty'}); nothing was promoted. Only an assigned "
                               "approver may approve: clear approve_promotion to ask again")
    _write_json(decision_file(state, record["run_id"]), decision)
    return decision


def decide(state: StateDir, run_id: str, event: Mapping[str, Any], approvers: Iterable[str],
           task: Mapping) -> dict:
    """Store the answer in ``event``, Airflow's own record of it; a refusal is logged in the audit log.

    The API server (or the scheduler's timeout sweep) builds ``event`` from the
    request's hitl_detail row and resumes the approval task with it through the
    execution API; no REST route can write it, unlike XComs. ``task`` names the
    approval task instance (dag_id, task_id, ti_id, try_number).
    """
    try:
        record = run_record(state, run_id)
        asked = _read_json(asked_file(state, run_id))
        if not asked or asked.get("ti_id") != task.get("ti_id") or asked.get("digest") != record["digest"]:
            raise PromotionRefused(f"the answer is for a request that no longer matches this run's report (the "
                                   f"report was made again after the approvers were asked, or the request was "
                                   f"not made by this task); nothing was promoted. Clear approve_promotion to ask "
                                   f"the approvers about report {record['digest']}")
        if "error" in event:
            raise PromotionRefused(f"the approval request ended without an answer ({event.get('error')})"
                                   "; nothing was promoted. Trigger the promotion again")
        at: Any = event.get("responded_at")
        return record_decision(
            state, record, chosen_options=event.get("chosen_options"), responded_by=event.get("responded_by_user"),
            responded_at=at.isoformat() if hasattr(at, "isoformat") else at, response_received=True,
            approvers=approvers, task=task)
    except PromotionRefused as exc:
        refuse(state, run_id, task["dag_id"], task["task_id"], exc)
        raise


def decision_for_people(decision: Mapping) -> dict:
    """The decision in the shape of Airflow's HITL answer, for the UI; nothing acts on it."""
    return {"chosen_options": [decision["choice"]], "responded_by_user": decision["decided_by"],
            "responded_at": decision["decided_at"]}


def load_decision(state: StateDir, run_id: str) -> dict | None:
    return _read_json(decision_file(state, run_id))


def approved_record(state: StateDir, run_id: str, approvers: Iterable[str]) -> dict:
    """The record an approver approved for this run, or :class:`PromotionRefused` saying why not."""
    decision = load_decision(state, run_id)
    if decision is None:
        raise PromotionRefused(f"Airflow recorded no answer to this run's approval request ({run_id}): "
                               "approve_promotion was not answered by an approver (marked success, skipped or "
                               "cleared by hand?). Nothing was promoted; production only changes after an "
                               "approver chose Approve on the Required Actions page")
    if decision.get("run_id") != run_id:
        raise PromotionRefused(f"the decision file {decision_file(state, run_id)} belongs to run "
                               f"{decision.get('run_id')!r}, not {run_id}; nothing was promoted")
    if decision.get("choice") != APPROVE:
        raise PromotionRefused(f"the approval request of run {run_id} was answered {decision.get('choice')!r} "
                               f"by {(decision.get('decided_by') or {}).get('id', 'nobody (timeout default)')}; "
                               "nothing is promoted after a Reject")
    user = (decision.get("decided_by") or {}).get("id")
    if user not in set(approvers):
        raise PromotionRefused(f"run {run_id} was approved by {user!r}, who is not (any more) in RELENG_APPROVERS; "
                               "nothing was promoted. Trigger the promotion again for an approver to answer")
    return load_record(state.record_file(run_id), decision["digest"])


# --- steps and audit ---------------------------------------------------------------------------


def refuse(state: StateDir, run_id: str, dag_id: str, task_id: str, exc: PromotionRefused) -> None:
    """Log a refused production step in the audit log."""
    try:
        record: Mapping | None = run_record(state, run_id)
    except PromotionError:
        record = None
    append_audit(state, refusal_entry(record, run_id, dag_id, task_id, str(exc)))


def approved_step(state: StateDir, run_id: str, approvers: Iterable[str], step: str,
                  action: Callable[[dict], dict], *, dag_id: str, task_id: str) -> dict:
    """Run ``action`` on the record an approver approved for this run and store its result as ``step``'s.

    Without a valid recorded approval the refusal is logged in the audit log and
    :class:`PromotionRefused` raised; ``action`` does not run.
    """
    try:
        record = approved_record(state, run_id, approvers)
    except PromotionRefused as exc:
        refuse(state, run_id, dag_id, task_id, exc)
        raise
    result = action(record)
    save_step(state, run_id, record["digest"], step, result)
    return result



def save_step(state: StateDir, run_id: str, digest: str, step: str, result: Mapping) -> None:
    _write_json(step_file(state, run_id, step), {"digest": digest, "result": dict(result), "at": utc_now()})


def load_steps(state: StateDir, run_id: str, digest: str,
               steps: tuple[str, ...] = STEPS) -> dict[str, dict | None]:
    """Each step's result for this run's approved digest (None: the step did not finish)."""
    out: dict[str, dict | None] = {}
    for step in steps:
        saved = _read_json(step_file(state, run_id, step))
        out[step] = saved["result"] if saved and saved.get("digest") == digest else None
    return out


def extra_step(state: StateDir, run_id: str, digest: str, step: str) -> dict | None:
    """A step after the promotion (outside STEPS, which decide its outcome): its result for this digest, or None."""
    saved = _read_json(step_file(state, run_id, step))
    return saved["result"] if saved and saved.get("digest") == digest else None


def refusal_entry(record_or_pending: Mapping | None, run_id: str, dag_id: str, task_id: str, reason: str) -> dict:
    r = record_or_pending or {}
    return {"event": "refused", "run_id": run_id, "dag_id": dag_id, "task_id": task_id,
            "release": r.get("release"), "staging_dir": r.get("staging_dir"),
            "production_dir": r.get("production_dir"), "digest": r.get("digest"), "outcome": "refused",
            "reason": reason, "logged_at": utc_now()}


def outcome_entry(state: StateDir, record: Mapping, dag_id: str) -> dict:
    """The audit entry of a run, from the files the gate wrote (the decision and each step's result)."""
    run_id = record["run_id"]
    decision = load_decision(state, run_id)
    if decision is not None and decision.get("digest") != record["digest"]:
        decision = None
    steps = load_steps(state, run_id, record["digest"], steps_of(record))
    verdict = vetting_files.load_verdict(state, run_id, record["digest"])
    if decision is None and verdict is not None and verdict["status"] == vetting_files.FAILED:
        outcome = f"not asked: vetting failed ({', '.join(verdict['failed'])}); nothing was promoted"
        choice = None
    elif decision is None:
        outcome = ("no decision: Airflow recorded no approver's answer for this run (approval not answered, "
                   "bypassed or failed); nothing was promoted")
        choice = None
    elif decision["choice"] != APPROVE:
        choice = decision["choice"]
        outcome = "rejected" if decision.get("decided_by") else "timed out (default: Reject)"
    else:
        choice = APPROVE
        missing = [s for s, v in steps.items() if v is None]
        outcome = "promoted" if not missing else "incomplete: " + ", ".join(missing) + " did not finish"
    return {
        "event": "outcome", "run_id": run_id, "dag_id": dag_id, "release": record["release"], "rc": record["rc"],
        "staging_dir": record["staging_dir"], "production_dir": record["production_dir"],
        "record": str(state.record_file(run_id)), "digest": record["digest"], "decision": choice,
        "outcome": outcome, "decided_by": (decision or {}).get("decided_by"),
        "decided_at": (decision or {}).get("decided_at"),
        "phases": {p: steps[p] for p in ("payload", "metadata", "deletions")},
        "verification": steps["verify_production"], "file_lists": steps["update_file_lists"],
        "mirror_handoff": extra_step(state, run_id, record["digest"], "mirror_handoff"),
        "vetting": vetting_files.summary(verdict), "logged_at": utc_now(),
        **({"point_release": {s: steps[s] for s in record["extra_steps"]}} if record.get("extra_steps") else {}),
    }


def close_run(state: StateDir, record: Mapping, dag_id: str) -> tuple[dict, bool]:
    """Append the run's outcome to the audit log and close the run; (entry, appended).

    The decision is used up here: a phase cleared or replayed later (or a run recreated with the same id)
    finds no approval and needs a new report and a new answer.
    """
    entry = outcome_entry(state, record, dag_id)
    appended = append_audit(state, entry)
    revoke(state, record["run_id"])
    asked_file(state, record["run_id"]).unlink(missing_ok=True)
    pending_file(state, record["run_id"]).unlink(missing_ok=True)
    return entry, appended


def record_promotion(state: StateDir, run_id: str, dag_id: str) -> tuple[dict, bool] | None:
    """The ``record_promotion`` step: close the run in the audit log; (entry, appended).

    None when no approval was asked in this run (dry run, nothing to approve, or the report failed).
    """
    if not pending_file(state, run_id).exists() and load_decision(state, run_id) is None:
        return None
    return close_run(state, run_record(state, run_id), dag_id)


def close_abandoned(state: StateDir, current_run_id: str, dag_id: str) -> list[dict]:
    """Audit entries for earlier runs that ended without one (run marked success or failed by hand, killed)."""
    directory = _run_dir(state, "pending")
    if not directory.is_dir():
        return []
    entries = []
    for path in sorted(directory.glob("*.json")):
        pending = _read_json(path)
        if not pending or pending.get("run_id") == current_run_id:
            continue
        try:
            record = run_record(state, pending["run_id"])
            entry = outcome_entry(state, record, dag_id)
        except PromotionError:
            entry = {"event": "outcome", "run_id": pending["run_id"], "dag_id": dag_id,
                     "release": pending.get("release"), "digest": pending.get("digest"), "decision": None,
                     "outcome": "no decision: the run's record is gone; nothing was promoted by it",
                     "logged_at": utc_now()}
        entry["event"] = "abandoned"
        entry["outcome"] = f"abandoned: the run ended without its audit record ({entry['outcome']})"
        append_audit(state, entry)
        revoke(state, pending["run_id"])
        os.unlink(path)
        entries.append(entry)
    return entries
