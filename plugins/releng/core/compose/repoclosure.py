"""repoclosure: ``dnf repoclosure`` of one synced repo and arch against the repos the profile allows.

The trees are ``<compose_dir>/<RepoDir>/<arch>/os`` (a compose, or general_updates' closure
directory). dnf runs with a private config whose repos are those trees (file:// URLs, no gpgcheck:
the sync checked every signature) and ``--forcearch``, so a foreign arch is checked like the host's.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from releng.core import dnf
from releng.core.arches import COMPATIBLE_ARCHES
from releng.core.layout import LayoutError, repo_tree, safe_part
from releng.core.profile import ReleaseProfile
from releng.core.repo.dnf_output import parse_repoclosure
from releng.core.repo.primary import iter_packages
from releng.core.repo.repomd import REPOMD
from releng.core.run import run

SHOW_UNRESOLVED = 20

Log = Callable[[str], None]


class ClosureError(RuntimeError):
    """dnf repoclosure failed without naming unresolved dependencies; a retry may help."""


class ClosureRefused(ClosureError):
    """The repo does not close, or cannot be checked as asked (parameters, unsynced trees); retrying does not help."""


@dataclass(frozen=True)
class ClosureResult:
    """One repo and arch that closes; ``to_xcom`` is the task's return value."""

    repo: str
    arch: str
    checked: int
    ok: bool = True

    def to_xcom(self) -> dict:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: dict) -> ClosureResult:
        return cls(**value)


def format_unresolved(unresolved: dict[str, list[str]], limit: int = SHOW_UNRESOLVED) -> str:
    """``package -> dep, dep`` lines for the first ``limit`` packages, then how many more there are."""
    lines = [f"  {pkg} -> {', '.join(deps)}" for pkg, deps in list(unresolved.items())[:limit]]
    if len(unresolved) > limit:
        lines.append(f"  ... and {len(unresolved) - limit} more packages (the task log lists all)")
    return "\n".join(lines)


def repoclosure(profile: ReleaseProfile, repo: str, arch: str, *, compose_dir: Path | str, work_dir: Path | str,
                log: Log = print, error: Log | None = None) -> ClosureResult:
    """Check that every package of ``repo`` on ``arch`` has its dependencies met by the profile's repoclosure map.

    :param repo: build-system repo id to check; must be a key of the profile's ``repoclosure`` map.
    :param arch: architecture; foreign arches work (``--forcearch``).
    :param compose_dir: the directory holding ``<RepoDir>/<arch>/os`` trees.
    :param work_dir: where the private dnf workspace and the dnf log go.
    :param log: receives progress lines; ``error`` (default ``log``) the full list of unresolved dependencies.
    :raises ClosureRefused: unresolved dependencies or bad parameters. :raises ClosureError: dnf failed otherwise.
    """
    error = error or log
    if repo not in profile.repoclosure:
        raise ClosureRefused(
            f"repo {repo!r} is not in the repoclosure map of {profile.path} "
            f"(it has {', '.join(profile.repoclosure) or 'nothing'}); add `{repo}: [repos it may depend on]` "
            "under `repoclosure` there, or do not check this repo"
        )
    try:
        arch = safe_part(arch, "arch")
    except LayoutError as exc:
        raise ClosureRefused(str(exc)) from None
    if arch not in profile.repo_arches(repo) or arch not in COMPATIBLE_ARCHES:
        raise ClosureRefused(f"{repo} in {profile.name} has no arch {arch!r}; "
                             f"it has {', '.join(profile.repo_arches(repo))}")
    repos = (repo, *profile.repoclosure[repo])
    trees = {r: repo_tree(profile, Path(compose_dir), r, arch) for r in repos}
    unsynced = [str(t) for t in trees.values() if not (t / REPOMD).is_file()]
    if unsynced:
        raise ClosureRefused(f"repoclosure of {repo} {arch} needs these synced trees, which have no "
                             f"{REPOMD}: {', '.join(unsynced)}; sync them first")

    work = Path(work_dir)
    ws = dnf.fresh_workspace(work / f"repoclosure-{repo}-{arch}")
    ws.config.write_text(dnf.dnf_config(ws, [dnf.DnfRepo(r, t.resolve().as_uri()) for r, t in trees.items()],
                                        [], gpgcheck=False))
    argv = dnf.repoclosure_argv(ws, repo, list(repos), arch, major=profile.major, disttag=profile.disttag)
    log(f"{repo} {arch}: checking closure against {', '.join(repos)}")
    result: subprocess.CompletedProcess = run(argv, check=False, what="dnf repoclosure", env=dnf.dnf_env())
    log_path = work / f"repoclosure-{repo}-{arch}.log"
    log_path.write_text(f"$ {shlex.join(argv)}\n{result.stdout}{result.stderr}")

    unresolved = parse_repoclosure(result.stdout)
    if unresolved:
        count = sum(len(deps) for deps in unresolved.values())
        error(f"{repo} {arch}: {count} unresolved dependencies in {len(unresolved)} packages:\n"
              + format_unresolved(unresolved, limit=len(unresolved)))
        raise ClosureRefused(
            f"{repo} {arch} does not close against {', '.join(repos)}: {count} unresolved dependencies in "
            f"{len(unresolved)} packages:\n{format_unresolved(unresolved)}\n"
            f"Fix the packages in the build system, or the repoclosure map in {profile.path}."
        )
    if result.returncode != 0:
        last = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise ClosureError(f"dnf repoclosure of {repo} {arch} failed (exit {result.returncode}) without "
                           f"naming unresolved dependencies:\n{last}\nFull log: {log_path}")
    allowed = set(COMPATIBLE_ARCHES[arch])
    checked = sum(1 for p in iter_packages(trees[repo]) if p.arch in allowed)
    log(f"{repo} {arch}: {checked} packages close against {', '.join(repos)}")
    shutil.rmtree(ws.root, ignore_errors=True)
    return ClosureResult(repo, arch, checked)
