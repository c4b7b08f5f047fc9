"""scheduled_updates as parsed: the schedule from the settings, no catch-up, one run at a time; one trigger_updates
instance per release, named after it, that waits for its general_updates run without a worker slot and fails
alone. general_updates itself has no schedule any more."""

from __future__ import annotations

from pathlib import Path

import pytest

from releng.core.settings import settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bag(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RELENG_UPDATES_SCHEDULE", "30 4 * * 1")
    settings.cache_clear()
    found = DagBag(dag_folder=str(ROOT / "dags"))
    assert found.import_errors == {}
    return found


def test_the_schedule_is_scheduled_updates_not_general_updates(bag):
    from airflow.sdk import CronTriggerTimetable
    from airflow.sdk.definitions.timetables.simple import NullTimetable

    dag = bag.dags["scheduled_updates"]
    assert dag.timetable == CronTriggerTimetable("30 4 * * 1", timezone="UTC")
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.description == "general_updates of el10, el9, el8 at 30 4 * * 1 (cron, UTC)"
    assert dag.owner == "release-eng" and "RELENG_UPDATES_RELEASES" in dag.doc_md
    assert isinstance(bag.dags["general_updates"].timetable, NullTimetable)
    assert bag.dags["general_updates"].max_active_runs == 1


def test_one_trigger_per_release_that_waits_deferred_and_fails_alone(bag):
    from airflow.sdk import DagRunState

    from releng.operators.scheduled_updates import TriggerUpdatesOperator

    dag = bag.dags["scheduled_updates"]
    assert [t.task_id for t in dag.topological_sort()] == ["list_releases", "trigger_updates"]
    assert dag.get_task("list_releases").retries == 0
    trigger = dag.get_task("trigger_updates")
    assert trigger.is_mapped and trigger.operator_class is TriggerUpdatesOperator
    assert trigger.partial_kwargs["map_index_template"] == "{{ task.release }}"
    assert trigger.partial_kwargs["retries"] == 0  # a failed release is rerun by clearing its instance
    assert trigger.partial_kwargs["target_dag_id"] == "general_updates" and "general_updates" in bag.dags

    op = TriggerUpdatesOperator(task_id="trigger_updates", release="el9")
    assert op.trigger_dag_id == "general_updates" and op.conf == {"release": "el9"}
    assert op.wait_for_completion and op.deferrable and op.reset_dag_run and op.fail_when_dag_is_paused
    assert op.allowed_states == [DagRunState.SUCCESS] and op.failed_states == [DagRunState.FAILED]


def test_unpausing_starts_no_missed_run(bag):
    """Issue 13: unpausing (or "unpause on trigger") must not start the latest past tick's run at once beside the
    manual one; the first scheduled run is the next tick. With a start_date, Airflow 3.3 schedules the past one."""
    import pendulum
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags["scheduled_updates"]))
    first = dag.next_dagrun_info(last_automated_run_info=None)
    assert first.run_after > pendulum.now("UTC")
