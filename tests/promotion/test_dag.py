"""promote_to_production end to end with ``dag.test()``, real rsync, gpg, createrepo_c and dnf.

The DAG runs in the main thread (``dag.test()`` installs signal handlers); the approver answers from a
helper thread through the REST app, as a person would through the API, two seconds after the task parks
(an answer within about 1 s of parking can race Airflow 3.3.2's scheduler and retry the task).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from releng.core import dnf, filelist
from releng.core.settings import settings
from tests.notifytargets import smtp_server, webhook  # noqa: F401 (fixtures)
from tests.promotion.conftest import build_rpm, change_checksum_file, fixture_signer, tree_digest, update_repo

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "promote_to_production"
APPROVAL = "approve_promotion"
PROMOTION_TASKS = ("promote_payload", "promote_metadata", "promote_deletions", "verify_production",
                   "update_file_lists")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("airflow_db")]


def load_dag(dag_id: str = DAG_ID):
    """Parse the DAG now, so it sees this test's RELENG_* settings (approvers, timeout, profiles)."""
    from airflow.dag_processing.dagbag import DagBag

    settings.cache_clear()
    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


def _parked_run_id(deadline: float, dag_id: str = DAG_ID, stopped=lambda: False) -> str | None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    while time.monotonic() < deadline and not stopped():
        with create_session() as s:
            ti = s.query(TaskInstance).filter_by(dag_id=dag_id, task_id=APPROVAL, state="awaiting_input").first()
            if ti:
                return ti.run_id
        time.sleep(0.3)
    return None


def _patch_as(client, run_id: str, user: str, role: str, decision: str, dag_id: str = DAG_ID):
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=user, role=role))
    url = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{APPROVAL}/-1/hitlDetails"
    return client.patch(url, json={"chosen_options": [decision], "params_input": {}},
                        headers={"Authorization": f"Bearer {token}"})


def respond(decision: str, out: dict, *, during=None, also_try_as_admin: bool = False,
            dag_id: str = DAG_ID) -> threading.Thread:
    """Answer the approval through the REST API once it is parked; optionally first as ``admin`` (not assigned).

    A test whose run must never park sets ``out["stop"]`` and joins the thread, so the waiting approver does not
    answer a later test's request."""

    def work():
        from airflow.api_fastapi.app import create_app
        from fastapi.testclient import TestClient

        run_id = _parked_run_id(time.monotonic() + 120, dag_id, stopped=lambda: bool(out.get("stop")))
        if run_id is None:
            out["error"] = "the approval task never reached awaiting_input"
            return
        time.sleep(2)  # the fast-approval race: a real approver is never this quick
        if during is not None:
            during()
        client = TestClient(create_app(apps="core"))
        if also_try_as_admin:
            r = _patch_as(client, run_id, "admin", "admin", decision, dag_id)
            out["admin"] = (r.status_code, r.text)
        r = _patch_as(client, run_id, "approver", "user", decision, dag_id)
        out["approver"] = (r.status_code, r.text)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def states(dr) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dr.get_task_instances()}


def audit_lines(trees) -> list[dict]:
    log = trees.production_root / ".releng" / "promotion-log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def dnf_packages(production_repo: Path, key: Path, work: Path) -> set[str]:
    """What dnf (hermetic config, repo and package signatures checked) sees in a production repository."""
    ws = dnf.DnfWorkspace(work)
    ws.root.mkdir(parents=True)
    ws.config.write_text(dnf.dnf_config(ws, [dnf.DnfRepo("prod", f"file://{production_repo}")], [key]))
    for argv in (dnf.rpm_initdb_argv(ws), dnf.rpm_import_argv(ws, key)):
        subprocess.run(argv, check=True, capture_output=True)
    base = ["dnf", "-y", "-c", str(ws.config), f"--installroot={ws.installroot}", "--releasever=9",
            "--setopt=module_platform_id=platform:el9", "--forcearch=x86_64"]
    try:
        out = subprocess.run([*base, "repoquery", "--repo=prod", "--qf", "%{name}-%{version}-%{release}.%{arch}"],
                             capture_output=True, text=True)
        dest = work / "download"
        got = subprocess.run([*base, "download", "--repo=prod", "--destdir", str(dest), "foo-data"],
                             capture_output=True, text=True)
    finally:
        dnf.stop_gpg_agents(ws)  # the agent of dnf's key import (repo_gpgcheck) outlives dnf
    assert out.returncode == 0, out.stderr
    assert got.returncode == 0, got.stderr  # gpgcheck=1: the downloaded package's signature verified
    return {line for line in out.stdout.splitlines() if line.strip()}


