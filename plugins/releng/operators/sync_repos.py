"""sync_repos: the operator around :func:`releng.core.compose.sync_repos.sync_repo` (one repo, arch and kind)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from releng.operators.common import load_release, site_settings


class SyncReposOperator(BaseOperator):
    """Sync one (release, repo, arch, kind) from the build system with dnf reposync; verify it; link the unchanged.

    :param release: release profile name (``el9``), loaded from RELENG_CONFIG_DIR.
    :param repo: build-system repo id (``BaseOS``, ``all``).
    :param arch: architecture (``x86_64``); for ``kind="source"`` it only names the task's work files.
    :param kind: ``os``, ``debug`` or ``source``.
    :param dest: the tree to fill, e.g. ``ComposeLayout.repo_tree(repo, arch, kind)``.
    :param work_dir: where the private dnf workspace and the dnf log go.
    :param hashed: sync the build system's ``hashed-<repo>`` variant (Packages/<first letter>/).
    :param delete: remove files in ``dest`` that upstream no longer lists.
    :param previous: the same tree in the previous compose; unchanged packages are hard-linked from it.
    :param progress_interval: seconds between progress lines while dnf runs.
    """

    template_fields = ("release", "repo", "arch", "kind", "dest", "work_dir", "previous")
    ui_color = "#e8f0fe"

    def __init__(self, *, release: str, repo: str, arch: str, kind: str = "os", dest: str | Path,
                 work_dir: str | Path, hashed: bool = False, delete: bool = False,
                 previous: str | Path | None = None, progress_interval: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.release = release
        self.repo = repo
        self.arch = arch
        self.kind = kind
        self.dest = str(dest)
        self.work_dir = str(work_dir)
        self.hashed = hashed
        self.delete = delete
        self.previous = str(previous) if previous else None
        self.progress_interval = progress_interval
        self._proc: subprocess.Popen | None = None

    def on_kill(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()

    def _set_proc(self, proc: subprocess.Popen) -> None:
        self._proc = proc

    def execute(self, context: Context) -> dict:
        from releng.core.compose.sync_repos import SyncError, SyncRefused, sync_repo
        from releng.core.repo.trees import CrossMountError
        from releng.core.run import ToolError
        from releng.hooks.buildsystem import BuildSystemHook
        profile = load_release(self.release)
        site = site_settings()
        try:
            result = sync_repo(profile, self.repo, self.arch, self.kind, dest=self.dest, work_dir=self.work_dir,
                               key_dir=site.gpg_key_dir, source=BuildSystemHook(site.peridot_url),
                               hashed=self.hashed, delete=self.delete, previous=self.previous,
                               progress_interval=self.progress_interval, log=self.log.info,
                               warn=self.log.warning, on_start=self._set_proc)
        except (SyncRefused, CrossMountError) as exc:  # a retry cannot help: the trees' mounts must change
            raise AirflowFailException(str(exc)) from None
        except (SyncError, ToolError) as exc:
            raise AirflowException(str(exc)) from None
        return result.to_xcom()
