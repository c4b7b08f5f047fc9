"""BuildSystemHook: repo URLs from RELENG_PERIDOT_URL, repomd.xml fetches, redirects, retries, errors naming the URL."""

from __future__ import annotations

import socket

import pytest

from releng.core.settings import settings
from releng.hooks.buildsystem import BuildSystemError, BuildSystemHook


def _hook(server, **kw) -> BuildSystemHook:
    return BuildSystemHook(f"{server.url}/v1/projects/", backoff=0, **kw)


def test_repo_urls_come_from_the_setting_and_the_project(monkeypatch):
    monkeypatch.setenv("RELENG_PERIDOT_URL", "https://yumrepofs.example/v1/projects/")
    settings.cache_clear()
    try:
        hook = BuildSystemHook()
    finally:
        settings.cache_clear()
    assert hook.repo_url("p1", "BaseOS", "x86_64", hashed=True) == \
        "https://yumrepofs.example/v1/projects/p1/repo/hashed-BaseOS/x86_64"
    assert hook.repo_url("p1", "BaseOS", "aarch64", "debug") == \
        "https://yumrepofs.example/v1/projects/p1/repo/BaseOS/aarch64-debug"
    assert hook.repo_url("p1", "CRB", "x86_64", "source") == "https://yumrepofs.example/v1/projects/p1/repo/CRB/src"


def test_repomd_is_what_the_build_system_serves(buildsystem_server, fixture_buildsystem, el9):
    hook = _hook(buildsystem_server)
    url = hook.repo_url(el9.project_id, "BaseOS", "x86_64", hashed=True)
    served = fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64", hashed=True) / "repodata/repomd.xml"
    assert hook.fetch_repomd(url) == served.read_bytes()


def test_redirects_are_followed(buildsystem_server, fixture_buildsystem, el9):
    """Packages are 302 redirects to a blob path, as on yumrepofs."""
    upstream = fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64", hashed=True)
    rpm = next(upstream.rglob("*.rpm"))
    url = f"{_hook(buildsystem_server).repo_url(el9.project_id, 'BaseOS', 'x86_64', hashed=True)}/" \
          f"{rpm.relative_to(upstream).as_posix()}"
    assert _hook(buildsystem_server).fetch(url) == rpm.read_bytes()


def test_a_server_error_is_retried_then_names_the_url(buildsystem_server, build_faults, el9):
    build_faults({f"/v1/projects/{el9.project_id}/repo/BaseOS/": 500})
    hook = _hook(buildsystem_server, retries=3)
    url = hook.repo_url(el9.project_id, "BaseOS", "x86_64")
    with pytest.raises(BuildSystemError) as err:
        hook.fetch_repomd(url)
    assert f"{url}/repodata/repomd.xml" in str(err.value) and "after 3 attempts (HTTP 500" in str(err.value)
    assert err.value.retriable and err.value.url == f"{url}/repodata/repomd.xml"


def test_a_missing_repo_is_not_retried(buildsystem_server, build_faults, el9):
    build_faults({f"/v1/projects/{el9.project_id}/repo/BaseOS/": 404})
    hook = _hook(buildsystem_server, retries=3)
    url = hook.repo_url(el9.project_id, "BaseOS", "x86_64")
    with pytest.raises(BuildSystemError, match=r"answered HTTP 404 .* for http\S+/repo/BaseOS/x86_64/repodata") as err:
        hook.fetch_repomd(url)
    assert err.value.status == 404 and not err.value.retriable


def test_a_build_system_that_is_down_is_named(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook = BuildSystemHook(f"http://127.0.0.1:{port}/v1/projects", retries=2, backoff=0, timeout=5)
    with pytest.raises(BuildSystemError, match=rf"did not serve http://127.0.0.1:{port}/v1/projects/p/repo/BaseOS/"
                                               r"x86_64/repodata/repomd.xml after 2 attempts .*is it up\?"):
        hook.fetch_repomd(hook.repo_url("p", "BaseOS", "x86_64"))
    assert isinstance(BuildSystemError("x", url="u"), OSError)  # callers that fall back catch OSError