def test_approved_promotion_makes_production_equal_staging(staged, el9, fixture_buildsystem, tmp_path,
                                                           monkeypatch, smtp_server, webhook):  # noqa: F811
    home, fpr = fixture_signer(fixture_buildsystem, tmp_path)
    monkeypatch.setenv("RELENG_REPO_SIGNING_KEY", fpr)
    monkeypatch.setenv("RELENG_GNUPGHOME", str(home))
    # notifications by mail and webhook; a hand-off command that notes each call
    monkeypatch.setenv("RELENG_NOTIFY_EMAIL", "releng@example.org")
    monkeypatch.setenv("RELENG_NOTIFY_APPROVERS_EMAIL", "approvers@example.org")
    monkeypatch.setenv("RELENG_NOTIFY_WEBHOOK", webhook.url)
    monkeypatch.setenv("RELENG_AIRFLOW_URL", "https://airflow.example.org")
    calls = tmp_path / "handoff-calls"
    monkeypatch.setenv("RELENG_MIRROR_HANDOFF_COMMAND",
                       f"sh -c 'echo \"$RELENG_HANDOFF_RELEASE\" {{release}} {{production_dir}} >> {calls}; "
                       "echo handed off'")
    dag = load_dag()

    # first promotion: the RC staging tree into an empty production
    out: dict = {}
    respond("Approve", out, also_try_as_admin=True).join(0)
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    assert out.get("admin", (None,))[0] == 403, out  # admin is not an assigned approver
    assert "not a respondent" in out["admin"][1]
    assert out.get("approver", (None,))[0] == 200, out
    assert dr.state == "success", states(dr)
    assert all(states(dr)[t] == "success" for t in (APPROVAL, *PROMOTION_TASKS, "mirror_handoff", "record_promotion"))
    assert tree_digest(staged.production) == tree_digest(staged.staging)
    # the approvers were asked by mail, with the report and the link to the Required Actions page
    first_run = dr.run_id
    asked = [m for m in smtp_server.messages if m["X-Releng-Event"] == "approval_waiting"]
    assert [m.envelope_to for m in asked] == [["approvers@example.org"]]
    link = (f"https://airflow.example.org/dags/{DAG_ID}/runs/{quote(first_run, safe='')}/tasks/{APPROVAL}"
            "/required_actions")
    text = smtp_server.text(asked[0])
    assert link in text and "Report digest" in text and "| repository | arch |" in text
    # staging was vetted before they were asked, and the vetting table is in the request
    assert "### Vetting" in text and "checks passed or were skipped" in text and "FAILED" not in text
    for row in ("| iso md5 | isos/x86_64/Rocky-9.7-RC1-x86_64-boot.iso | passed |",
                "| iso boot | isos/x86_64/Rocky-9.7-RC1-x86_64-boot.iso | passed |",
                "| install | x86_64: @core | passed |", "| install | aarch64: @core | passed |",
                "| repoclosure | AppStream x86_64 | passed |", "| CHECKSUM | isos/x86_64/CHECKSUM | passed |"):
        assert row in text, row
    assert webhook.by_event("approval_waiting")[0]["data"]["url"] == link

    # a general update lands in staging: foo-data 1.1 in AppStream x86_64, new signed repodata
    repo = staged.staging / "AppStream" / "x86_64" / "os"
    update_repo(repo, [build_rpm(tmp_path, "foo-data", "1.1", gnupghome=home, fpr=fpr)], gnupghome=home, fpr=fpr)
    out = {}
    respond("Approve", out).join(0)
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    assert out.get("approver", (None,))[0] == 200, out
    assert dr.state == "success", states(dr)
    assert tree_digest(staged.production) == tree_digest(staged.staging)

    report = dr.get_task_instance("change_report").xcom_pull(task_ids="change_report")
    assert report["totals"]["packages"] == {"added": 0, "updated": 1, "removed": 0}
    assert "foo-data-1.0-1.el9.noarch → foo-data-1.1-1.el9.noarch (AppStream x86_64 os)" in report["markdown"]

    # the file lists describe production exactly
    text = (staged.category / "fullfiletimelist-rocky").read_text()
    listed = {e.path: e for e in filelist.parse_timelist(text).files}
    on_disk = [p for p in staged.category.rglob("*")
               if p.name not in ("fullfilelist", "fullfiletimelist-rocky", "imagelist-rocky")]
    assert set(listed) == {str(p.relative_to(staged.category)) for p in on_disk}
    for path in on_disk:
        st = path.lstat()
        entry = listed[str(path.relative_to(staged.category))]
        assert entry.type == ("l" if path.is_symlink() else "d" if path.is_dir() else "f")
        assert entry.size == st.st_size
        assert entry.mtime == max(st.st_mtime_ns, st.st_ctime_ns) // 10**9
    assert (staged.category / "fullfilelist").read_text().splitlines() == [f"./{p}" for p in listed]

    # the audit log has both promotions with the approver, digest and what was copied
    audit = audit_lines(staged)
    assert [a["outcome"] for a in audit] == ["promoted", "promoted"]
    assert audit[1]["decided_by"]["id"] == "approver" and audit[1]["digest"] == report["digest"]
    assert audit[1]["phases"]["payload"]["files"] == 1
    assert audit[1]["phases"]["metadata"]["files"] >= 2
    assert audit[1]["phases"]["deletions"]["files"] >= 1  # the superseded repodata files

    # the hand-off ran once per promotion, after the file lists, with the promoted release; release engineering
    # heard of both promotions
    assert calls.read_text().splitlines() == [f"el9 el9 {staged.production}"] * 2
    assert audit[1]["mirror_handoff"]["command"]["attempts"] == 1
    assert [m.envelope_to for m in smtp_server.messages if m["X-Releng-Event"] == "promotion_promoted"] == [
        ["releng@example.org"]] * 2
    assert webhook.events() == ["approval_waiting", "promotion_promoted"] * 2
    assert webhook.by_event("promotion_promoted")[1]["data"]["digest"] == report["digest"]


    # dnf reads production and sees the new version next to the old one (update syncs keep old packages);
    # last, because librepo hard-links file:// packages into its download dir, which moves their ctime
    pkgs = dnf_packages(staged.production / "AppStream" / "x86_64" / "os",
                        fixture_buildsystem.key_dir / el9.gpg_keys[0], tmp_path / "dnf")
    assert {"foo-data-1.0-1.el9.noarch", "foo-data-1.1-1.el9.noarch", "foo-app-2.1-3.el9.x86_64"} <= pkgs

