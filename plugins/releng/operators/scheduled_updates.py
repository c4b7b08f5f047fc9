"""Operators of ``scheduled_updates``: list the releases the schedule covers, and start and wait for one
``general_updates`` run per release (:mod:`releng.core.releases` decides which releases and names the runs)."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import BaseOperator, Context, DagRunState
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from releng.core.profile import ConfigDirError, release_choice
from releng.core.releases import (
    UPDATES_DAG,
    ReleasesError,
    check_release,
    unknown_releases,
    updates_releases,
    updates_run_id,
)
from releng.operators.common import site_settings

# How often the triggerer looks at a started run's state while trigger_updates waits (a database query).
POLL_SECONDS = 30


class ListReleasesOperator(BaseOperator):
    """list_releases: the releases this run updates, ``[{"release": name}, ...]`` for trigger_updates to map over.

    RELENG_UPDATES_RELEASES as listed, or every profile in RELENG_CONFIG_DIR, newest first. A listed name that is
    not a profile is named here and fails its own trigger_updates instance, not the other releases. Fails when
    the updates DAG is paused: the runs it would start would wait for ever.

    :param target_dag_id: the DAG started once per release
    """

    ui_color = "#e8f4ea"

    def __init__(self, *, target_dag_id: str = UPDATES_DAG, **kwargs):
        super().__init__(**kwargs)
        self.target_dag_id = target_dag_id

    def execute(self, context: Context) -> list[dict[str, str]]:
        site = site_settings()
        try:
            names = updates_releases(site.updates_releases, release_choice(site.config_dir))
        except (ConfigDirError, ReleasesError) as exc:
            raise AirflowFailException(str(exc)) from None
        if context["ti"].get_dag(self.target_dag_id).is_paused:
            raise AirflowFailException(
                f"{self.target_dag_id} is paused, so the runs this task would start for {', '.join(names)} would "
                f"never run; unpause {self.target_dag_id} (its toggle in the UI, or `airflow dags unpause "
                f"{self.target_dag_id}`), then clear this task")
        source = ("RELENG_UPDATES_RELEASES" if site.updates_releases
                  else f"every profile in RELENG_CONFIG_DIR={site.config_dir}")
        self.log.info("updates for %d releases (%s): %s", len(names), source, ", ".join(names))
        unknown = unknown_releases(site.updates_releases, site.config_dir)
        if unknown:
            self.log.warning("RELENG_UPDATES_RELEASES names %s, not profiles in %s: their trigger_updates instances "
                             "will fail; fix the setting or add the profiles", ", ".join(unknown), site.config_dir)
        return [{"release": name} for name in names]


class TriggerUpdatesOperator(TriggerDagRunOperator):
    """trigger_updates (mapped: release): start the release's general_updates run and wait for its end in the
    triggerer, without holding a worker slot. Fails when that run fails, alone: the other releases' instances
    and runs go on.

    The run id is ``scheduled_updates__<release>__<this run's scheduled time>``. Clearing the instance runs
    that same general_updates run again (from the start).

    :param release: the release profile to update
    :param target_dag_id: the updates DAG (its ``release`` param gets ``release``)
    """

    def __init__(self, *, release: str, target_dag_id: str = UPDATES_DAG, poke_interval: int = POLL_SECONDS,
                 **kwargs):
        super().__init__(
            trigger_dag_id=target_dag_id, conf={"release": release}, wait_for_completion=True, deferrable=True,
            allowed_states=[DagRunState.SUCCESS], failed_states=[DagRunState.FAILED], reset_dag_run=True,
            fail_when_dag_is_paused=True, poke_interval=poke_interval, openlineage_inject_parent_info=False,
            **kwargs)
        self.release = release

    def execute(self, context: Context) -> None:
        site = site_settings()
        try:
            check_release(self.release, site.config_dir)
        except ReleasesError as exc:
            raise AirflowFailException(str(exc)) from None
        self.trigger_run_id = updates_run_id(self.release, context["dag_run"].run_after)
        self.note = f"{self.release}: started by {context['dag'].dag_id} run {context['run_id']}"
        self.log.info("starting %s run %s for %s", self.trigger_dag_id, self.trigger_run_id, self.release)
        super().execute(context)

    def execute_complete(self, context: Context, event: tuple[str, dict[str, Any]]) -> None:
        try:
            super().execute_complete(context, event)
        except AirflowException:
            run_ids = ", ".join(event[1].get("run_ids", []))
            raise AirflowFailException(
                f"{self.trigger_dag_id} run {run_ids} for {self.release} failed; its failed tasks' logs say why "
                f"(the Triggered DAG link). Fix the cause, then clear this task to run {self.release}'s updates "
                "again") from None
        self.log.info("%s run for %s succeeded", self.trigger_dag_id, self.release)
