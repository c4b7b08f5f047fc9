"""point_release end to end with ``dag.test()``: 9.6 in production, 9.7-RC1 staged (the fixture build system's signed
el9 repos, relabelled), real rsync, gpg, createrepo_c metadata and dnf.

Rejected and unanswered runs change nothing; the approved run puts 9.7 and its links in place and 9.6 in the vault
as hard links to the same inodes; a run that fails in vault_release is converged by the next run; a rerun after
success has nothing to approve and changes nothing; the SIG category's lists are never rewritten.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from releng.core import dnf, filelist
from releng.core.point_release import vault_release
from tests.promotion.conftest import fixture_signer, tree_digest
from tests.promotion.test_dag import _expire_approval_as_the_scheduler_would, audit_lines, load_dag, respond, states

DAG_ID = "point_release"
RELEASE_TASKS = ("promote_payload", "promote_metadata", "promote_deletions", "verify_production", "switch_links",
                 "vault_release", "update_file_lists")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("airflow_db")]


def _du(*paths: Path) -> int:
    """Apparent bytes of everything under ``paths``, each inode counted once (du's rule for hard links)."""
    out = subprocess.run(["du", "-s", "-c", "--bytes", *map(str, paths)], capture_output=True, text=True, check=True)
    return int(out.stdout.splitlines()[-1].split()[0])


def _inodes(tree: Path) -> dict[str, int]:
    return {str(p.relative_to(tree)): p.lstat().st_ino for p in tree.rglob("*")
            if p.is_file() and not p.is_symlink() and "repodata" not in p.relative_to(tree).parts}


def _list_bytes(tree: Path) -> int:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.name.startswith(("fullfile", "imagelist")))


def _lists(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(directory.iterdir())
            if p.name.startswith(("fullfile", "imagelist"))}


@pytest.fixture
def release_day(staged, fixture_buildsystem, tmp_path, monkeypatch):
    """Production holds 9.6 (the staged tree relabelled, as promote_to_production left it) with ``9`` and
    ``latest-9`` pointing at it, a SIG category with its lists, and the lists of every category; 9.7-RC1 is
    staged. Signing is on with the key that signed the repos."""
    home, fpr = fixture_signer(fixture_buildsystem, tmp_path)
    monkeypatch.setenv("RELENG_REPO_SIGNING_KEY", fpr)
    monkeypatch.setenv("RELENG_GNUPGHOME", str(home))
    category = staged.category
    old = category / "9.6"
    category.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(staged.staging), str(old)], check=True)  # -a keeps os/kickstart hard links
    isos = old / "isos" / "x86_64"
    (isos / "Rocky-9.7-RC1-x86_64-boot.iso").rename(isos / "Rocky-9.6-x86_64-boot.iso")
    (isos / "Rocky-9-latest-x86_64-boot.iso").unlink()
    (isos / "Rocky-9-latest-x86_64-boot.iso").symlink_to("Rocky-9.6-x86_64-boot.iso")
    for name in ("9", "latest-9"):
        (category / name).symlink_to("9.6")
    sig = staged.production_root / "mirror" / "pub" / "sig" / "9" / "kernel" / "x86_64"
    sig.mkdir(parents=True)
    (sig / "kernel-6.12-1.el9.x86_64.rpm").write_bytes(b"k" * 4096)
    for directory, name in ((staged.production_root / "mirror" / "pub" / "sig", "sig"), (category, "rocky"),
                            (staged.production_root, "rocky")):
        filelist.publish(directory, name, skip={".releng"})
    return staged


