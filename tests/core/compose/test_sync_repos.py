"""sync_repo called as a script or benchmark calls it: plain arguments, a RepoSource, a log callable, no Airflow."""

from __future__ import annotations

import pytest

from releng.core.compose.sync_repos import SyncError, SyncRefused, SyncResult, sync_repo
from releng.hooks.buildsystem import BuildSystemError, BuildSystemHook


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
