"""repoclosure: the operator around :func:`releng.core.compose.repoclosure.repoclosure` (one repo and arch)."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from releng.operators.common import load_release


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
        from releng.core.compose.repoclosure import ClosureError, ClosureRefused, repoclosure
        from releng.core.run import ToolError
        profile = load_release(self.release)
        try:
            result = repoclosure(profile, self.repo, self.arch, compose_dir=self.compose_dir, work_dir=self.work_dir,
                                 log=self.log.info, error=self.log.error)
        except ClosureRefused as exc:
            raise AirflowFailException(str(exc)) from None
        except (ClosureError, ToolError) as exc:
            raise AirflowException(str(exc)) from None
        return result.to_xcom()