def test_reject_leaves_production_byte_identical(staged, webhook, monkeypatch, tmp_path, capfd):  # noqa: F811
    monkeypatch.setenv("RELENG_NOTIFY_WEBHOOK", webhook.url)
    # the first promotion's mirror hand-off fails: the task fails, the promotion stands
    monkeypatch.setenv("RELENG_MIRROR_HANDOFF_COMMAND", f"sh -c 'echo pushing {{release}}; echo x >> {tmp_path}/tries; "
                                                        "echo mirror master unreachable >&2; exit 3'")
    monkeypatch.setenv("RELENG_MIRROR_HANDOFF_ATTEMPTS", "2")
    monkeypatch.setenv("RELENG_MIRROR_HANDOFF_RETRY_DELAY", "0")
    dag = load_dag()
    out: dict = {}
    respond("Approve", out).join(0)
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    s = states(dr)
    assert dr.state == "failed" and s["mirror_handoff"] == "failed", s
    assert all(s[t] == "success" for t in (*PROMOTION_TASKS, "record_promotion")), s
    assert tree_digest(staged.production) == tree_digest(staged.staging)  # production keeps the promotion
    assert (tmp_path / "tries").read_text() == "x\nx\n"
    log = capfd.readouterr().out
    assert "| pushing el9" in log and "mirror hand-off failed 2 time(s)" in log and "exited 3" in log
    assert audit_lines(staged)[-1]["outcome"] == "promoted" and audit_lines(staged)[-1]["mirror_handoff"] is None
    assert webhook.events() == ["approval_waiting", "promotion_promoted"]
    change_checksum_file(staged)
    before = tree_digest(staged.category, strict=True)

    out = {}
    respond("Reject", out).join(0)
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    assert out.get("approver", (None,))[0] == 200, out
    s = states(dr)
    assert s[APPROVAL] == "success" and all(s[t] == "skipped" for t in PROMOTION_TASKS), s
    assert tree_digest(staged.category, strict=True) == before
    assert audit_lines(staged)[-1]["outcome"] == "rejected"
    assert audit_lines(staged)[-1]["decided_by"]["id"] == "approver"
    assert s["mirror_handoff"] == "skipped" and (tmp_path / "tries").read_text() == "x\nx\n"  # no hand-off
    assert webhook.events()[2:] == ["approval_waiting", "promotion_rejected"]
    assert webhook.by_event("promotion_rejected")[0]["data"]["decided_by"] == "approver"


