"""The dnf reposync that sync_repos builds on, through the site settings against the fixture build system:
the hermetic config, the keys in a private rpm database, signatures checked, failures not hidden."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from releng.core import dnf
from releng.core.gpg import agent_session
from releng.core.settings import Settings
from releng.hooks.buildsystem import BuildSystemHook


def _settings(server, fixture, key_dir: Path | None = None) -> Settings:
    return Settings.from_env({
        "RELENG_PERIDOT_URL": f"{server.url}/v1/projects",
        "RELENG_GPG_KEY_DIR": str(key_dir or fixture.key_dir),
    })


def _reposync(settings: Settings, profile, repo: str, arch: str, kind: str, dest: Path,
              work: Path) -> subprocess.CompletedProcess:
    """What the pipeline does for one (repo, arch, kind): private config, keys in an installroot, reposync."""
    ws = dnf.DnfWorkspace(work)
    ws.root.mkdir(parents=True)
    repoid = f"{repo}-{arch}-{kind}"
    url = BuildSystemHook(settings.peridot_url).repo_url(profile.project_id, repo, arch, kind, hashed=True)
    keys = [settings.gpg_key_dir / k for k in profile.gpg_keys]
    ws.config.write_text(dnf.dnf_config(ws, [dnf.DnfRepo(repoid, url)], keys))
    for argv in [dnf.rpm_initdb_argv(ws), *(dnf.rpm_import_argv(ws, k) for k in keys if k.exists())]:
        subprocess.run(argv, check=True, capture_output=True)
    try:
        return subprocess.run(dnf.reposync_argv(ws, repoid, dest, major=profile.major, disttag=profile.disttag),
                              capture_output=True, text=True)
    finally:
        dnf.stop_gpg_agents(ws)  # as sync_repo does: dnf leaves the agent of its key import running


@pytest.mark.parametrize("repo,arch,kind", [("AppStream", "aarch64", "os"), ("BaseOS", "x86_64", "debug"),
                                            ("CRB", "x86_64", "source")])
def test_reposync_downloads_every_package_with_signatures_checked(buildsystem_server, fixture_buildsystem, el9,
                                                                  tmp_path, repo, arch, kind):
    settings = _settings(buildsystem_server, fixture_buildsystem)
    dest = tmp_path / "dest"
    result = _reposync(settings, el9, repo, arch, kind, dest, tmp_path / "dnf")
    assert result.returncode == 0, result.stdout + result.stderr
    upstream = fixture_buildsystem.repo_dir(el9.project_id, repo, "src" if kind == "source" else arch,
                                            hashed=True, debug=kind == "debug")
    expected = sorted(p.relative_to(upstream) for p in upstream.rglob("*.rpm"))
    got = sorted(p.relative_to(dest) for p in dest.rglob("*.rpm"))
    assert got == expected and got
    for rel in got:
        assert (dest / rel).read_bytes() == (upstream / rel).read_bytes()
    assert (dest / "repodata" / "repomd.xml.asc").is_file()  # repo_gpgcheck fetched and checked the signature


def test_reposync_with_the_wrong_key_fails(buildsystem_server, fixture_buildsystem, el9, tmp_path):
    other = tmp_path / "keys"
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(gnupg), "PATH": "/usr/bin:/bin"}
    with agent_session(gnupg):
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Other <o@x.invalid>", "rsa2048",
                        "sign", "never"], check=True, capture_output=True, env=env)
    other.mkdir()
    for name in el9.gpg_keys:
        (other / name).write_bytes(subprocess.run(["gpg", "--batch", "--armor", "--export"], check=True,
                                                  capture_output=True, env=env).stdout)
    settings = _settings(buildsystem_server, fixture_buildsystem, other)
    result = _reposync(settings, el9, "BaseOS", "x86_64", "os", tmp_path / "dest", tmp_path / "dnf")
    assert result.returncode != 0
    assert "GPG signature verification error" in result.stdout + result.stderr
    assert not list((tmp_path / "dest").rglob("*.rpm"))


@pytest.mark.parametrize("status", [404, 500])
def test_reposync_fails_when_the_build_system_errors(buildsystem_server, fixture_buildsystem, build_faults, el9,
                                                      tmp_path, status):
    build_faults({f"/v1/projects/{el9.project_id}/repo/hashed-BaseOS/": status})
    settings = _settings(buildsystem_server, fixture_buildsystem)
    result = _reposync(settings, el9, "BaseOS", "x86_64", "os", tmp_path / "dest", tmp_path / "dnf")
    # the host dnf.conf's skip_if_unavailable=True would turn this into a silent success
    assert result.returncode == 1
    assert "Failed to download metadata for repo" in result.stderr


def test_reposync_fails_when_a_package_download_fails(buildsystem_server, fixture_buildsystem, build_faults, el9,
                                                       tmp_path):
    build_faults({f"/_blobs/v1/projects/{el9.project_id}/repo/hashed-BaseOS/x86_64/Packages/l/": 500})
    settings = _settings(buildsystem_server, fixture_buildsystem)
    result = _reposync(settings, el9, "BaseOS", "x86_64", "os", tmp_path / "dest", tmp_path / "dnf")
    assert result.returncode == 1
    assert "[FAILED] libfoo-1.0-1.el9.x86_64.rpm" in result.stdout + result.stderr


def test_dnf_argv_builders(tmp_path):
    ws = dnf.DnfWorkspace(tmp_path)
    assert dnf.yumrepofs_url("http://b/v1/projects/", "p", "BaseOS", "x86_64", "debug", hashed=True) == \
        "http://b/v1/projects/p/repo/hashed-BaseOS/x86_64-debug"
    assert dnf.yumrepofs_url("http://b", "p", "all", "x86_64", "source") == "http://b/p/repo/all/src"
    with pytest.raises(ValueError, match="unknown repo kind 'iso'"):
        dnf.yumrepofs_url("http://b", "p", "BaseOS", "x86_64", "iso")
    conf = dnf.dnf_config(ws, [dnf.DnfRepo("b", "http://b")], [Path("/k/A"), Path("/k/B")])
    assert "skip_if_unavailable=False" in conf and "reposdir=/dev/null" in conf and "metadata_expire=0" in conf
    assert "gpgkey=file:///k/A file:///k/B" in conf and "repo_gpgcheck=1" in conf
    argv = dnf.reposync_argv(ws, "b", Path("/d"), major=9, disttag="el9", delete=True)
    assert argv[:3] == ["dnf", "-y", "-c"] and "--gpgcheck" in argv and "--delete" in argv
    assert "--setopt=module_platform_id=platform:el9" in argv and "--norepopath" in argv
    closure = dnf.repoclosure_argv(ws, "AppStream", ["BaseOS", "AppStream"], "aarch64", major=9, disttag="el9")
    assert closure[-5:] == ["--arch=aarch64", "--arch=noarch", "--repo=BaseOS", "--repo=AppStream",
                            "--check=AppStream"]
    assert "--forcearch=aarch64" in closure
