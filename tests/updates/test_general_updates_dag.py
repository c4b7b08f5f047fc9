"""general_updates end to end on the local stack: a private copy of the fixture build system gets a new build,
Airflow's dag.test() runs every task in this process with real dnf, createrepo_c, modifyrepo_c, rsync and gpg."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from dev import buildsystem
from releng.core import dnf
from releng.core.gpg import agent_session, ignore_sockets
from releng.core.repo.primary import iter_packages
from releng.core.repo.repomd import read_repomd, tree_path
from releng.core.repo.signatures import dearmor, gpgv_argv
from releng.core.repo.verify import verify_repo
from releng.core.settings import settings
from releng.core.staging.signing import sign_repomd
from releng.core.updates.update_repodata import metadata_text
from tests.dagrun import run_dag

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.stack]
REPOS = ["BaseOS", "AppStream"]
ARCHES = ["x86_64", "aarch64"]


@dataclass
class Site:
    buildsystem: Path
    staging_dir: Path
    compose_root: Path
    config_dir: Path

    def tree(self, repo: str, arch: str = "x86_64", kind: str = "os") -> Path:
        if kind == "source":
            return self.staging_dir / repo / "source" / "tree"
        return self.staging_dir / repo / arch / ("debug/tree" if kind == "debug" else kind)

    def trees(self) -> list[Path]:
        return [self.tree(r, a, k) for r in REPOS for a in ARCHES for k in ("os", "debug")] + \
            [self.tree(r, kind="source") for r in REPOS]

    def write_profile(self, **closure: list[str]) -> None:
        """el9 with two arches (a faster run), and ``closure`` replacing entries of its repoclosure map."""
        text = (ROOT / "config" / "releases" / "el9.yaml").read_text()
        text, n = re.subn(r"(?m)^arches: \[.*\]$", f"arches: [{', '.join(ARCHES)}]", text)
        for repo, deps in closure.items():
            text, found = re.subn(rf"(?m)^  {repo}: \[.*\]$", f"  {repo}: [{', '.join(deps)}]", text)
            n += found
        assert n == 1 + len(closure), "el9.yaml changed shape; update this helper"
        (self.config_dir / "el9.yaml").write_text(text)
        settings.cache_clear()


@pytest.fixture
def updates_site(site, fixture_buildsystem, el9, tmp_path, monkeypatch):
    """The `site` settings with a build system of this test's own (it gets new builds), a two-arch el9
    profile, and the staging release directory holding what the build system has now (as full_compose
    would have staged it: the build system's repodata and signature)."""
    root = tmp_path / "buildsystem"
    # Sockets cannot be copied (ENXIO): a gpg-agent's in the fixture's GnuPG home, live or left by a killed run.
    shutil.copytree(fixture_buildsystem.root, root, symlinks=True, ignore=ignore_sockets)
    server = buildsystem.BuildSystemServer(root).start()
    config_dir = tmp_path / "releases"
    config_dir.mkdir()
    monkeypatch.setenv("RELENG_PERIDOT_URL", f"{server.url}/v1/projects")
    monkeypatch.setenv("RELENG_GPG_KEY_DIR", str(root / "keys"))
    monkeypatch.setenv("RELENG_CONFIG_DIR", str(config_dir))
    staging_dir = Path(site["RELENG_STAGING_ROOT"]) / "mirror" / "pub" / "rocky" / "9.7"
    result = Site(root, staging_dir, Path(site["RELENG_COMPOSE_ROOT"]), config_dir)
    result.write_profile()
    fixture = buildsystem.load(root)
    for repo in REPOS:
        for arch in (*ARCHES, "src"):
            for debug in ((False,) if arch == "src" else (False, True)):
                source = fixture.repo_dir(el9.project_id, repo, arch, hashed=True, debug=debug)
                kind = "source" if arch == "src" else "debug" if debug else "os"
                shutil.copytree(source, result.tree(repo, arch, kind))
    # The site signs staging's repodata with its release key (full_compose re-signed what it staged), so an
    # update must sign again what it changes.
    key = _gen_signing_key(tmp_path / "site-signing")
    for tree in result.trees():
        sign_repomd(tree / "repodata" / "repomd.xml", key, tmp_path / "site-signing")
    monkeypatch.setenv("RELENG_REPO_SIGNING_KEY", key)
    monkeypatch.setenv("RELENG_GNUPGHOME", str(tmp_path / "site-signing"))
    yield result
    server.shutdown()
    server.server_close()


def _run(conf: dict):
    return run_dag("general_updates", conf)


def _asset_events(dr) -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_dag_id == dr.dag_id,
                                                  AssetEvent.source_run_id == dr.run_id).all()
        return [dict(e.extra or {}) for e in events]


