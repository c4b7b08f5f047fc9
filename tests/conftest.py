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


# --- local stack services for tests (real tools, free ports) ---------------------------------


@pytest.fixture(scope="session")
def el9():
    from releng.core.profile import load_profile

    return load_profile(ROOT / "config" / "releases" / "el9.yaml")


@pytest.fixture(scope="session")
def fixture_buildsystem(el9):
    """The el9 fixture build system, cached in .stack/test-cache across runs (rebuilt when its inputs change)."""
    from dev import buildsystem

    return buildsystem.build(ROOT / ".stack" / "test-cache" / "buildsystem", [el9], log=lambda _msg: None)


@pytest.fixture(scope="session")
def buildsystem_server(fixture_buildsystem):
    from dev.buildsystem import BuildSystemServer

    server = BuildSystemServer(fixture_buildsystem.root).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def build_faults(buildsystem_server):
    """Set build-system faults for one test: ``build_faults({"/v1/projects/x": 500})``."""
    yield buildsystem_server.faults.update
    buildsystem_server.faults.clear()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on free ports; yields (url, datadir)."""
    from dev import stack

    datadir = tmp_path_factory.mktemp("s3")
    service, _ = stack.start_s3(datadir / "data", stack.free_port(), datadir / "s3.log")
    yield service.url, datadir / "data"
    service.stop()
