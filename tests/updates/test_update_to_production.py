"""Issue 4's whole path in one run: a new build in the build system -> general_updates -> staging ->
promote_to_production, approved through the REST API by the assigned approver -> production equals
staging, and dnf resolves and downloads the new version from production."""

from __future__ import annotations

import subprocess
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
