"""The approval gate against a hostile user of the REST API (``admin``: DAG edit rights, not an approver).

Each attack goes through Airflow's own REST app (FastAPI TestClient, a JWT per user) while
``dag.test()`` runs the promotion in the main thread: forge the decision XCom and mark
``approve_promotion`` success, clear the phases after a Reject, skip the approval, mark the run
success. Production must stay byte-identical and each attempt must show in the audit log.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

import pytest

from tests.dagrun import resume_run
from tests.promotion.conftest import change_checksum_file, tree_digest
from tests.promotion.test_dag import (
    APPROVAL,
    DAG_ID,
    PROMOTION_TASKS,
    _parked_run_id,
    audit_lines,
    load_dag,
    respond,
    states,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("airflow_db")]


class Api:
    """Airflow's REST API as one user."""

    def __init__(self, user: str, role: str):
        from airflow.api_fastapi.app import create_app, get_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from fastapi.testclient import TestClient

        self.client = TestClient(create_app(apps="core"))
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=user, role=role))
        self.headers = {"Authorization": f"Bearer {token}"}

    def run_url(self, run_id: str) -> str:
        return f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"

    def call(self, method: str, url: str, body: dict):
        return self.client.request(method, url, json=body, headers=self.headers)


def attack_when_parked(steps, out: dict) -> threading.Thread:
    """Once the approval waits for input, run ``steps(api, run_id)`` as admin; responses go to ``out``."""

    def work():
        run_id = _parked_run_id(time.monotonic() + 120)
        if run_id is None:
            out["error"] = "the approval task never reached awaiting_input"
            return
        time.sleep(2)
        api = Api("admin", "admin")
        out["run_id"] = run_id
        out["responses"] = [(r.status_code, r.text[:300]) for r in steps(api, run_id)]

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def forge_and_mark_success(api: Api, run_id: str) -> list:
    forged = {"chosen_options": ["Approve"], "responded_by_user": {"id": "approver", "name": "approver"},
              "responded_at": "2026-01-01T00:00:00+00:00"}
    ti_url = f"{api.run_url(run_id)}/taskInstances/{APPROVAL}"
    return [
        api.call("POST", f"{ti_url}/xcomEntries", {"key": "decision", "value": forged, "map_index": -1}),
        api.call("POST", f"{ti_url}/xcomEntries", {"key": "return_value", "value": forged, "map_index": -1}),
        api.call("PATCH", ti_url, {"new_state": "success"}),
    ]


def hitl_answer(run_id: str) -> dict:
    api = Api("admin", "admin")
    r = api.call("GET", f"{api.run_url(run_id)}/taskInstances/{APPROVAL}/-1/hitlDetails", {})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def promoted(staged):
    """Production holds a first approved promotion; then staging changes, so there is something to promote."""
    dag = load_dag()
    out: dict = {}
    respond("Approve", out).join(0)
    assert dag.test(run_conf={"release": "el9", "rc": True}).state == "success"
    change_checksum_file(staged)
    return dag


def test_forged_approval_marked_success_promotes_nothing(staged, promoted):
    before = tree_digest(staged.category, strict=True)
    out: dict = {}
    attack_when_parked(forge_and_mark_success, out).join(0)
    dr = promoted.test(run_conf={"release": "el9", "rc": True})
    assert "error" not in out, out
    assert [code for code, _ in out["responses"]] == [201, 201, 200], out  # the REST API lets admin do all this
    s = states(dr)
    assert s[APPROVAL] == "success" and s["promote_payload"] == "failed", s
    assert all(s[t] == "upstream_failed" for t in PROMOTION_TASKS[1:]), s
    assert tree_digest(staged.category, strict=True) == before
    assert hitl_answer(out["run_id"])["response_received"] is False  # nobody answered the request

    entries = [a for a in audit_lines(staged) if a["run_id"] == dr.run_id]
    refused = [a for a in entries if a["event"] == "refused"]
    assert [a["task_id"] for a in refused] == ["promote_payload"]
    assert "Airflow recorded no answer" in refused[0]["reason"]
    outcome = [a for a in entries if a["event"] == "outcome"]
    assert len(outcome) == 1 and outcome[0]["outcome"].startswith("no decision") and outcome[0]["decided_by"] is None


