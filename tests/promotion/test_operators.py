"""The promote_to_production DAG's wiring and its operators' decisions, without running a DAG."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from releng.assets import STAGING_ASSET
from releng.core.promotion import approval
from releng.core.promotion.target import StateDir
from releng.core.settings import settings
from releng.operators import promotion as ops
from tests.leases import end_run

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["change_report", "approve_promotion", "promote_payload", "promote_metadata", "promote_deletions",
         "verify_production", "update_file_lists", "mirror_handoff", "record_promotion"]


def parse(monkeypatch, **env):
    from airflow.dag_processing.dagbag import DagBag

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings.cache_clear()
    bag = DagBag(dag_folder=str(ROOT / "dags" / "promote_to_production.py"))
    assert bag.import_errors == {}
    return bag.dags["promote_to_production"]


def test_dag_wiring(monkeypatch):
    dag = parse(monkeypatch, RELENG_APPROVERS="alice, bob", RELENG_APPROVAL_TIMEOUT_HOURS="12")
    assert dag.max_active_runs == 1 and dag.catchup is False and dag.doc_md and dag.tags
    assert dag.timetable.asset_condition == STAGING_ASSET  # runs when staging is updated (manual runs too)
    assert list(dag.params) == ["release", "rc", "dry_run", "allow_large_delete", "vetting_override"]
    assert dag.params["vetting_override"] is False
    # vetting: planned after the report, one mapped instance per check, the verdict before the approval
    assert dag.get_task("plan_vetting").upstream_task_ids == {"change_report"}
    assert dag.get_task("vet_staging").upstream_task_ids == {"plan_vetting"}
    assert dag.get_task("vetting_verdict").upstream_task_ids == {"vet_staging"}
    assert dag.get_task("vetting_verdict").trigger_rule == "all_done"
    assert dag.get_task("approve_promotion").upstream_task_ids == {"change_report", "vetting_verdict"}
    enum = dag.params.get_param("release").schema["enum"]
    assert set(enum) == {"el10", "el8", "el9-beta", "el9-sig-cloud", "el9", "el9lh"}  # no "null" choice (issue 13)
    order, task = [], dag.get_task("change_report")
    while task is not None:
        order.append(task.task_id)
        task = next((dag.get_task(t) for t in sorted(task.downstream_task_ids) if t != "record_promotion"), None) \
            or (dag.get_task("record_promotion") if task.task_id == "mirror_handoff" else None)
    assert order == ORDER
    approval = dag.get_task("approve_promotion")
    assert isinstance(approval, ApprovalOperator)
    assert approval.assigned_users == [{"id": "alice", "name": "alice"}, {"id": "bob", "name": "bob"}]
    assert approval.response_timeout == timedelta(hours=12) and approval.defaults == ["Reject"]
    assert approval.retries >= 1  # a fast answer can race the parking and retry the task
    assert approval.body is None  # rendered from the run's record file when it runs, never from an XCom
    for tid in ORDER:
        t = dag.get_task(tid)
        assert t.owner == "release-eng"
        # the hand-off only reads the record: it holds no promotion slot while it retries
        assert t.pool == ("default_pool" if tid in ("approve_promotion", "mirror_handoff") else "promotion"), tid
    assert dag.get_task("change_report").retries == 0
    assert all(dag.get_task(t).retries >= 1 for t in ORDER[2:7])
    audit = dag.get_task("record_promotion")
    assert audit.is_teardown and "change_report" in audit.upstream_task_ids
    assert dag.get_task("mirror_handoff").retries == 0  # its attempts are RELENG_MIRROR_HANDOFF_ATTEMPTS
    assert [type(n).__name__ for n in approval.notifiers] == ["ApprovalWaitingNotifier"]


def test_parse_time_does_no_io_on_trees(monkeypatch, tmp_path):
    dag = parse(monkeypatch, RELENG_STAGING_ROOT=str(tmp_path / "nope-s"),
                RELENG_PRODUCTION_ROOT=str(tmp_path / "nope-p"), RELENG_APPROVERS="")
    assert dag is not None and not (tmp_path / "nope-s").exists() and not (tmp_path / "nope-p").exists()


def test_unknown_release_param_is_refused_by_the_form(monkeypatch):
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(parse(monkeypatch).params)
    for bad in ("lookahead", "", "el9 ", "../el9", "lh"):
        with pytest.raises(ParamValidationError):
            params.update({"release": bad})
    params.update({"release": "el9", "rc": True})
    assert params.validate()["release"] == "el9"


class FakeTi:
    def __init__(self, xcoms: dict):
        self.xcoms = xcoms
        self.pushed: dict = {}
        self.id, self.try_number = "0189", 1

    def xcom_pull(self, task_ids, key="return_value"):
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key, value):
        self.pushed[key] = value


def _report_context(params: dict, events: list[dict] | None = None) -> dict:
    evs = [SimpleNamespace(extra=e, timestamp=i) for i, e in enumerate(events or [])]
    return {"params": {"release": None, "rc": False, "dry_run": False, "allow_large_delete": False, **params},
            "run_id": "asset_triggered__2026-01-01", "ti": FakeTi({}),
            "dag": SimpleNamespace(dag_id="promote_to_production"),
            "triggering_asset_events": {STAGING_ASSET: evs} if evs else {}}


def test_asset_event_chooses_release_and_rc(staged):
    op = ops.PromotionReportOperator(task_id="change_report")
    out = op.execute(_report_context({}, [{"release": "el9", "rc": True, "staging_dir": str(staged.staging),
                                           "source": "general_updates"}]))
    assert out["target"]["staging_dir"] == str(staged.staging) and out["target"]["production_dir"] == \
        str(staged.production)
    assert out["changes"] > 0 and not out["dry_run"] and out["lists_stale"]
    assert json.loads(Path(out["record"]).read_text())["digest"] == out["digest"]
    assert out["subject"].startswith("Promote el9 9.7-RC1 to production 9.7:")


def test_asset_event_naming_another_staging_dir_is_refused(staged):
    op = ops.PromotionReportOperator(task_id="change_report")
    with pytest.raises(AirflowFailException, match=r"event says .*/9\.7 was staged, but el9 \(rc=True\) promotes"):
        op.execute(_report_context({}, [{"release": "el9", "rc": True,
                                         "staging_dir": str(staged.staging.parent / "9.7")}]))
    assert not (staged.production_root / "mirror").exists()


def test_a_lookahead_or_beta_release_is_refused_before_the_lease_and_any_tree(trees):
    """Its own staging event: skipped (nothing to promote, by design); asked for by hand: failed, saying why."""
    op = ops.PromotionReportOperator(task_id="change_report")
    event = {"release": "el9lh", "rc": False, "source": "full_compose",
             "staging_dir": str(trees.staging_root / "mirror/pub/rocky/9.8-LookAhead")}
    with pytest.raises(AirflowSkipException, match=r"el9lh is a lookahead release .* never promoted to production"):
        op.execute(_report_context({}, [event]))
    with pytest.raises(AirflowFailException, match=r"el9-beta is a beta release .* live only in staging"):
        op.execute(_report_context({"release": "el9-beta"}))
    assert list(trees.production_root.iterdir()) == [] and list(trees.staging_root.iterdir()) == []  # no lease


def _approval(**kw) -> ops.PromotionApprovalOperator:
    return ops.PromotionApprovalOperator(task_id="approve_promotion", subject="s", body="b", defaults="Reject",
                                         **kw)


def _ctx(run_id: str, ti=None) -> dict:
    return {"ti": ti or FakeTi({}), "run_id": run_id, "dag": SimpleNamespace(dag_id="promote_to_production"),
            "task": SimpleNamespace(task_id="promote_payload")}


def _state(staged):
    return StateDir(staged.production_root / ".releng")


def test_approval_skips_dry_runs_and_no_ops_and_refuses_without_approvers(staged):
    report = ops.PromotionReportOperator(task_id="change_report")
    report.execute({**_report_context({"release": "el9", "rc": True, "dry_run": True}), "run_id": "dry"})
    with pytest.raises(AirflowSkipException, match="dry run"):
        _approval(assigned_users=[{"id": "a", "name": "a"}]).execute(_ctx("dry"))
    end_run(staged.staging_root, "promote_to_production", "dry")  # its record_promotion gives the lease back
    report.execute({**_report_context({"release": "el9", "rc": True}), "run_id": "real"})
    with pytest.raises(AirflowFailException, match=r"RELENG_APPROVERS is empty.*could be answered by any user"):
        _approval(assigned_users=[]).execute(_ctx("real"))
    approval.pending_file(_state(staged), "real").unlink()  # what a report finding nothing to do leaves
    with pytest.raises(AirflowSkipException, match="identical; nothing to approve"):
        _approval(assigned_users=[{"id": "a", "name": "a"}]).execute(_ctx("real"))
    with pytest.raises(AirflowFailException, match="has no promotion record"):
        _approval(assigned_users=[{"id": "a", "name": "a"}]).execute(_ctx("no-report"))


def test_approval_stores_airflows_answer_and_refuses_a_non_approver(staged, monkeypatch):
    from datetime import UTC, datetime

    monkeypatch.setenv("RELENG_APPROVERS", "approver")
    settings.cache_clear()
    ops.PromotionReportOperator(task_id="change_report").execute(
        {**_report_context({"release": "el9", "rc": True}), "run_id": "r1"})
    op = _approval(assigned_users=[{"id": "approver", "name": "approver"}])
    event = {"chosen_options": ["Approve"], "params_input": {}, "responded_by_user": {"id": "admin",
             "name": "admin"}, "responded_at": datetime(2026, 1, 2, tzinfo=UTC)}
    approval.approval_request(_state(staged), "r1", "0190")  # what execute() wrote when it asked
    ti = SimpleNamespace(id="0190", try_number=1, **{"xcom_push": FakeTi({}).xcom_push, "pushed": {}})
    with pytest.raises(AirflowFailException, match="'admin', who is not in RELENG_APPROVERS"):
        op.execute_complete({**_ctx("r1", ti), "task": op}, event)
    assert approval.load_decision(_state(staged), "r1") is None
    refused = json.loads((staged.production_root / ".releng" / "promotion-log.jsonl").read_text().splitlines()[-1])
    assert refused["event"] == "refused" and refused["task_id"] == "approve_promotion"

    event["responded_by_user"] = {"id": "approver", "name": "approver"}
    ti = FakeTi({})
    ti.id, ti.try_number = "0191", 1
    with pytest.raises(AirflowFailException, match="no longer matches this run's report"):
        op.execute_complete({**_ctx("r1", ti), "task": op}, event)  # not the task instance that asked
    approval.approval_request(_state(staged), "r1", "0191")
    op.execute_complete({**_ctx("r1", ti), "task": op}, event)
    decision = approval.load_decision(_state(staged), "r1")
    assert decision["choice"] == "Approve" and decision["decided_by"] == {"id": "approver", "name": "approver"}
    assert decision["decided_at"] == "2026-01-02T00:00:00+00:00" and decision["ti_id"] == "0191"


@pytest.mark.parametrize("decision", [None, "Reject", "forged-xcom"])
def test_phases_refuse_without_a_recorded_approval(staged, decision, monkeypatch):
    monkeypatch.setenv("RELENG_APPROVERS", "approver")
    settings.cache_clear()
    report = ops.PromotionReportOperator(task_id="change_report").execute(
        {**_report_context({"release": "el9", "rc": True}), "run_id": "r2"})
    record = approval.run_record(_state(staged), "r2")
    if decision == "Reject":
        approval.record_decision(_state(staged), record, chosen_options=["Reject"],
                                     responded_by={"id": "approver", "name": "approver"}, responded_at=None,
                                     response_received=True, approvers=("approver",), task={})
    forged = {("change_report", "return_value"): report,
              ("approve_promotion", "decision"): {"chosen_options": ["Approve"],
                                                  "responded_by_user": {"id": "approver", "name": "approver"}}}
    with pytest.raises(AirflowFailException, match=r"refused: .*(no answer|answered 'Reject')"):
        ops.PromotePhaseOperator(task_id="promote_payload", phase="payload").execute(_ctx("r2", FakeTi(forged)))
    assert not (staged.production_root / "mirror").exists()
    log = (staged.production_root / ".releng" / "promotion-log.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["event"] == "refused"


def test_audit_record_is_appended_once(staged):
    op = ops.PromotionReportOperator(task_id="change_report")
    report = op.execute({**_report_context({"release": "el9", "rc": True}), "run_id": "r1"})
    record = approval.run_record(_state(staged), "r1")
    approval.record_decision(_state(staged), record, chosen_options=["Reject"], responded_by=None,
                                 responded_at="2026-01-02T00:00:00+00:00", response_received=True,
                                 approvers=("approver",), task={})
    ctx = _ctx("r1")
    audit = ops.RecordPromotionOperator(task_id="record_promotion")
    assert audit.execute(ctx)["outcome"] == "timed out (default: Reject)"
    with pytest.raises(AirflowSkipException, match="nothing to record"):
        audit.execute(ctx)  # the run is closed: a retry of the audit task does not add a line
    lines = (staged.production_root / ".releng" / "promotion-log.jsonl").read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["digest"] == report["digest"] and entry["decision"] == "Reject" and entry["decided_by"] is None
    op.execute({**_report_context({"release": "el9", "rc": True, "dry_run": True}), "run_id": "r3"})
    with pytest.raises(AirflowSkipException, match="nothing to record"):
        audit.execute(_ctx("r3"))
