"""Run a project DAG end to end in this process with dag.test(), parsed under the test's site settings."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_dag(dag_id: str):
    """Parse ``dags/<dag_id>.py`` now: release lists, schedules and the lorax backend are read at parse time."""
    from airflow.dag_processing.dagbag import DagBag

    from releng.core.settings import settings

    settings.cache_clear()
    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


def run_dag(dag_id: str, conf: dict):
    """(dag run, {task_id: [state of each instance]})."""
    dr = parse_dag(dag_id).test(run_conf=conf)
    states: dict[str, list[str]] = {}
    for ti in dr.get_task_instances():
        states.setdefault(ti.task_id, []).append(ti.state)
    return dr, states
