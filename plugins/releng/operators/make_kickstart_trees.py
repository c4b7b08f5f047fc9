"""make_kickstart_trees: the operator around :func:`releng.core.compose.make_kickstart_trees.make_kickstart_trees`."""

from __future__ import annotations

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from releng.operators.compose import layout_of


class MakeKickstartTreesOperator(BaseOperator):
    """Make ``<Repo>/<arch>/kickstart`` from the synced ``os`` tree by hard links.

    :param repo: build-system repo id
    :param arch: arch
    :param summary: prepare_compose's summary
    """

    template_fields = ("repo", "arch", "summary")

    def __init__(self, *, repo: str, arch: str, summary: dict, **kwargs):
        super().__init__(**kwargs)
        self.repo, self.arch, self.summary = repo, arch, summary

    def execute(self, context: Context) -> dict:
        from releng.core.compose.make_kickstart_trees import KickstartTreeError, make_kickstart_trees
        try:
            result = make_kickstart_trees(layout_of(self.summary), self.repo, self.arch, log=self.log.info)
        except KickstartTreeError as exc:
            raise AirflowFailException(str(exc)) from None
        return result.to_xcom()