def _digest(root: Path) -> str:
    """Every path, link target, size, mode and content under ``root``."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def _metadata_files(tree: Path) -> dict[str, bytes]:
    """Every file of a tree's repodata except the signature."""
    return {p.name: p.read_bytes() for p in (tree / "repodata").iterdir() if p.name != "repomd.xml.asc"}


def _gen_signing_key(home: Path) -> str:
    home.mkdir(mode=0o700)
    with agent_session(home):
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key",
                        "Staging repo key (test) <staging@releng.invalid>", "rsa2048", "sign", "never"],
                       check=True, capture_output=True)
    out = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-keys"],
                         check=True, capture_output=True, text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))


class RepomdWatcher:
    """Samples repomd.xml files while a run swaps metadata: each must name only files that exist. A sample
    counts only when repomd.xml did not change while its files were checked (the check reads the same one)."""

    def __init__(self, trees: list[Path]):
        self.trees = trees
        self.samples = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for tree in self.trees:
                repomd = tree / "repodata" / "repomd.xml"
                try:
                    before = repomd.read_bytes()
                    records = read_repomd(tree)
                    missing = [r.href for r in records if not tree_path(tree, r.href).is_file()]
                    if repomd.read_bytes() != before:
                        continue
                except (FileNotFoundError, ValueError):
                    continue  # no repodata yet, or replaced while being read
                self.samples += 1
                if missing:
                    self.problems.append(f"{repomd} names missing {missing}")
            time.sleep(0.002)

    def __enter__(self) -> RepomdWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _dnf_latest(site: Site, tmp_path: Path, *, signed_with: Path | None) -> tuple[str, str]:
    """dnf (hermetic config, gpgcheck on with the fixture key, repo_gpgcheck when signed) on staging BaseOS and
    AppStream x86_64: the newest foo-app, and every foo-app."""
    ws = dnf.DnfWorkspace(tmp_path / "dnf-client")
    ws.root.mkdir()
    keys = [site.buildsystem / "keys" / "RPM-GPG-KEY-Rocky-9"]
    if signed_with is not None:
        keys.append(signed_with)
    repos = [dnf.DnfRepo(r, site.tree(r).as_uri()) for r in REPOS]
    text = dnf.dnf_config(ws, repos, keys)
    if signed_with is None:
        text = text.replace("repo_gpgcheck=1", "repo_gpgcheck=0")
    ws.config.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    for argv in (dnf.rpm_initdb_argv(ws), *(dnf.rpm_import_argv(ws, k) for k in keys)):
        subprocess.run(argv, check=True, capture_output=True, env=env)
    base = ["dnf", "-q", "-y", "--noplugins", "-c", str(ws.config), f"--installroot={ws.installroot}",
            "--releasever=9", "--setopt=module_platform_id=platform:el9", "repoquery", "--qf", "%{name}-%{evr}"]
    try:
        latest = subprocess.run([*base, "--latest-limit=1", "foo-app"], capture_output=True, text=True, env=env)
        every = subprocess.run([*base, "--showduplicates", "foo-app"], capture_output=True, text=True, env=env)
    finally:
        dnf.stop_gpg_agents(ws)  # the agent of dnf's key import (repo_gpgcheck) outlives dnf
    assert latest.returncode == 0 and every.returncode == 0, latest.stderr + every.stderr
    return latest.stdout.strip(), every.stdout.strip()


