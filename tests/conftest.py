"""Test bootstrap: an isolated AIRFLOW_HOME and SQLite database, set before Airflow is imported."""

from __future__ import annotations

import os
import pathlib
import tempfile

from tests.leakcheck import Session

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Site settings must never leak in from the developer's shell (a started stack exports them).
for _name in [n for n in os.environ if n.startswith("RELENG_")]:
    del os.environ[_name]
# Before anything starts: the process table and /tmp as they were, the session's id and private TMPDIR.
LEAKS = Session(ROOT)
_HOME = pathlib.Path(tempfile.mkdtemp(prefix="airflow-home-"))  # in the private TMPDIR, removed at the end

os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin,approver:user"

import pytest  # noqa: E402

# --- the session leaves nothing behind (tests/leakcheck.py) ----------------------------------------


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    LEAKS.add_root(session.config._tmp_path_factory.getbasetemp())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    yield
    LEAKS.after_test(item.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Fail the run when the tests left a process running or a file in the temp directories."""
    try:
        leftovers = LEAKS.check(ignore=[_HOME])
    finally:
        LEAKS.cleanup()
    if leftovers and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if LEAKS.leftovers or LEAKS.unattributed:
        terminalreporter.section("leftovers", sep="=", red=True, bold=True)
        terminalreporter.line(LEAKS.report(), red=True)


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
def el9lh():
    from releng.core.profile import load_profile

    return load_profile(ROOT / "config" / "releases" / "el9lh.yaml")


@pytest.fixture(scope="session")
def el9_sig():
    from releng.core.profile import load_profile

    return load_profile(ROOT / "config" / "releases" / "el9-sig-cloud.yaml")


@pytest.fixture(scope="session")
def fixture_buildsystem(el9, el9lh, el9_sig):
    """The fixture build system of el9, its lookahead (el9's packages under its own project) and the cloud SIG,
    cached in .stack/test-cache across runs (rebuilt when its inputs change)."""
    from dev import buildsystem

    return buildsystem.build(ROOT / ".stack" / "test-cache" / "buildsystem", [el9, el9lh, el9_sig],
                             log=lambda _msg: None)


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


@pytest.fixture(scope="session")
def _shared_stack(tmp_path_factory):
    from tests.livestack import SharedStack

    shared = SharedStack(tmp_path_factory.mktemp("stack"))
    yield shared
    shared.stop()


@pytest.fixture
def live_stack(_shared_stack):
    """The session's running local stack (tests/livestack.py), started on first use and stopped at the end."""
    return _shared_stack.get()


@pytest.fixture(autouse=True)
def _fresh_settings():
    """settings() is read once per process; tests that set RELENG_* must see their own values."""
    from releng.core.settings import settings

    settings.cache_clear()
    yield
    settings.cache_clear()


@pytest.fixture
def site(tmp_path, monkeypatch, buildsystem_server, fixture_buildsystem, s3_server, el9):
    """A complete local site for pipeline runs: RELENG_* pointing at tmp trees, the fixture build system,
    a fresh bucket on SeaweedFS holding the el9 fixture cloud images, the local lorax backend."""
    import uuid

    from dev import extrafiles, stack

    url, datadir = s3_server
    bucket = f"releng-{uuid.uuid4().hex[:12]}"
    extra_git = extrafiles.build(tmp_path / "git", [el9], fixture_buildsystem.key_dir)
    stack.seed_s3(stack.s3_client(url, datadir), bucket, [el9], arches=["x86_64", "aarch64"], log=lambda _m: None)
    env = {
        "RELENG_CONFIG_DIR": str(ROOT / "config" / "releases"),
        "RELENG_COMPOSE_ROOT": str(tmp_path / "compose"),
        "RELENG_STAGING_ROOT": str(tmp_path / "repos-staging"),
        "RELENG_PRODUCTION_ROOT": str(tmp_path / "repos-production"),
        "RELENG_PERIDOT_URL": f"{buildsystem_server.url}/v1/projects",
        "RELENG_S3_BUCKET": bucket,
        "RELENG_S3_CONN_ID": "releng_s3",
        "RELENG_LORAX_BACKEND": "local",
        "RELENG_APPROVERS": "approver",
        "RELENG_GPG_KEY_DIR": str(fixture_buildsystem.key_dir),
        "AIRFLOW_CONN_RELENG_S3": stack.s3_connection(url, datadir),
        "RELENG_EXTRA_FILES_GIT": f"file://{extra_git}",
        "RELENG_TEST_SITE": "true",  # the lorax stand-in builds the boot trees
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for root in ("RELENG_COMPOSE_ROOT", "RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT"):
        pathlib.Path(env[root]).mkdir(parents=True)
    return env
