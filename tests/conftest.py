"""Test bootstrap: an isolated AIRFLOW_HOME and SQLite database, set before Airflow is imported."""

from __future__ import annotations

import os
import pathlib
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
_HOME = pathlib.Path(tempfile.mkdtemp(prefix="releng-airflow-home-"))

os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin,approver:user"
# Site settings must never leak in from the developer's shell (a started stack exports them).
for _name in [n for n in os.environ if n.startswith("RELENG_")]:
    del os.environ[_name]

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated, empty metadata database (only for tests that run DAGs or use the API)."""
    from airflow.utils import db

    db.resetdb(skip_init=False)
    yield


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))