def _module_versions(tree: Path) -> list[tuple[str, int, str]]:
    docs = [d for d in yaml.safe_load_all(metadata_text(tree, ("modules",)) or "") if d]
    return sorted((d["data"]["name"], d["data"]["version"], *d["data"]["artifacts"]["rpms"])
                  for d in docs if d["document"] == "modulemd")


def test_a_new_build_reaches_staging_next_to_the_old_one(airflow_db, updates_site, el9, tmp_path, monkeypatch):
    site = updates_site
    app = site.tree("AppStream")
    old_app = {p.href for p in iter_packages(app)}
    base_before = {t: {p.nevra for p in iter_packages(site.tree("BaseOS", t))} for t in ARCHES}
    compression = {r.type: Path(r.href).suffix for r in read_repomd(app)}
    base_metadata = {tree: _metadata_files(tree) for tree in site.trees() if "BaseOS" in tree.parts}
    added = buildsystem.publish_update(site.buildsystem, el9, "AppStream", "foo-app", "2.1", "4",
                                       advisory="RLBA-2025:0001")
    assert "foo-app-2.1-4.el9.x86_64.rpm" in added
    key = _gen_signing_key(tmp_path / "signing")
    monkeypatch.setenv("RELENG_REPO_SIGNING_KEY", key)
    monkeypatch.setenv("RELENG_GNUPGHOME", str(tmp_path / "signing"))

    with RepomdWatcher(site.trees()) as watcher:
        dr, states = _run({"release": "el9", "repos": REPOS})
    assert dr.state == "success", states
    assert watcher.samples > 100 and watcher.problems == []

    # Both builds are in staging and in its metadata, for every arch; nothing was taken away.
    for arch in ARCHES:
        tree = site.tree("AppStream", arch)
        nevras = {p.nevra for p in iter_packages(tree)}
        assert {f"foo-app-0:2.1-3.el9.{arch}", f"foo-app-0:2.1-4.el9.{arch}", "foo-data-0:1.0-1.el9.noarch"} == nevras
        assert {p.nevra for p in iter_packages(site.tree("AppStream", arch, "debug"))} == {
            f"foo-app-debuginfo-0:2.1-3.el9.{arch}", f"foo-app-debuginfo-0:2.1-4.el9.{arch}"}
        assert {p.nevra for p in iter_packages(site.tree("BaseOS", arch))} == base_before[arch]
    assert old_app < {p.href for p in iter_packages(app)}
    assert {p.nevra for p in iter_packages(site.tree("AppStream", kind="source"))} == {
        "fixture-appstream-0:1.0-1.el9.src", "fixture-update-foo-app-0:2.1-4.el9.src"}
    for tree in site.trees():
        report = verify_repo(tree)
        assert report.ok and report.extra == [], report.problems(include_extra=True)

    # comps groups, modules (old and new module version) and the build system's advisory are kept.
    types = {r.type for r in read_repomd(app)}
    assert {"primary", "filelists", "other", "group", "modules", "updateinfo"} <= types
    # staging's compression is kept (createrepo_c's default differs between versions)
    assert {r.type: Path(r.href).suffix for r in read_repomd(app) if r.type in compression} == compression
    # BaseOS got nothing new: its metadata is byte-identical, only signed again with the configured key
    assert {tree: _metadata_files(tree) for tree in base_metadata} == base_metadata
    comps = ET.fromstring(metadata_text(app, ("group",)))
    assert [g.findtext("id") for g in comps.iter("group")] == ["foo-tools"]
    assert _module_versions(app) == [("foo-app", 1, "foo-app-0:2.1-3.el9.x86_64"),
                                     ("foo-app", 2, "foo-app-0:2.1-4.el9.x86_64")]
    updateinfo = ET.fromstring(metadata_text(app, ("updateinfo",)))
    assert [u.findtext("id") for u in updateinfo.iter("update")] == ["RLBA-2025:0001"]
    assert [g.findtext("id") for g in ET.fromstring(metadata_text(site.tree("BaseOS"), ("group",))).iter("group")] \
        == ["core"]

    # Signed with the configured key: the signature verifies with that public key alone.
    public = tmp_path / "staging-key.asc"
    public.write_bytes(subprocess.run(["gpg", "--homedir", str(tmp_path / "signing"), "--armor", "--export", key],
                                      check=True, capture_output=True).stdout)
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(dearmor(public.read_text()))
    for tree in site.trees():
        repodata = tree / "repodata"
        check = subprocess.run(gpgv_argv(keyring, repodata / "repomd.xml.asc", repodata / "repomd.xml"),
                               capture_output=True, text=True)
        assert check.returncode == 0, f"{tree}: {check.stderr}"

    # dnf, checking package signatures and the repomd signature, takes the new build and still offers the old.
    latest, every = _dnf_latest(site, tmp_path, signed_with=public)
    assert latest == "foo-app-2.1-4.el9"
    assert every.splitlines() == ["foo-app-2.1-3.el9", "foo-app-2.1-4.el9"]

    assert _asset_events(dr) == [{"release": "el9", "rc": False, "staging_dir": str(site.staging_dir),
                                  "source": "general_updates", "repos": REPOS, "packages_added": 5}]
    assert list(site.compose_root.rglob("*-updates-*")) == []  # the work area is gone

    # Nothing new upstream: staging stays byte-identical and no promotion is asked for. (AppStream alone: its
    # closure reads BaseOS from staging.)
    before = _digest(site.staging_dir)
    dr, states = _run({"release": "el9", "repos": ["AppStream"]})
    assert dr.state == "success", states
    assert states["repoclosure"] == ["success"] * len(ARCHES)
    assert states["emit_staging_asset"] == ["skipped"] and states["remove_work_area"] == ["success"]
    assert _asset_events(dr) == []
    assert _digest(site.staging_dir) == before


