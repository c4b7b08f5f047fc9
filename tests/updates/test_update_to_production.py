"""Issue 4's whole path in one run: a new build in the build system -> general_updates -> staging ->
promote_to_production, approved through the REST API by the assigned approver -> production equals
staging, and dnf resolves and downloads the new version from production."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dev import buildsystem
from releng.core import dnf
from tests.dagrun import run_dag
from tests.promotion.conftest import tree_digest
from tests.promotion.test_dag import respond
from tests.umask import not_public, private_umask
from tests.updates.test_general_updates_dag import REPOS, updates_site  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
# general_updates in a process of its own; its wait for the staging lease is cut from a day to 3 seconds.
OVERLAPPING_UPDATES = """
import json, sys
from tests.dagrun import parse_dag
dag = parse_dag("general_updates")
wait = dag.get_task("wait_for_staging")
wait.mode, wait.poke_interval, wait.timeout = "poke", 0.5, 3
dr = dag.test(run_conf={"release": "el9", "repos": json.loads(sys.argv[1])})
print(json.dumps({"state": str(dr.state), "tasks": {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}}))
"""


def test_new_build_goes_from_build_system_to_production(airflow_db, updates_site, el9, site, tmp_path):  # noqa: F811
    added = buildsystem.publish_update(updates_site.buildsystem, el9, "AppStream", "foo-app", "2.1", "4")
    assert "foo-app-2.1-4.el9.x86_64.rpm" in added

    with private_umask():  # issue 7 finding 4: a worker with umask 077 still publishes world-readable trees
        dr, states = run_dag("general_updates", {"release": "el9", "repos": REPOS})
        assert dr.state == "success", states

        out: dict = {}
        approver = respond("Approve", out, also_try_as_admin=True)
        dr, states = run_dag("promote_to_production", {"release": "el9", "rc": False})
        approver.join(timeout=30)
    assert out.get("admin", (None,))[0] == 403, out  # not an assigned approver
    assert out.get("approver", (None,))[0] == 200, out
    assert dr.state == "success", states
    assert states["promote_payload"] == ["success"] and states["verify_production"] == ["success"]

    production = Path(site["RELENG_PRODUCTION_ROOT"]) / "mirror/pub/rocky/9.7"
    assert tree_digest(production) == tree_digest(updates_site.staging_dir)
    assert not_public(Path(site["RELENG_STAGING_ROOT"]), Path(site["RELENG_PRODUCTION_ROOT"]) / "mirror") == []

    ws = dnf.DnfWorkspace(tmp_path / "dnf")
    ws.root.mkdir()
    key = updates_site.buildsystem / "keys" / el9.gpg_keys[0]
    repos = [dnf.DnfRepo(r, f"file://{production}/{r}/x86_64/os") for r in ("BaseOS", "AppStream")]
    ws.config.write_text(dnf.dnf_config(ws, repos, [key]).replace("repo_gpgcheck=1", "repo_gpgcheck=0"))
    for argv in (dnf.rpm_initdb_argv(ws), dnf.rpm_import_argv(ws, key)):
        subprocess.run(argv, check=True, capture_output=True)
    base = ["dnf", "-y", "-c", str(ws.config), f"--installroot={ws.installroot}", "--releasever=9",
            "--setopt=module_platform_id=platform:el9", "--forcearch=x86_64", "--disableplugin=local"]
    got = subprocess.run([*base, "download", "--resolve", "--destdir", str(tmp_path / "dl"), "foo-app"],
                         capture_output=True, text=True)
    assert got.returncode == 0, got.stdout + got.stderr  # gpgcheck=1: the package signatures verified
    downloaded = sorted(p.name for p in (tmp_path / "dl").glob("*.rpm"))
    assert "foo-app-2.1-4.el9.x86_64.rpm" in downloaded and "libfoo-1.0-1.el9.x86_64.rpm" in downloaded
    assert "foo-app-2.1-3.el9.x86_64.rpm" not in downloaded  # the newest build wins; the old one stays listed


def test_updates_wait_while_a_promotion_holds_staging(airflow_db, updates_site, el9, site, tmp_path):  # noqa: F811
    """general_updates started while a promotion waits for its approval does not touch staging (issue 9
    finding 3): the promotion holds the staging lease from its report to its last phase, so production gets
    exactly the staging the approver saw, and the updates go in once the promotion has ended."""
    from releng.core.staging import lease

    buildsystem.publish_update(updates_site.buildsystem, el9, "AppStream", "foo-app", "2.1", "4")
    staging_root = Path(site["RELENG_STAGING_ROOT"])
    seen: dict = {}

    def overlapping_updates():
        """A second process (as a second worker would be) runs general_updates while the approval waits."""
        seen["staging"] = tree_digest(updates_site.staging_dir)
        seen["holder"] = lease.current_holder(staging_root)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
        done = subprocess.run([sys.executable, "-c", OVERLAPPING_UPDATES, json.dumps(REPOS)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        seen["updates"] = json.loads(done.stdout.strip().splitlines()[-1])
        seen["staging_after"] = tree_digest(updates_site.staging_dir)

    out: dict = {}
    approver = respond("Approve", out, during=overlapping_updates)
    dr, states = run_dag("promote_to_production", {"release": "el9", "rc": False})
    approver.join(timeout=60)
    assert out.get("approver", (None,))[0] == 200, out
    assert dr.state == "success", states

    holder = seen["holder"]
    assert holder is not None and holder.key == ("promote_to_production", dr.run_id)
    updates_state, updates_states = seen["updates"]["state"], seen["updates"]["tasks"]
    assert updates_state == "failed" and updates_states["wait_for_staging"] == "failed", updates_states
    assert updates_states["sync_to_staging"] == "upstream_failed"
    assert seen["staging_after"] == seen["staging"]  # staging did not change while approval was pending
    production = Path(site["RELENG_PRODUCTION_ROOT"]) / "mirror/pub/rocky/9.7"
    assert tree_digest(production) == seen["staging"]  # what the approver saw, not a mix
    assert lease.current_holder(staging_root) is None  # record_promotion gave the lease back

    # The promotion has ended: the next update run takes the lease and stages the new build.
    dr, states = run_dag("general_updates", {"release": "el9", "repos": REPOS})
    assert dr.state == "success", states
    assert tree_digest(updates_site.staging_dir) != seen["staging"]
    assert list(updates_site.staging_dir.rglob("foo-app-2.1-4.el9.x86_64.rpm"))
    assert not list(production.rglob("foo-app-2.1-4.el9.x86_64.rpm"))
    assert lease.current_holder(staging_root) is None