def _vault_dnf(vault_repo: Path, key: Path, work: Path) -> set[str]:
    """What real dnf resolves from a vault repository given with --repofrompath (package and repo signatures
    checked against ``key``)."""
    ws = dnf.DnfWorkspace(work)
    ws.root.mkdir(parents=True)
    ws.config.write_text(dnf.dnf_config(ws, [], [key]))
    for argv in (dnf.rpm_initdb_argv(ws), dnf.rpm_import_argv(ws, key)):
        subprocess.run(argv, check=True, capture_output=True)
    base = ["dnf", "-y", "-c", str(ws.config), f"--installroot={ws.installroot}", "--releasever=9",
            "--setopt=module_platform_id=platform:el9", "--forcearch=x86_64",
            f"--repofrompath=vault,file://{vault_repo}", "--repo=vault", f"--setopt=vault.gpgkey=file://{key}"]
    try:
        query = subprocess.run([*base, "repoquery", "--qf", "%{name}-%{version}-%{release}.%{arch}"],
                               capture_output=True, text=True, env=dnf.dnf_env())
        got = subprocess.run([*base, "download", "--destdir", str(work / "download"), "foo-data"],
                             capture_output=True, text=True, env=dnf.dnf_env())
    finally:
        dnf.stop_gpg_agents(ws)
    assert query.returncode == 0, query.stderr
    assert got.returncode == 0, got.stderr  # gpgcheck=1: the package's signature verified
    return {line for line in query.stdout.splitlines() if line.strip()}


