"""Replays and swapped reports against the approval gate (found by a hostile review; each test failed before the fix).

Same harness as test_gate.py: Airflow's REST app as ``admin`` (DAG edit rights, not an approver), the
DAG run in this process with ``dag.test()`` / ``resume_run``.
"""

from __future__ import annotations

import shutil
import time

import pytest

from tests.dagrun import resume_run
from tests.promotion.conftest import change_checksum_file
from tests.promotion.test_dag import APPROVAL, DAG_ID, PROMOTION_TASKS, audit_lines, load_dag, respond, states
from tests.promotion.test_gate import Api, hitl_answer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("airflow_db")]

CHECKSUM = ("isos", "x86_64", "CHECKSUM")
GA_MARK = "# GA checksums\n"  # a comment line: sha256sum -c (and so the vetting) still accepts the file


def _approved_run(dag, conf: dict, *, during=None):
    out: dict = {}
    respond("Approve", out, during=during).join(0)
    dr = dag.test(run_conf=conf)
    assert out.get("approver", (None,))[0] == 200, out
    return dr, out


@pytest.fixture
def rc_then_ga(staged):
    """An approved RC promotion, then the GA tree (the RC tree with a changed CHECKSUM) approved over it."""
    dag = load_dag()
    r1, _ = _approved_run(dag, {"release": "el9", "rc": True})
    assert r1.state == "success", states(r1)
    ga = staged.staging.with_name(staged.production.name)
    shutil.copytree(staged.staging, ga, symlinks=True)
    ga.joinpath(*CHECKSUM).write_text(GA_MARK + ga.joinpath(*CHECKSUM).read_text())  # still vets
    r2, _ = _approved_run(dag, {"release": "el9", "rc": False})
    assert r2.state == "success", states(r2)
    return dag, r1


def test_replaying_an_old_approved_run_does_not_change_production(staged, rc_then_ga):
    """Finding 1: a decision file outlives its run; clear the phases of an old run, mark its report
    success (so no new report revokes the decision) and the old approval is applied again, e.g. an RC
    promotion rolled over the GA promotion approved after it. Nobody approved anything in between."""
    dag, r1 = rc_then_ga
    assert staged.production.joinpath(*CHECKSUM).read_text().startswith(GA_MARK)
    audit_before = len(audit_lines(staged))

    # admin, through the REST API only: clear the old RC run's phases (Airflow adds the report, a setup,
    # and the audit teardown), then mark the report success before the scheduler runs it (a paused DAG
    # or a full `promotion` pool gives all the time needed)
    api = Api("admin", "admin")
    r = api.call("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
                 {"dag_run_id": r1.run_id, "task_ids": list(PROMOTION_TASKS), "dry_run": False,
                  "only_failed": False, "reset_dag_runs": True})
    assert r.status_code == 200, r.text
    assert {t["task_id"] for t in r.json()["task_instances"]} >= {"change_report", "record_promotion"}
    r = api.call("PATCH", f"{api.run_url(r1.run_id)}/taskInstances/change_report", {"new_state": "success"})
    assert r.status_code == 200, r.text
    r1 = resume_run(dag, r1.run_id)

    assert staged.production.joinpath(*CHECKSUM).read_text().startswith(GA_MARK), (
        f"production rolled back to the RC's file by a replayed approval; phases: {states(r1)}")
    # and at the very least the replay would have to show in the audit log
    assert len(audit_lines(staged)) > audit_before, "the replay left no audit entry"


def test_deleted_run_recreated_with_its_run_id_gets_no_approval(staged, rc_then_ga):
    """Finding 1, second route: DELETE the approved run, trigger a new run with the same run_id and
    mark its report and approval success: the new run (never asked, nobody answered) finds the old
    decision and record by run id and promotes."""
    dag, r1 = rc_then_ga

    api = Api("admin", "admin")
    run_id = r1.run_id
    r = api.call("DELETE", api.run_url(run_id), {})
    assert r.status_code == 204, r.text
    r = api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                 {"dag_run_id": run_id, "logical_date": None, "conf": {"release": "el9", "rc": True}})
    assert r.status_code == 200, r.text
    for task in ("change_report", APPROVAL):
        r = api.call("PATCH", f"{api.run_url(run_id)}/taskInstances/{task}", {"new_state": "success"})
        assert r.status_code == 200, (task, r.text)
    dr = resume_run(dag, run_id)

    assert states(dr)["promote_payload"] == "failed", states(dr)
    assert staged.production.joinpath(*CHECKSUM).read_text().startswith(GA_MARK)


def test_approval_binds_the_report_the_approver_was_shown(staged, tmp_path):
    """Finding 2: the decision takes the digest of whatever record file is there when the answer
    arrives. Clearing only change_report while the approval waits writes a new report of the same run
    (staging changed meanwhile); the approver approves the request showing report A and report B is
    what gets promoted."""
    dag = load_dag()
    r0, _ = _approved_run(dag, {"release": "el9", "rc": True})
    assert r0.state == "success", states(r0)
    change_checksum_file(staged)  # report A: the CHECKSUM only

    sneaked = staged.staging / "isos" / "x86_64" / "sneaked-in.iso"
    seen: dict = {}

    def during():
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as s:
            run_id = s.query(TaskInstance).filter_by(dag_id=DAG_ID, task_id=APPROVAL,
                                                     state="awaiting_input").one().run_id
        seen["body"] = hitl_answer(run_id)["body"]
        sneaked.write_text("not in the report the approver reads\n")  # staging moves on (e.g. an update)
        api = Api("admin", "admin")
        r = api.call("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
                     {"dag_run_id": run_id, "task_ids": ["change_report"], "dry_run": False,
                      "only_failed": False, "reset_dag_runs": False})
        seen["clear"] = (r.status_code, [t["task_id"] for t in r.json().get("task_instances", [])])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # dag.test() runs the cleared report while the approval waits
            with create_session() as s:
                ti = s.query(TaskInstance).filter_by(dag_id=DAG_ID, run_id=run_id, task_id="change_report").one()
                if ti.state == "success" and ti.try_number > 1:
                    break
            time.sleep(0.5)

    dr, _out = _approved_run(dag, {"release": "el9", "rc": True}, during=during)
    assert seen.get("clear", (None,))[0] == 200, seen
    assert APPROVAL not in seen["clear"][1], seen  # the approval stays parked with report A's body
    assert "sneaked-in.iso" not in seen["body"]
    assert not (staged.production / "isos" / "x86_64" / "sneaked-in.iso").exists(), (
        f"a file the approver was never shown was promoted; phases: {states(dr)}")
