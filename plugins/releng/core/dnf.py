"""dnf reposync/repoclosure: build-system URLs, a hermetic dnf config, and argv builders.

The host's ``/etc/dnf/dnf.conf`` is never used: Debian's sets
``skip_if_unavailable=True``, which makes a dead repo "succeed" with nothing
synced. Every run gets its own config, repo dir, cache and an installroot
whose rpm database holds only the release's keys, so ``--gpgcheck`` checks
against exactly the keys the profile names.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from releng.core.arches import COMPATIBLE_ARCHES
from releng.core.gpg import stop_agents

REPO_KINDS = ("os", "debug", "source")


def yumrepofs_url(base_url: str, project_id: str, repo_id: str, arch: str, kind: str = "os",
                  *, hashed: bool = False) -> str:
    """The build system's URL of one repo: ``<base>/<project>/repo/[hashed-]<repo>/<arch>[-debug]|src``."""
    if kind not in REPO_KINDS:
        raise ValueError(f"unknown repo kind {kind!r}; use one of {', '.join(REPO_KINDS)}")
    leaf = "src" if kind == "source" else f"{arch}-debug" if kind == "debug" else arch
    name = f"hashed-{repo_id}" if hashed else repo_id
    return f"{base_url.rstrip('/')}/{project_id}/repo/{name}/{leaf}"


@dataclass(frozen=True)
class DnfRepo:
    """One repo section: dnf id and base URL (http(s) or file://)."""

    repoid: str
    baseurl: str


@dataclass(frozen=True)
class DnfWorkspace:
    """Private dnf state for one run: config file, cache and the installroot holding the keys."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "dnf.conf"

    @property
    def installroot(self) -> Path:
        return self.root / "installroot"

    @property
    def cachedir(self) -> Path:
        # dnf puts the cache inside the installroot; keep it there explicitly.
        return Path("/var/cache/releng-dnf")


def fresh_workspace(path: Path) -> DnfWorkspace:
    """An empty private dnf workspace at ``path`` (a retry never sees an earlier attempt's cache or rpmdb).

    The gpg-agents of an earlier attempt that was killed before it stopped them are stopped first (and waited
    for) rather than left to notice that their home was deleted."""
    if path.exists():
        stop_gpg_agents(DnfWorkspace(path))
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return DnfWorkspace(path)


def pubrings(ws: DnfWorkspace) -> list[Path]:
    """The GnuPG homes dnf made in the workspace's cache (``<cachedir>/<repo>-<hash>/pubring``): with
    ``repo_gpgcheck`` dnf imports each repo's keys there through gpg, which starts a gpg-agent in each."""
    cache = ws.installroot / ws.cachedir.relative_to("/")
    return sorted(p for p in cache.glob("*/pubring") if p.is_dir())


def stop_gpg_agents(ws: DnfWorkspace) -> list[int]:
    """Stop the gpg-agents dnf started in the workspace's keyrings (dnf leaves them running when it exits);
    the pids of those that were running."""
    return [pid for home in pubrings(ws) if (pid := stop_agents(home)) is not None]


def dnf_env() -> dict[str, str]:
    """dnf's environment: English messages (they are parsed) and no Python path from this process's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["LC_ALL"] = "C.UTF-8"
    return env


# Downloads dnf runs at once per reposync (dnf's default is 3, its maximum 20). With the reposync pool's 4
# slots that is at most 40 connections to the build system; bench/reposync.py --limit measures the choice.
MAX_PARALLEL_DOWNLOADS = 10


def dnf_config(ws: DnfWorkspace, repos: Iterable[DnfRepo], gpg_keys: Sequence[Path], *,
               gpgcheck: bool = True, repo_gpgcheck: bool | None = None) -> str:
    """The hermetic dnf.conf text with the repo sections inline (``repo_gpgcheck`` defaults to ``gpgcheck``)."""
    check = "1" if gpgcheck else "0"
    repo_check = check if repo_gpgcheck is None else "1" if repo_gpgcheck else "0"
    lines = [
        "[main]",
        f"gpgcheck={check}",
        f"repo_gpgcheck={repo_check}",
        "reposdir=/dev/null",
        f"cachedir={ws.cachedir}",
        f"persistdir={ws.cachedir}/persist",
        f"logdir={ws.cachedir}/log",
        "keepcache=0",
        "skip_if_unavailable=False",
        "install_weak_deps=False",
        "metadata_expire=0",
        "retries=3",
        f"max_parallel_downloads={MAX_PARALLEL_DOWNLOADS}",
        "",
    ]
    keys = " ".join(f"file://{Path(k).resolve()}" for k in gpg_keys)
    for repo in repos:
        lines += [f"[{repo.repoid}]", f"name={repo.repoid}", f"baseurl={repo.baseurl}", "enabled=1"]
        if gpgcheck:
            lines.append(f"gpgkey={keys}")
        lines.append("")
    return "\n".join(lines)


def rpm_initdb_argv(ws: DnfWorkspace) -> list[str]:
    return ["rpm", "--root", str(ws.installroot), "--initdb"]


def rpm_import_argv(ws: DnfWorkspace, key: Path) -> list[str]:
    return ["rpm", "--root", str(ws.installroot), "--import", str(key)]


def _dnf_base(ws: DnfWorkspace, major: int, disttag: str) -> list[str]:
    return ["dnf", "-y", "-c", str(ws.config), f"--installroot={ws.installroot}", f"--releasever={major}",
            f"--setopt=module_platform_id=platform:{disttag}"]


def reposync_argv(ws: DnfWorkspace, repoid: str, dest: Path, *, major: int, disttag: str,
                  gpgcheck: bool = True, delete: bool = False) -> list[str]:
    """``dnf reposync`` of one repo into ``dest`` (Packages/ and repodata/ directly under it)."""
    argv = [*_dnf_base(ws, major, disttag), "reposync", f"--repoid={repoid}", "--download-metadata",
            "--remote-time", "--norepopath", "-p", str(dest)]
    if gpgcheck:
        argv.append("--gpgcheck")
    if delete:
        argv.append("--delete")
    return argv


def repoclosure_argv(ws: DnfWorkspace, check: str, repoids: Sequence[str], arch: str, *, major: int,
                     disttag: str) -> list[str]:
    """``dnf repoclosure`` checking ``check`` against ``repoids``; --forcearch makes foreign arches work."""
    argv = [*_dnf_base(ws, major, disttag), "repoclosure", f"--forcearch={arch}"]
    argv += [f"--arch={a}" for a in COMPATIBLE_ARCHES[arch]]
    argv += [f"--repo={r}" for r in repoids]
    return [*argv, f"--check={check}"]


def install_argv(ws: DnfWorkspace, specs: Sequence[str], arch: str, *, major: int, disttag: str) -> list[str]:
    """``dnf install`` of ``specs`` (``@group`` or package names) into the workspace's installroot as ``arch``.

    Scriptlets and triggers are off (``tsflags=noscripts,notriggers``): nothing from the packages runs on this
    host, which also lets ``--forcearch`` unpack a foreign arch's packages. No documentation is unpacked. No
    plugin runs: dnf-plugins-core's ``local`` plugin (enabled on Debian) would copy every installed package into
    the host's ``/var/lib/dnf/plugins/local`` and offer them back as a repo.
    """
    return [*_dnf_base(ws, major, disttag), "--noplugins", f"--forcearch={arch}",
            "--setopt=tsflags=noscripts,notriggers,nodocs", "install", *specs]
