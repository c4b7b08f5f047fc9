"""sync_repo called as a script or benchmark calls it: plain arguments, a RepoSource, a log callable, no Airflow."""

from __future__ import annotations

import subprocess

import pytest

from releng.core import dnf
from releng.core.compose.sync_repos import SyncError, SyncRefused, SyncResult, sync_repo
from releng.hooks.buildsystem import BuildSystemError, BuildSystemHook
from tests import leakcheck


class CountingSource:
    """The fixture build system through the hook, counting repomd fetches; ``down`` makes every fetch fail."""

    def __init__(self, hook: BuildSystemHook, down: bool = False):
        self.hook, self.down, self.fetches = hook, down, 0

    def repo_url(self, *args, **kwargs) -> str:
        return self.hook.repo_url(*args, **kwargs)

    def fetch_repomd(self, repo_url: str) -> bytes:
        self.fetches += 1
        if self.down:
            raise BuildSystemError(f"the build system did not serve {repo_url}", url=repo_url)
        return self.hook.fetch_repomd(repo_url)


@pytest.fixture
def source(buildsystem_server):
    return CountingSource(BuildSystemHook(f"{buildsystem_server.url}/v1/projects", backoff=0))


def _sync(el9, fixture, source, tmp_path, name, **kw) -> tuple[SyncResult, list[str]]:
    lines: list[str] = []
    result = sync_repo(el9, "AppStream", "x86_64", "os", dest=tmp_path / name / "os", work_dir=tmp_path / name / "work",
                       key_dir=fixture.key_dir, source=source, hashed=True, log=lines.append, **kw)
    return result, lines


def test_a_sync_and_a_noop_resync_without_an_operator(el9, fixture_buildsystem, source, tmp_path):
    first, lines = _sync(el9, fixture_buildsystem, source, tmp_path, "one")
    assert (first.packages, first.downloaded, first.linked) == (2, 2, 0) and source.fetches == 0  # no reference yet
    assert any(line.startswith("AppStream x86_64 os: done, 2 packages") for line in lines)
    assert SyncResult.from_xcom(first.to_xcom()) == first

    again, lines = _sync(el9, fixture_buildsystem, source, tmp_path, "two", previous=tmp_path / "one" / "os")
    assert source.fetches == 1 and (again.downloaded, again.linked, again.packages) == (0, 2, 2)
    assert any("upstream repodata unchanged since" in line for line in lines)


def test_an_unreachable_build_system_only_means_dnf_runs(el9, fixture_buildsystem, source, tmp_path):
    _sync(el9, fixture_buildsystem, source, tmp_path, "one")
    source.down = True
    again, lines = _sync(el9, fixture_buildsystem, source, tmp_path, "two", previous=tmp_path / "one" / "os")
    assert source.fetches == 1 and (again.downloaded, again.linked) == (0, 2)  # linked after dnf's --urls pass
    assert any("could not compare repomd.xml with the build system" in line for line in lines)


def test_refusals_and_retriable_failures_are_told_apart(el9, fixture_buildsystem, source, tmp_path):
    with pytest.raises(SyncRefused, match="kind 'iso' is not one of os, debug, source"):
        sync_repo(el9, "BaseOS", "x86_64", "iso", dest=tmp_path / "d", work_dir=tmp_path / "w",
                  key_dir=fixture_buildsystem.key_dir, source=source)
    assert issubclass(SyncRefused, SyncError)


def test_no_gpg_agent_outlives_a_sync(el9, fixture_buildsystem, source, build_faults, tmp_path):
    """Issue 9 finding 2: dnf's key import (repo_gpgcheck) starts a gpg-agent in the workspace's keyring that
    outlives dnf; sync_repo stops it, whether the sync succeeds or fails, and leaves nothing using its dirs."""
    result, lines = _sync(el9, fixture_buildsystem, source, tmp_path, "ok")
    assert result.packages == 2
    assert leakcheck.using([tmp_path]) == []
    build_faults({f"/_blobs/v1/projects/{el9.project_id}/repo/hashed-AppStream/x86_64/Packages/": 500})
    with pytest.raises(SyncError, match="package download"):
        _sync(el9, fixture_buildsystem, source, tmp_path, "failed")
    # a failed sync keeps its workspace for inspection; the agent there ran on (it exits by itself only when its
    # home is deleted, as a successful sync deletes the workspace)
    assert leakcheck.using([tmp_path]) == []
    assert any("stopped the gpg-agent dnf started" in line for line in lines)


def test_a_retry_stops_the_agent_an_earlier_attempt_left(el9, fixture_buildsystem, source, tmp_path):
    """A worker killed mid-sync leaves dnf's agent and workspace; the retry's fresh workspace stops that agent,
    and waits for it to exit, before it removes the keyring it runs in (the agent would otherwise exit only once
    it notices its home is gone)."""
    work = tmp_path / "work"
    ws = dnf.fresh_workspace(work / "reposync-AppStream-x86_64-os")
    keys = [fixture_buildsystem.key_dir / k for k in el9.gpg_keys]
    url = source.repo_url(el9.project_id, "AppStream", "x86_64", "os", hashed=True)
    ws.config.write_text(dnf.dnf_config(ws, [dnf.DnfRepo("AppStream-x86_64-os", url)], keys))
    subprocess.run(dnf.rpm_initdb_argv(ws), check=True, capture_output=True)
    subprocess.run(dnf.reposync_argv(ws, "AppStream-x86_64-os", tmp_path / "partial", major=el9.major,
                                     disttag=el9.disttag, gpgcheck=False), check=True, capture_output=True)
    left = leakcheck.using([work])
    assert [p.name for p, _why in left] == ["gpg-agent"], left  # what the killed attempt leaves behind
    sync_repo(el9, "AppStream", "x86_64", "os", dest=tmp_path / "os", work_dir=work,
              key_dir=fixture_buildsystem.key_dir, source=source, hashed=True, log=lambda _line: None)
    assert leakcheck.using([tmp_path]) == []
