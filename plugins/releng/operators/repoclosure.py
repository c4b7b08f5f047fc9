"""RepoclosureOperator: ``dnf repoclosure`` of one synced repo and arch against the repos the profile allows."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from releng.core import dnf
from releng.core.arches import COMPATIBLE_ARCHES
from releng.core.repodata import REPOMD, iter_packages, parse_repoclosure
from releng.operators.reposync import checked_part, dnf_env, fresh_workspace, load_release

SHOW_UNRESOLVED = 20


def format_unresolved(unresolved: dict[str, list[str]], limit: int = SHOW_UNRESOLVED) -> str:
    """``package -> dep, dep`` lines for the first ``limit`` packages, then how many more there are."""
    lines = [f"  {pkg} -> {', '.join(deps)}" for pkg, deps in list(unresolved.items())[:limit]]
    if len(unresolved) > limit:
        lines.append(f"  ... and {len(unresolved) - limit} more packages (the task log lists all)")
    return "\n".join(lines)


class RepoclosureOperator(BaseOperator):
    """Check that every package of one synced repo and arch has its dependencies met by the profile's repoclosure map.

    :param release: release profile name (``el9``), loaded from RELENG_CONFIG_DIR.
    :param repo: build-system repo id to check; must be a key of the profile's ``repoclosure`` map.
    :param arch: architecture; foreign arches work (``--forcearch``).
    :param compose_dir: the compose's ``compose/`` directory holding ``<RepoDir>/<arch>/os`` trees.
    :param work_dir: where the private dnf workspace and the dnf log go.
    """

    template_fields = ("release", "repo", "arch", "compose_dir", "work_dir")
    ui_color = "#e6f4ea"

    def __init__(self, *, release: str, repo: str, arch: str, compose_dir: str | Path, work_dir: str | Path,
                 **kwargs):
        super().__init__(**kwargs)
        self.release = release
        self.repo = repo
        self.arch = arch
        self.compose_dir = str(compose_dir)
        self.work_dir = str(work_dir)

    def execute(self, context: Context) -> dict:
        profile = load_release(self.release)
        repo = self.repo
        if repo not in profile.repoclosure:
            raise AirflowFailException(
                f"repo {repo!r} is not in the repoclosure map of {profile.path} "
                f"(it has {', '.join(profile.repoclosure) or 'nothing'}); add `{repo}: [repos it may depend on]` "
                "under `repoclosure` there, or do not check this repo"
            )
        arch = checked_part(self.arch, "arch")
        if arch not in profile.repo_arches(repo) or arch not in COMPATIBLE_ARCHES:
            raise AirflowFailException(f"{repo} in {profile.name} has no arch {arch!r}; "
                                       f"it has {', '.join(profile.repo_arches(repo))}")
        repos = (repo, *profile.repoclosure[repo])
        trees = {r: Path(self.compose_dir) / profile.repo(r).dir / arch / "os" for r in repos}
        unsynced = [str(t) for t in trees.values() if not (t / REPOMD).is_file()]
        if unsynced:
            raise AirflowFailException(f"repoclosure of {repo} {arch} needs these synced trees, which have no "
                                       f"{REPOMD}: {', '.join(unsynced)}; sync them first")

        work = Path(self.work_dir)
        ws = fresh_workspace(work / f"repoclosure-{repo}-{arch}")
        ws.config.write_text(dnf.dnf_config(ws, [dnf.DnfRepo(r, t.resolve().as_uri()) for r, t in trees.items()],
                                            [], gpgcheck=False))
        argv = dnf.repoclosure_argv(ws, repo, list(repos), arch, major=profile.major, disttag=profile.disttag)
        self.log.info("%s %s: checking closure against %s", repo, arch, ", ".join(repos))
        result = subprocess.run(argv, capture_output=True, text=True, errors="replace", env=dnf_env(),
                                stdin=subprocess.DEVNULL)
        log_path = work / f"repoclosure-{repo}-{arch}.log"
        log_path.write_text(f"$ {shlex.join(argv)}\n{result.stdout}{result.stderr}")

        unresolved = parse_repoclosure(result.stdout)
        if unresolved:
            count = sum(len(deps) for deps in unresolved.values())
            self.log.error("%s %s: %d unresolved dependencies in %d packages:\n%s", repo, arch, count,
                           len(unresolved), format_unresolved(unresolved, limit=len(unresolved)))
            raise AirflowFailException(
                f"{repo} {arch} does not close against {', '.join(repos)}: {count} unresolved dependencies in "
                f"{len(unresolved)} packages:\n{format_unresolved(unresolved)}\n"
                f"Fix the packages in the build system, or the repoclosure map in {profile.path}."
            )
        if result.returncode != 0:
            last = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise AirflowException(f"dnf repoclosure of {repo} {arch} failed (exit {result.returncode}) without "
                                   f"naming unresolved dependencies:\n{last}\nFull log: {log_path}")
        allowed = set(COMPATIBLE_ARCHES[arch])
        checked = sum(1 for p in iter_packages(trees[repo]) if p.arch in allowed)
        self.log.info("%s %s: %d packages close against %s", repo, arch, checked, ", ".join(repos))
        shutil.rmtree(ws.root, ignore_errors=True)
        return {"repo": repo, "arch": arch, "checked": checked, "ok": True}
