"""Operators of ``point_release``: the promotion's report with the point release's plan, and its two own steps.

The rest of the DAG is ``promote_to_production``'s operators: the same approval gate, phases, verification,
file lists, hand-off and audit record, acting on the run's record file (never on XComs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from airflow.sdk import Context

from releng.core.settings import Settings, settings
from releng.operators.promotion import PromotionReportOperator, _AfterApprovalOperator

if TYPE_CHECKING:
    from releng.core.promotion.target import PromotionTarget


class PointReleaseReportOperator(PromotionReportOperator):
    """The change report of a point release: the new release directory's changes plus the plan (links to switch
    in staging and production, the previous release to vault), all under the record's digest.

    :param previous: the point release to move to the vault (``X.Y``; default: the ``previous`` param, else the
        newest earlier ``<major>.<n>`` directory in production)
    """

    template_fields: tuple[str, ...] = ("release", "previous")

    def __init__(self, *, previous: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.previous = previous

    def report_plan(self, context: Context) -> Callable[[PromotionTarget], Mapping] | None:
        from releng.core.point_release import plan
        previous = self.previous or context["params"].get("previous") or None
        return plan.record_plan(settings(), previous)


class SwitchLinksOperator(_AfterApprovalOperator):
    """Point ``latest-<major>`` and ``<X.Y>`` in staging, then ``<major>`` and ``latest-<major>`` in production, at
    the new release (each link renamed over the old one)."""

    uses_staging = True  # staging's links are staging writes

    def step_name(self) -> str:
        return "switch_links"

    def action(self, cfg: Settings) -> Callable[[dict], dict]:
        from releng.core.point_release import switch_links
        return lambda record: switch_links.switch_links(record, log=self.log.info)


class VaultReleaseOperator(_AfterApprovalOperator):
    """Move the superseded point release to ``mirror/vault/<short>/X.Y``: hard links, its own checked and signed
    repodata, then out of ``mirror/pub``."""

    def step_name(self) -> str:
        return "vault_release"

    def action(self, cfg: Settings) -> Callable[[dict], dict]:
        from releng.core.point_release import vault_release
        return lambda record: vault_release.vault_step(record, signing_key=cfg.repo_signing_key,
                                                       gnupghome=cfg.gnupghome, log=self.log.info)
