"""The approval gate's files: decisions, refusals, step results and the audit entries built from them."""

from __future__ import annotations

import json

import pytest

from releng.core.promotion import approval
from releng.core.promotion.base import PromotionError
from releng.core.promotion.record import record_digest
from releng.core.promotion.target import StateDir

RUN = "manual__2026-11-28T04:15:00+00:00"


def make_record(state: StateDir, run_id: str = RUN, **extra) -> dict:
    record = {"version": 1, "run_id": run_id, "release": "el9", "rc": False, "dry_run": False,
              "staging_dir": "/s/9.7", "production_dir": "/p/9.7", "items": [{"path": "a"}], **extra}
    record["digest"] = record_digest(record)
    state.record_file(run_id).parent.mkdir(parents=True, exist_ok=True)
    state.record_file(run_id).write_text(json.dumps(record))
    return record


@pytest.fixture
def state(tmp_path):
    return StateDir(tmp_path / ".releng")


def decide(state, record, choice="Approve", user="approver", approvers=("approver",)):
    return approval.record_decision(
        state, record, chosen_options=[choice], responded_by={"id": user, "name": user} if user else None,
        responded_at="2026-11-28T05:00:00+00:00", response_received=True, approvers=approvers,
        task={"dag_id": "promote_to_production", "task_id": "approve_promotion", "ti_id": "x", "try_number": 1})


def test_an_approver_s_approve_lets_the_phases_have_the_record(state):
    record = make_record(state)
    approval.open_run(state, record)
    decide(state, record)
    assert approval.approved_record(state, RUN, ("approver",)) == record


def test_approve_from_a_user_outside_the_approvers_is_refused_and_not_stored(state):
    record = make_record(state)
    with pytest.raises(approval.PromotionRefused, match="'admin', who is not in RELENG_APPROVERS"):
        decide(state, record, user="admin")
    with pytest.raises(approval.PromotionRefused, match="nobody"):
        decide(state, record, user=None)  # an Approve default on timeout is no approver's answer
    assert approval.load_decision(state, RUN) is None


@pytest.mark.parametrize("options", [[], ["Approve", "Reject"], ["Maybe"]])
def test_anything_but_one_answer_is_refused(state, options):
    with pytest.raises(approval.PromotionRefused, match="no single Approve/Reject"):
        approval.record_decision(state, make_record(state), chosen_options=options, responded_by=None,
                                 responded_at=None, response_received=True, approvers=("approver",), task={})


def test_phases_refuse_without_a_decision_after_a_reject_and_after_the_approver_was_removed(state):
    record = make_record(state)
    with pytest.raises(approval.PromotionRefused, match="no answer"):
        approval.approved_record(state, RUN, ("approver",))
    decide(state, record, choice="Reject")
    with pytest.raises(approval.PromotionRefused, match="answered 'Reject'"):
        approval.approved_record(state, RUN, ("approver",))
    decide(state, record)
    with pytest.raises(approval.PromotionRefused, match="not \\(any more\\) in RELENG_APPROVERS"):
        approval.approved_record(state, RUN, ("someone-else",))


def test_a_record_changed_after_the_approval_is_refused(state):
    record = make_record(state)
    decide(state, record)
    changed = {**record, "items": []}
    state.record_file(RUN).write_text(json.dumps(changed))
    with pytest.raises(PromotionError, match="does not match the approved digest"):
        approval.approved_record(state, RUN, ("approver",))


def test_a_new_report_revokes_the_earlier_decision(state):
    record = make_record(state)
    decide(state, record)
    approval.open_run(state, record)
    assert approval.load_decision(state, RUN) is None


def test_outcomes_come_from_the_gate_files(state):
    record = make_record(state)
    approval.open_run(state, record)
    assert approval.outcome_entry(state, record, "d")["outcome"].startswith("no decision")
    decide(state, record, choice="Reject", user=None)
    assert approval.outcome_entry(state, record, "d")["outcome"] == "timed out (default: Reject)"
    decide(state, record)
    for step in approval.STEPS[:2]:
        approval.save_step(state, RUN, record["digest"], step, {"files": 1})
    entry = approval.outcome_entry(state, record, "d")
    assert entry["outcome"] == "incomplete: deletions, verify_production, update_file_lists did not finish"
    for step in approval.STEPS:
        approval.save_step(state, RUN, record["digest"], step, {"files": 1})
    entry, appended = approval.close_run(state, record, "d")
    assert appended and entry["outcome"] == "promoted" and entry["decided_by"]["id"] == "approver"
    assert not approval.pending_file(state, RUN).exists()
    assert approval.record_promotion(state, RUN, "d") is None  # closed: a rerun teardown logs nothing more
    assert approval.load_decision(state, RUN) is None  # the decision is used up: a replayed phase finds none


def test_a_run_that_ended_without_its_audit_entry_is_logged_by_the_next_report(state):
    old = make_record(state, "manual__old")
    approval.open_run(state, old)
    current = make_record(state)
    approval.open_run(state, current)
    entries = approval.close_abandoned(state, RUN, "promote_to_production")
    assert [e["run_id"] for e in entries] == ["manual__old"]
    assert entries[0]["event"] == "abandoned" and "no decision" in entries[0]["outcome"]
    assert approval.pending_file(state, RUN).exists() and not approval.pending_file(state, "manual__old").exists()
    log = [json.loads(line) for line in state.log_file.read_text().splitlines()]
    assert [e["run_id"] for e in log] == ["manual__old"]
