"""Vetting before anyone is asked: a broken DVD and a package that cannot install stop the promotion before
the approval, named in the run and in release engineering's notification; ``vetting_override`` asks anyway
and is in the audit log and the approval request; the verdict cannot be forged through XComs or task states.

Real tools throughout: checkisomd5/implantisomd5, xorriso, QEMU, dnf, rpm, rpmbuild, gpg, sha256sum.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from airflow.sdk.exceptions import AirflowFailException

from releng.core.checksums import file_digest
from releng.core.gpg import agent_session
from releng.core.promotion import approval, vetting
from releng.core.promotion.target import StateDir
from releng.core.settings import settings
from releng.operators import promotion as ops
from tests.notifytargets import smtp_server, webhook  # noqa: F401 (fixtures)
from tests.promotion.conftest import fixture_signer, tree_digest, update_repo
from tests.promotion.test_dag import APPROVAL, DAG_ID, PROMOTION_TASKS, audit_lines, load_dag, respond, states

ISO = "isos/x86_64/Rocky-9.7-RC1-x86_64-boot.iso"


def _notify_to(monkeypatch, webhook) -> None:  # noqa: F811
    monkeypatch.setenv("RELENG_NOTIFY_EMAIL", "releng@example.org")
    monkeypatch.setenv("RELENG_NOTIFY_WEBHOOK", webhook.url)
    monkeypatch.setenv("RELENG_AIRFLOW_URL", "https://airflow.example.org")


def corrupt_boot_image(iso: Path) -> None:
    """Overwrite the BIOS El Torito boot image (ISOLINUX) inside the ISO, then implant a new media MD5 and
    rewrite the CHECKSUM line, so only booting can tell: the ISO is still readable and its entries still there."""
    report = subprocess.run(["xorriso", "-indev", str(iso), "-report_el_torito", "plain"], capture_output=True,
                            text=True, check=True).stdout
    lba = int(re.search(r"El Torito boot img :\s+1\s+BIOS\s+\S+\s+\S+\s+\S+\s+\S+\s+\d+\s+(\d+)", report)[1])
    with open(iso, "r+b") as f:
        f.seek(lba * 2048 + 64)
        f.write(b"\xff" * 1024)
    subprocess.run(["implantisomd5", "-f", "--supported-iso", str(iso)], check=True, capture_output=True)
    checksum = iso.parent / "CHECKSUM"
    checksum.write_text(f"SHA256 ({iso.name}) = {file_digest(iso)}\n")


def build_conflicting_sh(workdir: Path, gnupghome: Path, fpr: str) -> Path:
    """fixture-sh 2.0 (x86_64, in group core): provides /bin/sh as 1.0 does, so repoclosure still passes, but
    ships /usr/share/fixture/libfoo.txt, which libfoo (also in core) owns: the transaction cannot install."""
    top = workdir / "rpmbuild-fixture-sh"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS" / "fixture-sh.spec"
    spec.write_text(textwrap.dedent("""\
        Name: fixture-sh
        Version: 2.0
        Release: 1.el9
        Summary: a /bin/sh provider whose file clashes with libfoo
        License: MIT
        Provides: /bin/sh
        AutoReqProv: no
        %global debug_package %{nil}
        %description
        Clashes with libfoo.
        %install
        mkdir -p %{buildroot}/usr/share/fixture
        echo clash > %{buildroot}/usr/share/fixture/libfoo.txt
        %files
        /usr/share/fixture/libfoo.txt
        """))
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--target", "x86_64", "--define", f"_topdir {top}", str(spec)],
                   check=True, capture_output=True)
    rpm = next((top / "RPMS" / "x86_64").glob("*.rpm"))
    with agent_session(gnupghome):
        subprocess.run(["rpmsign", "--define", "__gpg /usr/bin/gpg", "--define", f"_gpg_name {fpr}", "--addsign",
                        str(rpm)], check=True, capture_output=True, stdin=subprocess.DEVNULL,
                       env={"GNUPGHOME": str(gnupghome), "PATH": "/usr/bin:/bin"})
    return rpm


def _hitl_body(run_id: str) -> str:
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="approver", role="user"))
    r = TestClient(create_app(apps="core")).get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{APPROVAL}/-1/hitlDetails",
        headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()["body"]


def _vet_states(dr) -> dict[str, str]:
    return {ti.rendered_map_index: ti.state for ti in dr.get_task_instances() if ti.task_id == "vet_staging"}


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("airflow_db")]


def test_broken_dvd_stops_the_promotion_before_anyone_is_asked(staged, monkeypatch, smtp_server, webhook,  # noqa: F811
                                                               capfd):
    _notify_to(monkeypatch, webhook)
    monkeypatch.setenv("RELENG_VETTING_BOOT_TIMEOUT", "15")
    corrupt_boot_image(staged.staging / ISO)
    dag = load_dag()
    out: dict = {}
    approver = respond("Approve", out)  # an approver ready to answer: there must be nothing to answer
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    out["stop"] = True  # and gone before the next test parks a request
    approver.join(30)
    s = states(dr)
    assert dr.state == "failed" and s["vetting_verdict"] == "failed", s
    assert s[APPROVAL] == "upstream_failed" and all(s[t] == "upstream_failed" for t in PROMOTION_TASKS), s
    assert "approver" not in out  # never parked, never asked
    vets = _vet_states(dr)
    assert vets[f"isos {ISO}"] == "failed", vets  # the grid names the failing check
    assert all(state == "success" for name, state in vets.items() if name != f"isos {ISO}"), vets
    assert not staged.production.exists()

    log = capfd.readouterr().out
    assert f"VETTING FAILED: iso boot {ISO}" in log
    assert f"vetting failed: iso boot {ISO}. Nobody is asked" in log  # the verdict task's error
    assert "checkisomd5: The media check is complete, the result is: PASS" in log  # only booting told
    verdict = json.loads(vetting.verdict_file(StateDir(staged.production_root / ".releng"), dr.run_id).read_text())
    assert verdict["status"] == "failed" and verdict["failed"] == [f"iso boot {ISO}"]
    entry = audit_lines(staged)[-1]
    assert entry["outcome"].startswith(f"not asked: vetting failed (iso boot {ISO})"), entry
    assert entry["vetting"]["failed"] == [f"iso boot {ISO}"] and entry["decided_by"] is None
    # release engineering is told which check failed, by mail and webhook
    assert webhook.events() == ["promotion_vetting_failed"]
    assert webhook.by_event("promotion_vetting_failed")[0]["data"]["failed_checks"] == [f"iso boot {ISO}"]
    mail = [m for m in smtp_server.messages if m["X-Releng-Event"] == "promotion_vetting_failed"]
    assert [m.envelope_to for m in mail] == [["releng@example.org"]]
    assert f"failed checks: iso boot {ISO}" in smtp_server.text(mail[0])


def test_a_package_that_cannot_install_stops_the_promotion_and_the_override_asks_anyway(
        staged, fixture_buildsystem, tmp_path, monkeypatch, smtp_server, webhook):  # noqa: F811
    _notify_to(monkeypatch, webhook)
    home, fpr = fixture_signer(fixture_buildsystem, tmp_path)
    update_repo(staged.staging / "BaseOS" / "x86_64" / "os", [build_conflicting_sh(tmp_path, home, fpr)],
                gnupghome=home, fpr=fpr)
    dag = load_dag()
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    s = states(dr)
    assert dr.state == "failed" and s["vetting_verdict"] == "failed" and s[APPROVAL] == "upstream_failed", s
    vets = _vet_states(dr)
    assert vets["install x86_64"] == "failed" and vets["repoclosure x86_64"] == "success", vets
    assert vets["install aarch64"] == "success", vets
    entry = audit_lines(staged)[-1]
    assert entry["vetting"]["failed"] == ["install x86_64: @core"], entry
    verdict = json.loads(vetting.verdict_file(StateDir(staged.production_root / ".releng"), dr.run_id).read_text())
    install = next(r for r in verdict["rows"] if r["check"] == "install" and r["target"].startswith("x86_64"))
    assert "libfoo.txt" in install["detail"] and "conflicts" in install["detail"], install
    assert webhook.by_event("promotion_vetting_failed")[0]["data"]["failed_checks"] == ["install x86_64: @core"]
    assert not staged.production.exists()

    # a release engineer asks anyway: the approver sees the failed vetting, the override is in the audit log
    out: dict = {}
    respond("Approve", out, during=lambda: out.setdefault("body", _hitl_body(_parked()))).join(0)
    dr = dag.test(run_conf={"release": "el9", "rc": True, "vetting_override": True})
    assert out.get("approver", (None,))[0] == 200, out
    assert dr.state == "success", states(dr)
    body = out["body"]
    assert "### Vetting" in body and "**VETTING FAILED: 1 of" in body and "`vetting_override`" in body
    assert "| install | x86_64: @core | **FAILED** |" in body and f"| iso boot | {ISO} | passed |" in body
    assert tree_digest(staged.production) == tree_digest(staged.staging)
    log = audit_lines(staged)
    override = [e for e in log if e["event"] == "vetting_override"]
    assert [e["failed"] for e in override] == [["install x86_64: @core"]] and override[0]["run_id"] == dr.run_id
    assert log[-1]["outcome"] == "promoted" and log[-1]["vetting"]["status"] == "overridden"
    assert log[-1]["decided_by"]["id"] == "approver"
    promoted = webhook.by_event("promotion_promoted")[0]
    assert promoted["data"]["vetting"] == "overridden" and "vetting_override" in promoted["text"]


def _parked() -> str:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as s:
        return s.query(TaskInstance).filter_by(dag_id=DAG_ID, task_id=APPROVAL, state="awaiting_input").one().run_id


# --- the verdict is read from the gate's files, never from XComs ----------------------------------------------


def _ctx(run_id: str, **extra) -> dict:
    return {"run_id": run_id, "dag": SimpleNamespace(dag_id=DAG_ID), "params": {}, "ti": SimpleNamespace(id="t1"),
            "task": SimpleNamespace(task_id="vet_staging"), **extra}


def test_the_approval_and_the_checks_act_only_on_the_gates_files(staged):
    from tests.promotion.test_operators import _approval, _report_context

    settings.cache_clear()
    state = StateDir(staged.production_root / ".releng")
    ops.PromotionReportOperator(task_id="change_report").execute({**_report_context({"release": "el9", "rc": True}),
                                                                  "run_id": "r1"})
    approver = _approval(assigned_users=[{"id": "approver", "name": "approver"}])
    # vetting_verdict marked success by hand: no verdict file, so nobody is asked
    with pytest.raises(AirflowFailException, match="has no vetting verdict"):
        approver.execute(_ctx("r1"))
    assert not approval.asked_file(state, "r1").exists()
    checks = ops.PlanVettingOperator(task_id="plan_vetting").execute(_ctx("r1"))
    assert {"kind": "isos", "target": ISO} in checks and {"kind": "install", "target": "x86_64"} in checks
    # a check whose target was changed through the XComs is refused: only the plan file's checks run
    with pytest.raises(AirflowFailException, match="not a check of run r1's vetting plan"):
        ops.VetOperator(task_id="vet_staging", kind="isos", target="../../../etc/passwd").execute(_ctx("r1"))
    # the verdict counts a planned check without a result as failed; the approval refuses a failed verdict
    for check in checks:
        if check["kind"] != "isos":
            ops.VetOperator(task_id="vet_staging", **check).execute(_ctx("r1"))
    with pytest.raises(AirflowFailException, match=f"vetting failed: isos {ISO}"):
        ops.VettingVerdictOperator(task_id="vetting_verdict").execute(_ctx("r1"))
    with pytest.raises(AirflowFailException, match=r"refused: vetting failed \(isos "):
        approver.execute(_ctx("r1"))
    assert not approval.asked_file(state, "r1").exists()
    # a report made again (new digest) is not vetted by the old verdict
    assert vetting.load_verdict(state, "r1", "sha256:other") is None
