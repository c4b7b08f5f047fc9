"""sync_repos: real dnf reposync against the fixture build system, verified trees, hard links, failures."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from dev.buildsystem import BuildSystemServer
from releng.core.gpg import agent_session, copy_home
from releng.core.layout import ComposeLayout
from releng.core.repo.primary import package_index
from releng.core.repo.verify import verify_repo
from releng.core.settings import settings
from releng.operators.sync_repos import SyncReposOperator
from tests.umask import not_public, private_umask

XCOM_KEYS = {"repo", "arch", "kind", "dest", "packages", "downloaded", "linked", "bytes", "seconds"}


class AccessLog:
    """What the build system served, one ``GET <path> <status>`` line per request."""

    def __init__(self):
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            self.lines.append(text.strip())

    def flush(self) -> None:
        pass

    def rpm_gets(self) -> list[str]:
        with self._lock:
            return [line for line in self.lines if line.startswith("GET ") and ".rpm " in line]

    def since(self, mark: int) -> list[str]:
        with self._lock:
            return self.lines[mark:]


@pytest.fixture
def site(monkeypatch, buildsystem_server, fixture_buildsystem):
    """RELENG_* for the fixture build system; settings() re-read for this test."""
    monkeypatch.setenv("RELENG_PERIDOT_URL", f"{buildsystem_server.url}/v1/projects")
    monkeypatch.setenv("RELENG_GPG_KEY_DIR", str(fixture_buildsystem.key_dir))
    settings.cache_clear()
    yield monkeypatch
    settings.cache_clear()


@pytest.fixture
def logged_server(site, fixture_buildsystem):
    """A build system of its own that records every request."""
    log = AccessLog()
    server = BuildSystemServer(fixture_buildsystem.root, access_log=log).start()
    site.setenv("RELENG_PERIDOT_URL", f"{server.url}/v1/projects")
    settings.cache_clear()
    yield log
    server.shutdown()
    server.server_close()


def _layout(el9, tmp_path: Path, stamp: str) -> ComposeLayout:
    return ComposeLayout.new(el9, tmp_path / "compose-root", stamp)


def _sync(layout: ComposeLayout, repo="BaseOS", arch="x86_64", kind="os", **kw) -> dict:
    op = SyncReposOperator(task_id=f"sync_{repo}_{arch}_{kind}", release="el9", repo=repo, arch=arch, kind=kind,
                          dest=layout.repo_tree(repo, arch, kind), work_dir=layout.work / "dnf",
                          hashed=kw.pop("hashed", True), pool="reposync", **kw)
    return op.execute(context={})


def _upstream(fixture, el9, repo, arch, kind, hashed=True) -> Path:
    return fixture.repo_dir(el9.project_id, repo, "src" if kind == "source" else arch, hashed=hashed,
                            debug=kind == "debug")


@pytest.mark.parametrize("repo,arch,kind", [("AppStream", "aarch64", "os"), ("BaseOS", "x86_64", "debug"),
                                            ("CRB", "x86_64", "source")])
def test_sync_downloads_and_verifies_every_package(site, fixture_buildsystem, el9, tmp_path, repo, arch, kind):
    layout = _layout(el9, tmp_path, "20250101.000000")
    result = _sync(layout, repo, arch, kind)
    dest = layout.repo_tree(repo, arch, kind)
    upstream = _upstream(fixture_buildsystem, el9, repo, arch, kind)
    expected = sorted(p.relative_to(upstream).as_posix() for p in upstream.rglob("*.rpm"))
    assert set(result) == XCOM_KEYS
    assert result["packages"] == len(expected) == result["downloaded"] and expected
    assert (result["repo"], result["arch"], result["kind"], result["dest"]) == (repo, arch, kind, str(dest))
    assert result["linked"] == 0
    assert result["bytes"] == sum((upstream / rel).stat().st_size for rel in expected)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.rpm")) == expected
    for rel in expected:
        assert (dest / rel).read_bytes() == (upstream / rel).read_bytes()
    assert (dest / "repodata" / "repomd.xml").read_bytes() == (upstream / "repodata" / "repomd.xml").read_bytes()
    assert verify_repo(dest).ok
    assert not (layout.work / "dnf" / f"reposync-{repo}-{arch}-{kind}").exists()  # workspace cleaned up


def test_unchanged_packages_are_hard_linked_not_downloaded(logged_server, el9, tmp_path):
    first = _layout(el9, tmp_path, "20250101.000000")
    second = _layout(el9, tmp_path, "20250102.000000")
    one = _sync(first, "AppStream", "x86_64")
    first_gets = logged_server.rpm_gets()
    assert one["downloaded"] == one["packages"] == 2 and len(first_gets) == 4  # a 302 and a blob GET each

    mark = len(logged_server.lines)
    two = _sync(second, "AppStream", "x86_64", previous=first.repo_tree("AppStream", "x86_64"))
    assert logged_server.rpm_gets() == first_gets, "the no-op sync fetched packages"
    # upstream unchanged: one look at repomd.xml, no dnf run
    assert [line.split()[1].rsplit("/", 2)[-2:] for line in logged_server.since(mark)] == [["repodata", "repomd.xml"]]
    assert two["downloaded"] == 0 and two["linked"] == two["packages"] == 2
    old, new = first.repo_tree("AppStream", "x86_64"), second.repo_tree("AppStream", "x86_64")
    for href in package_index(new):
        assert os.stat(new / href).st_ino == os.stat(old / href).st_ino
        assert os.stat(new / href).st_nlink == 2
    assert verify_repo(new).ok and verify_repo(old).ok


def test_new_metadata_with_unchanged_packages_downloads_no_package(logged_server, el9, tmp_path):
    first = _layout(el9, tmp_path, "20250101.000000")
    _sync(first)
    previous = first.repo_tree("BaseOS", "x86_64")
    # the build system regenerated its repodata (new repomd.xml), the packages are the same
    subprocess.run(["createrepo_c", "--quiet", "--no-database", str(previous)], check=True)
    gets = len(logged_server.rpm_gets())
    result = _sync(_layout(el9, tmp_path, "20250102.000000"), previous=previous)
    assert len(logged_server.rpm_gets()) == gets
    assert (result["downloaded"], result["linked"], result["packages"]) == (0, 3, 3)


def test_a_changed_package_is_downloaded_and_the_previous_compose_is_untouched(site, el9, tmp_path):
    first = _layout(el9, tmp_path, "20250101.000000")
    _sync(first)
    previous = first.repo_tree("BaseOS", "x86_64")
    libfoo = previous / "Packages" / "l" / "libfoo-1.0-1.el9.x86_64.rpm"
    # the previous compose had other bytes of the same size under the same name (a re-signed package)
    older = bytearray(libfoo.read_bytes())
    older[-1] ^= 0xFF
    older = bytes(older)
    libfoo.unlink()
    libfoo.write_bytes(older)
    subprocess.run(["createrepo_c", "--quiet", "--no-database", str(previous)], check=True)

    second = _layout(el9, tmp_path, "20250102.000000")
    result = _sync(second, previous=previous)
    assert (result["downloaded"], result["linked"], result["packages"]) == (1, 2, 3)
    assert libfoo.read_bytes() == older, "dnf wrote through a hard link into the previous compose"
    new = second.repo_tree("BaseOS", "x86_64")
    assert not os.path.samefile(new / "Packages/l/libfoo-1.0-1.el9.x86_64.rpm", libfoo)
    assert verify_repo(new).ok


def test_a_previous_tree_that_does_not_exist_only_means_nothing_is_linked(site, el9, tmp_path):
    """A repo new in this compose: the previous compose has no such tree."""
    result = _sync(_layout(el9, tmp_path, "20250102.000000"), previous=tmp_path / "no" / "such" / "tree")
    assert (result["downloaded"], result["linked"], result["packages"]) == (3, 0, 3)


def test_a_shared_file_in_dest_is_never_written_through(site, el9, tmp_path):
    layout = _layout(el9, tmp_path, "20250101.000000")
    _sync(layout)
    dest = layout.repo_tree("BaseOS", "x86_64")
    outside = tmp_path / "other-tree.rpm"
    outside.write_bytes(b"another tree's file")
    target = dest / "Packages" / "l" / "libfoo-1.0-1.el9.x86_64.rpm"
    target.unlink()
    os.link(outside, target)

    result = _sync(layout)
    assert outside.read_bytes() == b"another tree's file"
    assert result["downloaded"] == 1 and verify_repo(dest).ok


def test_a_package_corrupted_after_sync_is_reported_and_a_rerun_repairs_it(site, el9, tmp_path):
    layout = _layout(el9, tmp_path, "20250101.000000")
    _sync(layout)
    dest = layout.repo_tree("BaseOS", "x86_64")
    victim = dest / "Packages" / "r" / "rocky-release-1.0-1.el9.noarch.rpm"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    report = verify_repo(dest)
    assert not report.ok and [c.split(":")[0] for c in report.corrupt] == [victim.relative_to(dest).as_posix()]

    again = _sync(layout)
    assert again["downloaded"] == 1 and verify_repo(dest).ok


@pytest.mark.parametrize("delete", [True, False])
def test_delete_removes_packages_gone_upstream(site, el9, tmp_path, delete):
    layout = _layout(el9, tmp_path, "20250101.000000")
    _sync(layout)
    dest = layout.repo_tree("BaseOS", "x86_64")
    stray = dest / "Packages" / "g" / "gone-1.0-1.el9.noarch.rpm"
    stray.parent.mkdir()
    stray.write_bytes(b"dropped upstream")
    (dest / "repodata" / "0000-old-primary.xml.gz").write_bytes(b"stale")
    result = _sync(layout, delete=delete)
    assert stray.exists() is not delete
    assert result["packages"] == 3
    assert not (dest / "repodata" / "0000-old-primary.xml.gz").exists()


@pytest.mark.parametrize("status", [404, 500])
def test_build_system_errors_fail_naming_the_url(site, build_faults, el9, tmp_path, status):
    build_faults({f"/v1/projects/{el9.project_id}/repo/hashed-BaseOS/": status})
    with pytest.raises(AirflowException) as err:
        _sync(_layout(el9, tmp_path, "20250101.000000"))
    assert not isinstance(err.value, AirflowFailException)  # retriable: the build system may recover
    message = str(err.value)
    assert f"/v1/projects/{el9.project_id}/repo/hashed-BaseOS/x86_64" in message
    assert "Failed to download metadata" in message and "Full dnf log:" in message


def test_a_failed_package_download_fails_the_task(site, build_faults, el9, tmp_path):
    build_faults({f"/_blobs/v1/projects/{el9.project_id}/repo/hashed-BaseOS/x86_64/Packages/l/": 500})
    with pytest.raises(AirflowException) as err:
        _sync(_layout(el9, tmp_path, "20250101.000000"))
    message = str(err.value)
    assert "1 package download(s) failed" in message and "[FAILED] libfoo-1.0-1.el9.x86_64.rpm" in message
    assert "hashed-BaseOS/x86_64" in message


def _other_keys(tmp_path: Path, names) -> Path:
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(gnupg), "PATH": "/usr/bin:/bin"}
    with agent_session(gnupg):
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Other <o@x.invalid>", "ed25519",
                        "sign", "never"], check=True, capture_output=True, env=env)
    key = subprocess.run(["gpg", "--batch", "--armor", "--export"], check=True, capture_output=True, env=env).stdout
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in names:
        (keys / name).write_bytes(key)
    return keys


def test_the_wrong_key_fails_for_good(site, el9, tmp_path):
    site.setenv("RELENG_GPG_KEY_DIR", str(_other_keys(tmp_path, el9.gpg_keys)))
    settings.cache_clear()
    layout = _layout(el9, tmp_path, "20250101.000000")
    with pytest.raises(AirflowFailException, match="signature check failed syncing http") as err:
        _sync(layout)
    assert "RELENG_GPG_KEY_DIR" in str(err.value) and "GPG signature verification error" in str(err.value)
    assert not list(layout.repo_tree("BaseOS", "x86_64").rglob("*.rpm"))


def test_changed_keys_are_not_bypassed_when_upstream_is_unchanged(site, el9, tmp_path):
    first = _layout(el9, tmp_path, "20250101.000000")
    _sync(first)
    site.setenv("RELENG_GPG_KEY_DIR", str(_other_keys(tmp_path, el9.gpg_keys)))
    settings.cache_clear()
    second = _layout(el9, tmp_path, "20250102.000000")
    with pytest.raises(AirflowFailException, match="signature check failed syncing http"):
        _sync(second, previous=first.repo_tree("BaseOS", "x86_64"))


def test_an_unsigned_package_fails_for_good(site, fixture_buildsystem, el9, tmp_path):
    """The repo metadata is signed but one package is not: no retry can fix that."""
    root = tmp_path / "buildsystem"
    repo = root / "http" / "v1" / "projects" / el9.project_id / "repo" / "BaseOS" / "x86_64"
    shutil.copytree(fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64"), repo)
    subprocess.run(["rpmsign", "--delsign", str(repo / "Packages" / "libfoo-1.0-1.el9.x86_64.rpm")], check=True,
                   capture_output=True)
    subprocess.run(["createrepo_c", "--quiet", "--no-database", str(repo)], check=True)
    gnupg = copy_home(fixture_buildsystem.root / "gnupg", tmp_path / "gnupg")  # the shared fixture stays unused
    with agent_session(gnupg):
        subprocess.run(["gpg", "--batch", "--yes", "--armor", "--detach-sign", "-o",
                        str(repo / "repodata/repomd.xml.asc"), str(repo / "repodata/repomd.xml")], check=True,
                       capture_output=True, env={**os.environ, "GNUPGHOME": str(gnupg)})
    server = BuildSystemServer(root).start()
    try:
        site.setenv("RELENG_PERIDOT_URL", f"{server.url}/v1/projects")
        settings.cache_clear()
        with pytest.raises(AirflowFailException, match=r"1 of 3 packages synced from http\S+/BaseOS/x86_64 do not "
                                                       r"verify with the keys of profile el9") as err:
            _sync(_layout(el9, tmp_path, "20250101.000000"), hashed=False)
    finally:
        server.shutdown()
        server.server_close()
    assert "libfoo-1.0-1.el9.x86_64.rpm: digests OK" in str(err.value)


def test_stray_stderr_of_rpm_is_no_verdict_on_a_package(site, el9, tmp_path):
    """Issue 7 finding 7: a message on rpm's stderr (here ld.so's, from a preload that does not exist) is not
    a bad package; every package verifies, so the sync succeeds."""
    site.setenv("LD_PRELOAD", str(tmp_path / "no-such-preload.so"))
    result = _sync(_layout(el9, tmp_path, "20250101.000000"), hashed=False)
    assert result["packages"] == 3


def test_a_tree_synced_under_umask_077_is_world_readable(site, el9, tmp_path):
    """Issue 7 finding 4: dnf writes packages and repodata by the umask; the synced tree is 0644/0755."""
    layout = _layout(el9, tmp_path, "20250101.000000")
    with private_umask():
        _sync(layout, hashed=False)
    assert not_public(layout.repo_tree("BaseOS", "x86_64")) == []


def test_a_missing_key_file_names_the_setting(site, el9, tmp_path):
    site.setenv("RELENG_GPG_KEY_DIR", str(tmp_path / "empty"))
    settings.cache_clear()
    with pytest.raises(AirflowFailException, match=r"RPM-GPG-KEY-Rocky-9.* not found: RELENG_GPG_KEY_DIR="):
        _sync(_layout(el9, tmp_path, "20250101.000000"))


@pytest.mark.parametrize("kwargs,match", [
    ({"repo": "Nope"}, r"profile el9 has no repo 'Nope'"),
    ({"kind": "iso"}, r"kind 'iso' is not one of os, debug, source"),
    ({"arch": "i686"}, r"BaseOS in el9 has no arch 'i686'"),
    ({"arch": "../x"}, r"arch '../x' is not a safe path component"),
    ({"release": "el99"}, r"no release profile 'el99'; available: el10, el8, el9"),
])
def test_bad_parameters_fail_for_good(site, tmp_path, kwargs, match):
    args = {"release": "el9", "repo": "BaseOS", "arch": "x86_64", "kind": "os", **kwargs}
    op = SyncReposOperator(task_id="sync", dest=tmp_path / "dest", work_dir=tmp_path / "work", **args)
    with pytest.raises(AirflowFailException, match=match):
        op.execute(context={})


def test_progress_and_summary_are_logged(site, el9, tmp_path, capsys):
    _sync(_layout(el9, tmp_path, "20250101.000000"), "AppStream", "aarch64", progress_interval=0.02)
    out = capsys.readouterr().out
    assert "AppStream aarch64 os: syncing http" in out
    assert "AppStream aarch64 os: 0 packages, 0 B" in out or "AppStream aarch64 os: 2 packages" in out
    assert "AppStream aarch64 os: done, 2 packages" in out and "2 downloaded" in out


def test_template_fields_render(tmp_path):
    op = SyncReposOperator(task_id="sync", release="{{ params.release }}", repo="{{ params.repo }}", arch="x86_64",
                          dest="{{ params.root }}/BaseOS/x86_64/os", work_dir="{{ params.root }}/work",
                          previous="{{ params.previous }}")
    op.render_template_fields({"params": {"release": "el9", "repo": "BaseOS", "root": "/c", "previous": "/p"}})
    assert (op.release, op.repo, op.dest, op.work_dir, op.previous) == ("el9", "BaseOS", "/c/BaseOS/x86_64/os",
                                                                       "/c/work", "/p")