def _expire_approval_as_the_scheduler_would(out: dict, dag_id: str = DAG_ID) -> threading.Thread:
    """Wait for the approval to park, check its deadline, move it into the past and run the scheduler's sweep.

    ``dag.test()`` runs no scheduler, so nothing applies response_timeout there; this calls
    the scheduler's own ``check_awaiting_input_timeouts``, which writes the request's defaults as the answer.
    """

    def work():
        import logging
        from datetime import UTC, datetime
        from types import SimpleNamespace

        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        run_id = _parked_run_id(time.monotonic() + 120, dag_id)
        if run_id is None:
            out["error"] = "never parked"
            return
        with create_session() as s:
            ti = s.query(TaskInstance).filter_by(dag_id=dag_id, task_id=APPROVAL, run_id=run_id).one()
            out["deadline_in"] = ti.trigger_timeout - datetime.now(UTC)
            ti.trigger_timeout = datetime.now(UTC) - timedelta(seconds=1)
        with create_session() as s:
            SchedulerJobRunner.check_awaiting_input_timeouts(SimpleNamespace(log=logging.getLogger("sweep")),
                                                             session=s)
        out["swept"] = True

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_timeout_rejects_by_default_and_leaves_production_untouched(staged, monkeypatch):
    monkeypatch.setenv("RELENG_APPROVAL_TIMEOUT_HOURS", "6")
    dag = load_dag()
    approval = dag.get_task(APPROVAL)
    assert approval.defaults == ["Reject"] and approval.response_timeout == timedelta(hours=6)
    out: dict = {}
    _expire_approval_as_the_scheduler_would(out).join(0)
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    assert out.get("swept"), out
    assert timedelta(hours=5, minutes=59) < out["deadline_in"] <= timedelta(hours=6)  # the configured timeout
    s = states(dr)
    assert s[APPROVAL] == "success" and all(s[t] == "skipped" for t in PROMOTION_TASKS), s
    assert not (staged.production_root / "mirror").exists()  # only the promotion state (.releng) was written
    entry = audit_lines(staged)[-1]
    assert entry["outcome"] == "timed out (default: Reject)" and entry["decided_by"] is None


def test_dry_run_reports_without_approval_and_changes_nothing(staged):
    dag = load_dag()
    dr = dag.test(run_conf={"release": "el9", "rc": True, "dry_run": True})
    s = states(dr)
    assert dr.state == "success", s
    assert s["change_report"] == "success" and s[APPROVAL] == "skipped"
    assert all(s[t] == "skipped" for t in PROMOTION_TASKS)
    assert not staged.production.exists()  # the old dry-run script still ran mkdir -p on the target
    assert not (staged.production_root / "mirror").exists()
    report = dr.get_task_instance("change_report").xcom_pull(task_ids="change_report")
    record = json.loads(Path(report["record"]).read_text())
    assert record["dry_run"] is True and record["digest"] == report["digest"]
    assert any(i["path"] == "BaseOS/x86_64/os/repodata/repomd.xml" and i["code"].startswith(">f")
               for i in record["items"])  # the rsync itemization is in the record
    assert "_Dry run: nothing will be promoted._" in report["markdown"]
    assert audit_lines(staged) == []


def test_delete_bound_refuses_an_emptied_staging_tree_unless_allowed(staged):
    dag = load_dag()
    out: dict = {}
    respond("Approve", out).join(0)
    assert dag.test(run_conf={"release": "el9", "rc": True}).state == "success"
    for child in staged.staging.iterdir():  # staging emptied, e.g. a failed compose synced with --delete
        subprocess.run(["rm", "-rf", str(child)], check=True)
    before = tree_digest(staged.category, strict=True)

    dr = dag.test(run_conf={"release": "el9", "rc": True})
    s = states(dr)
    assert dr.state == "failed" and s["change_report"] == "failed", s
    assert s[APPROVAL] == "upstream_failed" and all(s[t] == "upstream_failed" for t in PROMOTION_TASKS)
    assert tree_digest(staged.category, strict=True) == before

    out = {}
    respond("Approve", out).join(0)
    dr = dag.test(run_conf={"release": "el9", "rc": True, "allow_large_delete": True})
    assert out.get("approver", (None,))[0] == 200, out
    assert dr.state == "success", states(dr)
    assert states(dr)["mirror_handoff"] == "skipped"  # no hand-off configured: skipped, the run succeeds
    assert tree_digest(staged.production) == tree_digest(staged.staging)
    assert list(staged.production.iterdir()) == []
    assert audit_lines(staged)[-1]["phases"]["deletions"]["files"] > 80


def test_empty_approvers_refuse_at_run_time(staged, monkeypatch):
    monkeypatch.setenv("RELENG_APPROVERS", "")
    dag = load_dag()  # parsing works: the refusal is a run-time error, not an import error
    assert dag.get_task(APPROVAL).assigned_users == []
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    s = states(dr)
    assert s["change_report"] == "success" and s[APPROVAL] == "failed", s
    assert all(s[t] == "upstream_failed" for t in PROMOTION_TASKS)
    assert not staged.production.exists()