def test_unresolved_dependencies_stop_the_run_before_staging(airflow_db, updates_site, el9, capfd):
    site = updates_site
    site.write_profile(AppStream=[])  # AppStream may no longer use BaseOS: foo-app's libfoo and /bin/sh are unresolved
    buildsystem.publish_update(site.buildsystem, el9, "AppStream", "foo-app", "2.1", "4")
    before = _digest(site.staging_dir)

    dr, states = _run({"release": "el9", "repos": ["AppStream"]})
    assert dr.state == "failed"
    assert states["sync_repos"] == ["success"] * 5
    assert states["repoclosure"] == ["failed"] * len(ARCHES)
    assert {state for task in ("sync_to_staging", "update_repodata", "emit_staging_asset", "remove_work_area")
            for state in states.get(task, ["upstream_failed"])} == {"upstream_failed"}
    assert "foo-app-2.1-4.el9.x86_64 from AppStream -> libfoo >= 1.0, /bin/sh" in capfd.readouterr().out
    assert _digest(site.staging_dir) == before
    assert _asset_events(dr) == []


def test_an_unknown_repo_fails_before_any_work(airflow_db, updates_site):
    """A repo no release of RELENG_CONFIG_DIR has is refused by the trigger form itself (the Repos choice),
    before a run exists; prepare_updates refuses a repo of another release (tests/core/updates)."""
    from airflow.sdk.exceptions import ParamValidationError

    site = updates_site
    before = _digest(site.staging_dir)
    with pytest.raises(ParamValidationError, match="PowerTools"):
        _run({"release": "el9", "repos": ["AppStream", "PowerTools"]})
    assert list(site.compose_root.iterdir()) == []  # no work area
    assert _digest(site.staging_dir) == before
