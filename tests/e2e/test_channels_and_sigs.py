"""Every kind of release on the local stack (issue 11): a lookahead compose in its own compose root and staging
directory, refused by promote_to_production before anything is read; a SIG compose staged under
mirror/pub/sig/<major>/<sig> and, approved, promoted there; a repo dropped from the SIG is removed from staging
and production. Real dnf against the fixture build system, rsync, createrepo_c metadata; dag.test() here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from releng.core import dnf, filelist
from releng.core.repo.verify import verify_repo
from tests.dagrun import run_dag
from tests.promotion.conftest import tree_digest
from tests.promotion.test_dag import respond

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]
QUICK = {"arches": ["x86_64"], "full_run": False, "repoclosure": False, "extra_isos": []}


def test_lookahead_compose_stays_in_its_staging_directory_and_is_never_promoted(airflow_db, site, el9lh,
                                                                                 monkeypatch):
    dr, states = run_dag("full_compose", {"release": "el9lh", **QUICK})
    assert dr.state == "success", json.dumps(states, indent=1)

    compose_root = Path(site["RELENG_COMPOSE_ROOT"])
    assert sorted(p.name for p in compose_root.iterdir()) == ["9-LookAhead"]  # never the stable 9/
    (top,) = [p for p in (compose_root / "9-LookAhead").iterdir() if p.name.startswith("Rocky-9.8-")]
    assert (top / "STATUS").read_text().strip() == "FINISHED"
    assert os.readlink(compose_root / "9-LookAhead" / "latest-Rocky-9-lookahead") == top.name

    category = Path(site["RELENG_STAGING_ROOT"]) / "mirror/pub/rocky"
    staged = category / "9.8-LookAhead"
    assert sorted(p.name for p in category.iterdir()) == ["9-LookAhead", "9.8-LookAhead"]  # no latest-9, no 9.8
    assert os.readlink(category / "9-LookAhead") == "9.8-LookAhead"
    for repo in el9lh.repos:
        assert verify_repo(staged / repo.dir / "x86_64" / "os").problems(None) == [], repo.id

    # a rerun of the staging step replaces the link, never makes one inside the directory it points at
    from releng.core.layout import ComposeLayout, ReleaseTrees
    from releng.core.staging.sync_to_staging import stage_compose

    trees = ReleaseTrees(el9lh, Path(site["RELENG_STAGING_ROOT"]), Path(site["RELENG_PRODUCTION_ROOT"]))
    again = stage_compose(ComposeLayout(el9lh, compose_root, top.name), trees, False)
    assert again.links == {"9-LookAhead": "9.8-LookAhead"} and not (staged / "9.8-LookAhead").exists()
    assert sorted(p.name for p in category.iterdir()) == ["9-LookAhead", "9.8-LookAhead"]

    production = Path(site["RELENG_PRODUCTION_ROOT"])
    (production / "mirror/pub/rocky/9.7").mkdir(parents=True)
    (production / "mirror/pub/rocky/9.7/README").write_text("the stable release\n")
    before = tree_digest(production, strict=True)
    rsync_calls = []
    import releng.core.rsync

    real_run = releng.core.rsync.run
    monkeypatch.setattr(releng.core.rsync, "run", lambda *a, **kw: rsync_calls.append(a) or real_run(*a, **kw))
    dr, states = run_dag("promote_to_production", {"release": "el9lh"})
    assert dr.state == "failed"
    assert states["change_report"] == ["failed"] and states["approve_promotion"] == ["upstream_failed"]
    assert rsync_calls == []  # refused before the dry run: nothing of staging or production was read
    assert tree_digest(production, strict=True) == before
    assert not (production / ".releng").exists()  # no record, no lock, no audit line: nothing was started
    lease = Path(site["RELENG_STAGING_ROOT"]) / ".releng" / "staging-lease.json"
    assert not lease.exists() or json.loads(lease.read_text()).get("run_id") != dr.run_id


def dnf_names(repo: Path, key: Path, work: Path) -> set[str]:
    """The package names dnf (hermetic config, repo signature checked) finds in a published SIG repository."""
    ws = dnf.DnfWorkspace(work)
    ws.root.mkdir(parents=True)
    ws.config.write_text(dnf.dnf_config(ws, [dnf.DnfRepo("sig", f"file://{repo}")], [key]))
    for argv in (dnf.rpm_initdb_argv(ws), dnf.rpm_import_argv(ws, key)):
        subprocess.run(argv, check=True, capture_output=True)
    try:
        out = subprocess.run(["dnf", "-y", "-c", str(ws.config), f"--installroot={ws.installroot}", "--releasever=9",
                              "--forcearch=x86_64", "repoquery", "--repo=sig", "--qf", "%{name}"],
                             capture_output=True, text=True)
    finally:
        dnf.stop_gpg_agents(ws)  # the agent of dnf's key import (repo_gpgcheck) outlives dnf
    assert out.returncode == 0, out.stderr
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def _sig_config(tmp_path: Path, drop: str | None = None) -> Path:
    config = tmp_path / ("releases" if drop is None else f"releases-without-{drop}")
    shutil.copytree(ROOT / "config" / "releases", config)
    if drop:
        path = config / "el9-sig-cloud.yaml"
        profile = yaml.safe_load(path.read_text())
        profile["repos"] = [r for r in profile["repos"] if r["id"] != drop]
        profile["repoclosure"].pop(drop)
        path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return config


def _promote_sig(conf: dict):
    out: dict = {}
    approver = respond("Approve", out)
    dr, states = run_dag("promote_to_production", {"release": "el9-sig-cloud", **conf})
    approver.join(timeout=30)
    assert out.get("approver", (None,))[0] == 200, out
    assert dr.state == "success", json.dumps(states, indent=1)
    return dr


def test_sig_compose_is_staged_and_promoted_under_sig_and_a_dropped_repo_goes(airflow_db, site, el9_sig, monkeypatch,
                                                                               fixture_buildsystem, tmp_path):
    dr, states = run_dag("full_compose", {"release": "el9-sig-cloud", "arches": ["x86_64"], "full_run": False})
    assert dr.state == "success", json.dumps(states, indent=1)
    # repos only: no installer, ISO or image task did any work
    for task in ("make_kickstart_trees", "build_lorax", "pull_unpack_tree", "build_dvd_iso", "pull_cloud_images"):
        assert states[task] == ["skipped"], (task, states[task])
    assert states["sync_repos"] == ["success"] * 2 and states["repoclosure"] == ["success"] * 2
    compose_major = Path(site["RELENG_COMPOSE_ROOT"]) / "9"
    (top,) = [p for p in compose_major.iterdir() if p.name.startswith("SIG-cloud-9.7-")]
    assert os.readlink(compose_major / "latest-SIG-cloud-9") == top.name
    assert (top / "STATUS").read_text().strip() == "FINISHED"

    staging = Path(site["RELENG_STAGING_ROOT"]) / "mirror/pub/sig/9/cloud"
    trees = ["x86_64/cloud-common", "x86_64/cloud-kernel"]  # os trees: <arch>/<repo> (layout: tests/core)
    assert sorted(str(p.parent.parent.relative_to(staging)) for p in staging.rglob("repodata/repomd.xml")) == \
        sorted(trees)
    for tree in trees:
        assert verify_repo(staging / tree).problems(None) == [], tree
    assert not (Path(site["RELENG_STAGING_ROOT"]) / "mirror/pub/rocky").exists()

    first = _promote_sig({})
    (report,) = [ti.xcom_pull(task_ids="change_report") for ti in first.get_task_instances()
                 if ti.task_id == "change_report"]
    assert report["subject"].startswith("Promote el9-sig-cloud 9/cloud to production 9/cloud: 2 added")
    record = json.loads(Path(report["record"]).read_text())  # the report names the SIG's repos and arches
    assert {(r["repo"], r["arch"]) for r in record["repos"]} == {("cloud-common", "x86_64"), ("cloud-kernel", "x86_64")}
    production_root = Path(site["RELENG_PRODUCTION_ROOT"])
    production = production_root / "mirror/pub/sig/9/cloud"
    assert tree_digest(production) == tree_digest(staging)
    key = fixture_buildsystem.key_dir / el9_sig.gpg_keys[0]
    assert "cloud-kernel-tools" in dnf_names(production / "x86_64/cloud-kernel", key, tmp_path / "dnf1")
    timelist = filelist.parse_timelist((production_root / "mirror/pub/sig/fullfiletimelist-sig").read_text())
    assert "9/cloud/x86_64/cloud-kernel/repodata/repomd.xml" in timelist.checksums["SHA1"]
    assert not (production_root / "mirror/pub/rocky").exists()  # the SIG's lists are the sig category's only

    # the SIG drops cloud-kernel: the next compose no longer has it, and staging and production follow
    monkeypatch.setenv("RELENG_CONFIG_DIR", str(_sig_config(tmp_path, drop="cloud-kernel")))
    dr, states = run_dag("full_compose", {"release": "el9-sig-cloud", **QUICK})
    assert dr.state == "success", json.dumps(states, indent=1)
    left = ["x86_64/cloud-common"]
    assert sorted(str(p.parent.parent.relative_to(staging)) for p in staging.rglob("repodata/repomd.xml")) == \
        sorted(left)
    assert not (staging / "x86_64/cloud-kernel").exists()

    _promote_sig({"allow_large_delete": True})  # a whole repo goes: above the routine delete bound
    assert tree_digest(production) == tree_digest(staging)
    assert not (production / "x86_64/cloud-kernel").exists()
    assert "cloud-common-tools" in dnf_names(production / "x86_64/cloud-common", key, tmp_path / "dnf2")
    timelist = filelist.parse_timelist((production_root / "mirror/pub/sig/fullfiletimelist-sig").read_text())
    assert not any("cloud-kernel" in e.path for e in timelist.files)
