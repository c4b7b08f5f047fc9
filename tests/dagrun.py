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


def resume_run(dag, run_id: str):
    """Run a DAG run again after its tasks were cleared (through the REST API), as the scheduler would.

    ``dag.test()`` only runs new runs; this is its loop over an existing run: the run is set running,
    the scheduler's dependency check picks the cleared tasks and each one runs in this process.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState, TaskInstanceState

    session = settings.Session()
    dr = session.query(DagRun).filter_by(dag_id=dag.dag_id, run_id=run_id).one()
    dr.dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    dr.state = DagRunState.RUNNING
    session.commit()
    while dr.state == DagRunState.RUNNING:
        session.expire_all()
        schedulable, _ = dr.update_state(session=session)
        for ti in schedulable:
            ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        for ti in [t for t in dr.get_task_instances(session=session) if t.state == TaskInstanceState.SCHEDULED]:
            _run_task(ti=ti, task=dag.task_dict[ti.task_id])
    return dr
