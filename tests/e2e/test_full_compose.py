"""full_compose end to end on the local stack: real dnf, createrepo'd fixture repos, SeaweedFS, the lorax
stand-in, xorriso, productmd; Airflow's dag.test() runs every task in this process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]


def _dag():
    """Parse the DAG under the test's site settings (the lorax backend is chosen at parse time)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "full_compose.py"))
    assert bag.import_errors == {}
    return bag.get_dag("full_compose")


def _run(dag, conf: dict):
    dr = dag.test(run_conf=conf)
    states = {}
    for ti in dr.get_task_instances():
        states.setdefault(ti.task_id, []).append(ti.state)
    return dr, states


def test_full_compose_two_arches(airflow_db, site):
    dag = _dag()
    dr, states = _run(dag, {"release": "el9", "arches": ["x86_64", "aarch64"]})
    assert dr.state == "success", json.dumps(states, indent=1)
    compose_root = Path(site["RELENG_COMPOSE_ROOT"]) / "9"
    (top,) = [p for p in compose_root.iterdir() if p.name.startswith("Rocky-9.7-")]
    assert (top / "STATUS").read_text().strip() == "FINISHED"
    assert (compose_root / "latest-Rocky-9").resolve() == top