def test_point_release_9_6_to_9_7(release_day, el9, fixture_buildsystem, tmp_path, monkeypatch):
    trees = release_day
    production, category = trees.production_root / "mirror", trees.category
    old = category / "9.6"
    vault = trees.production_root / "mirror" / "vault" / "rocky" / "9.6"
    sig_lists = _lists(trees.production_root / "mirror" / "pub" / "sig")
    inodes_96 = _inodes(old)
    repodata_bytes = sum(p.stat().st_size for p in old.rglob("*") if p.is_file() and "repodata" in p.parts)
    du_before = _du(production)
    lists_before = _list_bytes(production)
    dag = load_dag(DAG_ID)

    # rejected, then unanswered (the timeout's default Reject): production is byte-identical, inodes and all
    before = tree_digest(trees.production_root / "mirror", strict=True)
    out: dict = {}
    respond("Reject", out, dag_id=DAG_ID).join(0)
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    assert out.get("approver", (None,))[0] == 200, out
    s = states(dr)
    assert s["approve_promotion"] == "success" and all(s[t] == "skipped" for t in RELEASE_TASKS), s
    out = {}
    _expire_approval_as_the_scheduler_would(out, DAG_ID).join(0)
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    assert out.get("swept"), out
    assert all(states(dr)[t] == "skipped" for t in RELEASE_TASKS), states(dr)
    assert tree_digest(trees.production_root / "mirror", strict=True) == before
    assert not (trees.staging_root / "mirror" / "pub" / "rocky" / "latest-9").exists()  # staging too
    assert [a["outcome"] for a in audit_lines(trees)] == ["rejected", "timed out (default: Reject)"]

    # approved, and vault_release fails after the vault tree is built: 9.7 and the links are in place, 9.6 is
    # still in mirror/pub, and no half vault is visible
    real_sign = vault_release.sign_and_verify

    def crash(*args, **kwargs):
        raise vault_release.VaultError("simulated crash after the vault tree was built")

    monkeypatch.setattr(vault_release, "sign_and_verify", crash)
    out = {}
    respond("Approve", out, dag_id=DAG_ID).join(0)
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    assert out.get("approver", (None,))[0] == 200, out
    s = states(dr)
    assert s["switch_links"] == "success" and s["vault_release"] == "failed", s
    assert old.is_dir() and not vault.exists() and os.readlink(category / "9") == "9.7"
    # the vault tree built so far costs its repodata and directories: du counts the shared inodes once
    work = trees.production_root / ".releng" / "vault-work" / "9.6"
    cost = _du(old, work) - _du(old)
    own = [work, *(p for p in work.rglob("*") if p.is_dir() or p.is_symlink() or "repodata" in p.parts)]
    assert cost == sum(p.lstat().st_size for p in own), cost  # directories, links and repodata: nothing else
    assert repodata_bytes == sum(p.stat().st_size for p in own if p.is_file() and not p.is_symlink())
    assert audit_lines(trees)[-1]["outcome"] == "incomplete: update_file_lists, vault_release did not finish"
    monkeypatch.setattr(vault_release, "sign_and_verify", real_sign)

    # the next run plans only what is left (the vault), and converges
    out = {}
    respond("Approve", out, dag_id=DAG_ID).join(0)
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    assert out.get("approver", (None,))[0] == 200, out
    assert dr.state == "success", states(dr)
    report = dr.get_task_instance("change_report").xcom_pull(task_ids="change_report")
    assert report["changes"] == 0 and f"**Vault**: `{old}` moves to `{vault}`" in report["markdown"]
    assert "| production |" not in report["markdown"]  # the links were switched by the failed run

    # production has 9.7, equal to staging, and its links; staging's links point at 9.7-RC1
    assert tree_digest(category / "9.7") == tree_digest(trees.staging)
    assert {n: os.readlink(category / n) for n in ("9", "latest-9")} == {"9": "9.7", "latest-9": "9.7"}
    staging_category = trees.staging_root / "mirror" / "pub" / "rocky"
    assert {n: os.readlink(staging_category / n) for n in ("9.7", "latest-9")} == {"9.7": "9.7-RC1",
                                                                                      "latest-9": "9.7-RC1"}
    assert not (category / "9.7" / "9.7").exists() and not (trees.staging / "9.7").exists()  # never nested

    # 9.6 is in the vault, out of mirror/pub, its files the same inodes; moving it cost nothing but the two new
    # vault directories (its repodata copies replaced the release's)
    assert not old.exists() and vault.is_dir()
    assert _inodes(vault) == inodes_96
    growth = _du(production) - du_before - _du(category / "9.7") - (_list_bytes(production) - lists_before)
    assert growth <= 3 * 4096, growth
    linked = sum((vault / r).stat().st_size for r in inodes_96)
    assert linked > 3 * repodata_bytes, (linked, repodata_bytes)  # what a second copy would have cost
    assert not list((trees.production_root / ".releng" / "vault-work").iterdir())
    assert not list((trees.production_root / ".releng" / "retired").iterdir())

    # dnf resolves and downloads (signatures checked) from the vault repository
    pkgs = _vault_dnf(vault / "AppStream" / "x86_64" / "os", fixture_buildsystem.key_dir / el9.gpg_keys[0],
                      tmp_path / "dnf")
    assert {"foo-data-1.0-1.el9.noarch", "foo-app-2.1-3.el9.x86_64"} <= pkgs

    # the vault's lists parse back and describe it; the SIG lists were not rewritten (same bytes, mtime, inode)
    vault_top = trees.production_root / "mirror" / "vault"
    parsed = filelist.parse_timelist((vault_top / "fullfiletimelist-vault").read_text())
    listed = {e.path: e for e in parsed.files}
    on_disk = {str(p.relative_to(vault_top)) for p in vault_top.rglob("*")
               if not p.name.startswith(("fullfile", "imagelist"))}
    assert set(listed) == on_disk
    assert "rocky/9.6/BaseOS/x86_64/os/repodata/repomd.xml" in parsed.checksums["SHA1"]
    assert (vault_top / "imagelist-vault").read_text() == "./rocky/9.6/isos/x86_64/Rocky-9-latest-x86_64-boot.iso\n" \
        "./rocky/9.6/isos/x86_64/Rocky-9.6-x86_64-boot.iso\n"
    assert _lists(trees.production_root / "mirror" / "pub" / "sig") == sig_lists
    rocky = filelist.parse_timelist((category / "fullfiletimelist-rocky").read_text())
    assert not [e for e in rocky.files if e.path.startswith("9.6")] and any(e.path == "9" for e in rocky.files)
    root = {e.path for e in filelist.parse_timelist((trees.production_root / "fullfiletimelist-rocky").read_text())
            .files}
    assert "mirror/vault/rocky/9.6/BaseOS/x86_64/os/repodata/repomd.xml" in root
    assert not [p for p in root if p.startswith(".releng")]
    audit = audit_lines(trees)[-1]
    assert audit["outcome"] == "promoted" and audit["point_release"]["vault_release"]["state"] == "vaulted"

    # a rerun has nothing to approve and changes nothing
    before = tree_digest(trees.production_root / "mirror", strict=True)
    staging_before = tree_digest(trees.staging_root / "mirror", strict=True)
    dr = dag.test(run_conf={"release": "el9", "rc": True})
    s = states(dr)
    assert dr.state == "success" and s["approve_promotion"] == "skipped", s
    assert tree_digest(trees.production_root / "mirror", strict=True) == before
    assert tree_digest(trees.staging_root / "mirror", strict=True) == staging_before