def test_clearing_the_phases_after_a_reject_promotes_nothing(staged, promoted):
    before = tree_digest(staged.category, strict=True)
    out: dict = {}
    respond("Reject", out).join(0)
    dr = promoted.test(run_conf={"release": "el9", "rc": True})
    assert out.get("approver", (None,))[0] == 200, out
    assert all(states(dr)[t] == "skipped" for t in PROMOTION_TASKS)

    api = Api("admin", "admin")
    # Airflow re-skips cleared tasks a Reject skipped (the skip is an XCom); the attacker deletes it first
    r = api.call("DELETE", f"{api.run_url(dr.run_id)}/taskInstances/{APPROVAL}/xcomEntries/skipmixin_key", {})
    assert r.status_code == 204, r.text
    r = api.call("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
                 {"dag_run_id": dr.run_id, "task_ids": list(PROMOTION_TASKS), "dry_run": False,
                  "only_failed": False, "reset_dag_runs": True})
    assert r.status_code == 200, r.text
    dr = resume_run(promoted, dr.run_id)
    s = states(dr)
    assert s["promote_payload"] == "failed", s
    assert tree_digest(staged.category, strict=True) == before
    refused = [a for a in audit_lines(staged) if a["run_id"] == dr.run_id and a["event"] == "refused"]
    # clearing a task inside the report's setup/teardown scope runs the report again, and a new report
    # withdraws the run's earlier answer: the phases find no approval at all
    assert refused and refused[0]["task_id"] == "promote_payload"
    assert "Airflow recorded no answer" in refused[0]["reason"], refused


def test_skipped_approval_promotes_nothing_and_is_recorded(staged, promoted):
    before = tree_digest(staged.category, strict=True)
    out: dict = {}
    attack_when_parked(lambda api, run_id: [api.call("PATCH", f"{api.run_url(run_id)}/taskInstances/{APPROVAL}",
                                                      {"new_state": "skipped"})], out).join(0)
    dr = promoted.test(run_conf={"release": "el9", "rc": True})
    assert [code for code, _ in out["responses"]] == [200], out
    assert all(states(dr)[t] == "skipped" for t in PROMOTION_TASKS), states(dr)
    assert tree_digest(staged.category, strict=True) == before
    outcome = [a for a in audit_lines(staged) if a["run_id"] == dr.run_id and a["event"] == "outcome"]
    assert len(outcome) == 1 and outcome[0]["outcome"].startswith("no decision")


def test_run_marked_success_promotes_nothing_and_is_recorded(staged, promoted):
    before = tree_digest(staged.category, strict=True)
    out: dict = {}
    attack_when_parked(lambda api, run_id: [api.call("PATCH", api.run_url(run_id), {"state": "success"})],
                       out).join(0)
    dr = promoted.test(run_conf={"release": "el9", "rc": True})
    assert [code for code, _ in out["responses"]] == [200], out
    assert dr.state == "success"
    assert all(states(dr)[t] in (None, "success", "skipped") for t in PROMOTION_TASKS)
    assert tree_digest(staged.category, strict=True) == before

    # Airflow still runs the teardown after the run is marked success; had it not run, the next report would
    # log the run as abandoned (tests/core/test_approval.py)
    nxt = promoted.test(run_conf={"release": "el9", "rc": True, "dry_run": True})
    assert nxt.state == "success"
    assert tree_digest(staged.category, strict=True) == before
    entries = [a for a in audit_lines(staged) if a["run_id"] == dr.run_id]
    assert len(entries) == 1 and entries[0]["event"] in ("outcome", "abandoned"), entries
    assert "no decision" in entries[0]["outcome"] and entries[0]["decided_by"] is None
