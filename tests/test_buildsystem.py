"""The fixture build system: real RPMs, real repodata, yumrepofs layout, signatures, HTTP behaviour."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from releng.core.dnf import DnfRepo, DnfWorkspace, dnf_config, repoclosure_argv
from releng.core.gpg import copy_home, ignore_sockets
from tests import leakcheck

REPOS = ("BaseOS", "AppStream", "CRB", "extras")
ARCHES = ("x86_64", "aarch64")


def _run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


@pytest.mark.parametrize("hashed", [False, True])
def test_layout_like_yumrepofs(fixture_buildsystem, el9, hashed):
    fx = fixture_buildsystem
    for repo in REPOS:
        for arch in ARCHES:
            for debug in (False, True):
                repo_dir = fx.repo_dir(el9.project_id, repo, arch, hashed=hashed, debug=debug)
                assert (repo_dir / "repodata" / "repomd.xml").is_file(), repo_dir
                rpms = sorted((repo_dir / "Packages").rglob("*.rpm"))
                assert rpms, f"no packages in {repo_dir}"
                for rpm in rpms:
                    rel = rpm.relative_to(repo_dir / "Packages")
                    assert rel.parts[:-1] == ((rpm.name[0],) if hashed else ()), rel
                    assert rpm.name.endswith((f".{arch}.rpm", ".noarch.rpm"))
                    assert ("-debuginfo-" in rpm.name) == debug
        src = fx.repo_dir(el9.project_id, repo, "src", hashed=hashed)
        assert [p.name for p in (src / "Packages").rglob("*.rpm")] == [f"fixture-{repo.lower()}-1.0-1.el9.src.rpm"]
    # multilib: the `all` repo (on-disk devel) also carries i686
    assert (fx.repo_dir(el9.project_id, "all", "i686", hashed=hashed) / "repodata" / "repomd.xml").is_file()


def test_index_lists_every_package(fixture_buildsystem, el9):
    index = json.loads((fixture_buildsystem.root / "fixture.json").read_text())["profiles"]["el9"]
    assert index["project_id"] == el9.project_id
    repo_dir = fixture_buildsystem.repo_dir(el9.project_id, "AppStream", "aarch64")
    on_disk = sorted(p.name for p in (repo_dir / "Packages").rglob("*.rpm"))
    assert index["repos"]["AppStream"]["aarch64"] == on_disk == [
        "foo-app-2.1-3.el9.aarch64.rpm", "foo-data-1.0-1.el9.noarch.rpm"]


def test_package_relations(fixture_buildsystem, el9):
    base = fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64") / "Packages"
    app = fixture_buildsystem.repo_dir(el9.project_id, "AppStream", "x86_64") / "Packages"
    provides = _run(["rpm", "-qp", "--provides", str(base / "fixture-sh-1.0-1.el9.x86_64.rpm")]).stdout
    assert "/bin/sh" in provides.splitlines()
    requires = _run(["rpm", "-qp", "--requires", str(app / "foo-app-2.1-3.el9.x86_64.rpm")]).stdout.splitlines()
    assert {"libfoo >= 1.0", "foo-data", "/bin/sh"} <= set(requires)


def _closure(fx, el9, tmp_path: Path, check: str, repos: list[str], arch: str) -> subprocess.CompletedProcess:
    ws = DnfWorkspace(tmp_path / f"dnf-{check}-{arch}-{len(repos)}")
    ws.root.mkdir()
    sources = [DnfRepo(r, f"file://{fx.repo_dir(el9.project_id, r, arch)}") for r in repos]
    ws.config.write_text(dnf_config(ws, sources, [], gpgcheck=False))
    return _run(repoclosure_argv(ws, check, repos, arch, major=9, disttag="el9"))


@pytest.mark.parametrize("arch", ARCHES)
def test_repos_close_only_with_their_dependencies(fixture_buildsystem, el9, tmp_path, arch):
    fx = fixture_buildsystem
    assert _closure(fx, el9, tmp_path, "BaseOS", ["BaseOS"], arch).returncode == 0
    together = _closure(fx, el9, tmp_path, "AppStream", ["BaseOS", "AppStream"], arch)
    assert together.returncode == 0, together.stdout + together.stderr
    alone = _closure(fx, el9, tmp_path, "AppStream", ["AppStream"], arch)
    assert alone.returncode == 1
    assert "libfoo >= 1.0" in alone.stdout and "/bin/sh" in alone.stdout


def test_comps_and_modules_are_in_the_repodata(fixture_buildsystem, el9):
    ns = {"r": "http://linux.duke.edu/metadata/repo"}
    for repo, kinds in (("BaseOS", {"group", "group_gz"}), ("AppStream", {"group", "modules"})):
        repomd = fixture_buildsystem.repo_dir(el9.project_id, repo, "x86_64") / "repodata" / "repomd.xml"
        types = {d.get("type") for d in ET.parse(repomd).getroot().findall("r:data", ns)}
        assert kinds <= types, (repo, types)
    comps = next((fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64") / "repodata").glob("*-comps.xml"))
    root = ET.parse(comps).getroot()
    assert [g.findtext("id") for g in root.findall("group")] == ["core"]
    assert root.find("environment/id").text == "minimal-environment"


def test_packages_and_repodata_are_signed_with_the_profile_key(fixture_buildsystem, el9, tmp_path):
    key = fixture_buildsystem.key_dir / el9.gpg_keys[0]
    assert "BEGIN PGP PUBLIC KEY BLOCK" in key.read_text()
    rpm = next((fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "aarch64") / "Packages").glob("libfoo-*"))
    dbpath = tmp_path / "rpmdb"
    assert _run(["rpm", "--dbpath", str(dbpath), "--initdb"]).returncode == 0
    unknown = _run(["rpm", "--dbpath", str(dbpath), "-K", str(rpm)])
    assert unknown.returncode == 1 and "SIGNATURES NOT OK" in unknown.stdout
    assert _run(["rpm", "--dbpath", str(dbpath), "--import", str(key)]).returncode == 0
    known = _run(["rpm", "--dbpath", str(dbpath), "-Kv", str(rpm)])
    assert known.returncode == 0 and "Signature, key ID" in known.stdout and ": OK" in known.stdout
    repodata = fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "aarch64") / "repodata"
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(gnupg), "PATH": "/usr/bin:/bin"}
    assert _run(["gpg", "--batch", "--no-autostart", "--import", str(key)], env=env).returncode == 0  # no agent
    good = _run(["gpg", "--batch", "--verify", str(repodata / "repomd.xml.asc"), str(repodata / "repomd.xml")],
                env=env)
    assert good.returncode == 0, good.stderr


def test_rebuild_reuses_an_unchanged_fixture(fixture_buildsystem, el9, el9lh, el9_sig):
    from dev import buildsystem

    messages = []
    again = buildsystem.build(fixture_buildsystem.root, [el9, el9lh, el9_sig], log=messages.append)
    assert again.profiles == fixture_buildsystem.profiles
    assert messages and messages[0].startswith("fixture build system: reusing")


def test_lookahead_serves_the_stable_packages_and_the_sig_its_own(fixture_buildsystem, el9, el9lh, el9_sig):
    """el9lh's project is el9's repos under its own project id (built once); the SIG has its own small repos."""
    fx = fixture_buildsystem
    lh = fx.repo_dir(el9lh.project_id, "BaseOS", "x86_64")
    assert (lh / "repodata" / "repomd.xml").is_file()
    assert os.path.samefile(lh, fx.repo_dir(el9.project_id, "BaseOS", "x86_64"))
    assert fx.profiles["el9lh"]["repos"] == fx.profiles["el9"]["repos"]
    assert fx.profiles["el9-sig-cloud"]["repos"]["cloud-kernel"]["x86_64"] == [
        "cloud-kernel-tools-1.0-1.el9.x86_64.rpm"]
    for arch in ("x86_64", "aarch64", "src"):
        repo = fx.repo_dir(el9_sig.project_id, "cloud-common", arch, hashed=True)
        assert (repo / "repodata" / "repomd.xml").is_file()


def _get(url: str) -> tuple[int, dict, bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_server_redirects_packages_like_yumrepofs(buildsystem_server, fixture_buildsystem, el9):
    base = f"{buildsystem_server.url}/v1/projects/{el9.project_id}/repo/hashed-BaseOS/x86_64"
    status, _, body = _get(f"{base}/repodata/repomd.xml")
    assert status == 200 and b"<repomd" in body
    status, headers, _ = _get(f"{base}/Packages/l/libfoo-1.0-1.el9.x86_64.rpm")
    assert status == 302
    rel = "Packages/l/libfoo-1.0-1.el9.x86_64.rpm"
    assert headers["Location"] == f"/_blobs/v1/projects/{el9.project_id}/repo/hashed-BaseOS/x86_64/{rel}"
    status, _, body = _get(buildsystem_server.url + headers["Location"])
    local = fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64", hashed=True) / rel
    assert status == 200 and body == local.read_bytes()
    assert _get(f"{base}/repodata/nope.xml")[0] == 404


def test_server_fault_injection(buildsystem_server, build_faults, el9):
    base = f"{buildsystem_server.url}/v1/projects/{el9.project_id}/repo/BaseOS"
    build_faults({f"/v1/projects/{el9.project_id}/repo/BaseOS/x86_64/": 500})
    assert _get(f"{base}/x86_64/repodata/repomd.xml")[0] == 500
    assert _get(f"{base}/aarch64/repodata/repomd.xml")[0] == 200
    req = urllib.request.Request(f"{buildsystem_server.url}/_fixture/faults", method="PUT",
                                 data=json.dumps({"/v1/": 404}).encode())
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read()) == {"/v1/": 404}
    assert _get(f"{base}/aarch64/repodata/repomd.xml")[0] == 404


@pytest.mark.slow
def test_building_and_updating_leave_no_agent_and_copies_skip_sockets(el9, tmp_path):
    """Issue 9 finding 1: gpg and rpmsign start a gpg-agent for the fixture key. Left running, its sockets sit in
    the key's GnuPG home (where /run/user/<uid> does not exist, as on a fresh CI machine) and a copy of the
    fixture fails with ENXIO. Building and publishing an update stop that agent; copies skip sockets (a stale
    one is left by an agent that was killed)."""
    from dev import buildsystem

    root = tmp_path / "buildsystem"
    buildsystem.build(root, [el9], log=lambda _msg: None)
    assert leakcheck.using([root]) == []
    buildsystem.publish_update(root, el9, "AppStream", "foo-app", "2.1", "4")
    assert leakcheck.using([root]) == []
    assert not [p for p in (root / "gnupg").iterdir() if p.is_socket()]

    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(root / "gnupg" / "S.gpg-agent"))
    with pytest.raises(shutil.Error, match="No such device or address"):
        shutil.copytree(root, tmp_path / "plain-copy", symlinks=True)  # what a plain copy meets
    copy = copy_home(root / "gnupg", tmp_path / "gnupg-copy")
    assert not (copy / "S.gpg-agent").exists() and (copy / "pubring.kbx").is_file()
    shutil.copytree(root, tmp_path / "fixture-copy", symlinks=True, ignore=ignore_sockets)
    assert sorted(p.name for p in (tmp_path / "fixture-copy" / "gnupg").iterdir()) == \
        sorted(p.name for p in (root / "gnupg").iterdir() if not p.is_socket() and not p.name.endswith(".lock"))
