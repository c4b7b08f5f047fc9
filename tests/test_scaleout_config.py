"""docker-compose.yaml's Airflow settings work against a real PostgreSQL and Redis.

Takes the environment of `x-airflow-common` exactly as Compose renders it, points the service
host names `postgres` and `redis` at 127.0.0.1 (and the database at a fresh one made for this
run), and then: `airflow db migrate` succeeds on PostgreSQL, `airflow pools import` loads the
pools airflow-init loads, and an `airflow celery worker` answers a ping through Redis with the
Airflow Celery app the scheduler would use.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth for user postgres) and Redis on 127.0.0.1:6379;
skips when they are not there. Isolation for parallel runs: its own database and role
(releng_ci_<random>), a Redis key prefix of the same name, a unique worker name. Everything is
removed at the end, also on failure.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import SplitResult, urlsplit, urlunsplit

import pytest

from tests.test_compose_file import REQUIRED_VARS, airflow_common_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
SERVICE_HOSTS = {"postgres", "redis"}


def _unreachable(host: str, port: int) -> str | None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as e:
        return f"{e.__class__.__name__}: {e}"
    return None


def _rewrite_url(value: str, run: dict[str, str]) -> str:
    """Point a URL at the compose service `postgres`/`redis` to the local server (other values unchanged)."""
    scheme_prefix = ""
    if value.startswith("db+"):  # Celery's SQLAlchemy result backend
        scheme_prefix, value = "db+", value[3:]
    parts = urlsplit(value)
    if "://" not in value or parts.hostname not in SERVICE_HOSTS:
        return scheme_prefix + value
    if parts.hostname == "postgres":
        netloc = f"{run['name']}:{run['password']}@{PG_HOST}:{parts.port or PG_PORT}"
        parts = SplitResult(parts.scheme, netloc, f"/{run['name']}", parts.query, parts.fragment)
    else:  # the machine's Redis has no server password: the run's ACL user has the compose file's password
        netloc = f"{run['name']}:{parts.password}@{REDIS_HOST}:{parts.port or REDIS_PORT}"
        parts = parts._replace(netloc=netloc)
    return scheme_prefix + urlunsplit(parts)


def secret_files(run: dict[str, str], directory: Path) -> Path:
    """The secret files of RELENG_SECRETS_DIR for this run."""
    import base64

    directory.mkdir(mode=0o700)
    for name, value in {"postgres_password": run["password"], "redis_password": run["redis_password"],
                        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                        "jwt_secret": secrets.token_hex(32), "api_secret_key": secrets.token_hex(32)}.items():
        (directory / name).write_text(value + "\n")
    return directory


def run_secret_commands(compose_env: dict[str, str], secrets_dir: Path) -> dict[str, str]:
    """Each ``X_CMD`` of the compose file run as Airflow runs it (no shell), with the container paths of the
    secret files and of include/ mapped to this run's; its output becomes ``X``."""
    import shlex

    env = {}
    for key, value in compose_env.items():
        if not key.endswith("_CMD"):
            env[key] = value
            continue
        argv = [a.replace("/run/secrets/", f"{secrets_dir}/").replace("/opt/airflow/include/", f"{ROOT}/include/")
                for a in shlex.split(value)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, (key, done.stderr)
        env[key.removesuffix("_CMD")] = done.stdout
    return env


def scaleout_env(run: dict[str, str], home: Path) -> dict[str, str]:
    compose_env = run_secret_commands(airflow_common_env(dict(REQUIRED_VARS)), secret_files(run, home / "secrets"))
    env = {k: _rewrite_url(v, run) for k, v in compose_env.items()}
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CELERY__BROKER_URL",
    ):
        assert env[key] != compose_env[key], f"{key} does not name a compose service: {compose_env[key]}"
    leftovers = {k: v for k, v in env.items() if any(f"@{h}" in v or f"//{h}" in v for h in SERVICE_HOSTS)}
    assert not leftovers, f"still pointing at compose service names: {leftovers}"
    return {
        # A clean process environment: nothing from the test session (its SQLite AIRFLOW__* settings)
        # or the developer's shell may reach the commands under test.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **env,
        # Container paths -> this checkout / the temp dir.
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "RELENG_CONFIG_DIR": str(ROOT / "config" / "releases"),
        # Parallel runs share the Redis server: every key this run makes carries its own prefix.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": f"{run['name']}:",
    }


def _airflow(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "airflow"), *args], env=env, cwd=env["AIRFLOW_HOME"], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def run_env(tmp_path_factory):
    for what, host, port in (("PostgreSQL", PG_HOST, PG_PORT), ("Redis", REDIS_HOST, REDIS_PORT)):
        if err := _unreachable(host, port):
            pytest.skip(f"{what} is not reachable on {host}:{port} ({err}); the scale-out check needs it")
    import psycopg2
    import redis

    try:
        admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as e:
        pytest.skip(f"cannot log in to PostgreSQL on {PG_HOST}:{PG_PORT} as postgres without a password: {e}")
    admin.autocommit = True
    run = {"name": f"releng_ci_{secrets.token_hex(5)}", "password": secrets.token_hex(12),
           "redis_password": secrets.token_hex(12)}
    home = tmp_path_factory.mktemp("scaleout-airflow-home")
    try:
        with admin.cursor() as cur:
            # An ordinary role owning its database, like POSTGRES_USER in the postgres image minus superuser.
            cur.execute(f"CREATE ROLE {run['name']} LOGIN PASSWORD %s", (run["password"],))
            cur.execute(f"CREATE DATABASE {run['name']} OWNER {run['name']}")
        r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5)
        r.execute_command("ACL", "SETUSER", run["name"], "reset", "on", f">{run['redis_password']}",
                          f"~{run['name']}:*", "&*", "+@all", "-@admin", "-@dangerous", "+info")
        r.close()
        yield run, scaleout_env(run, home)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {run['name']} WITH (FORCE)")
            cur.execute(f"DROP ROLE IF EXISTS {run['name']}")
        admin.close()
        r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5)
        for key in r.scan_iter(match=f"{run['name']}:*", count=1000):
            r.delete(key)
        r.execute_command("ACL", "DELUSER", run["name"])
        r.close()


def _query(run: dict[str, str], sql: str) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(
        host=PG_HOST, port=PG_PORT, user=run["name"], password=run["password"], dbname=run["name"], connect_timeout=5
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def migrated(run_env):
    run, env = run_env
    started = time.monotonic()
    res = _airflow(env, "db", "migrate")
    return run, env, res, time.monotonic() - started


def test_settings_point_at_the_local_services(run_env):
    run, env = run_env
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"postgresql+psycopg2://{run['name']}:{run['password']}@127.0.0.1:5432/{run['name']}"
    )
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://{run['name']}:{run['redis_password']}@127.0.0.1:6379/0"


def test_db_migrate_on_postgresql(migrated):
    run, _env, res, took = migrated
    assert res.returncode == 0, (
        f"airflow db migrate failed after {took:.1f}s:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    (revision,) = _query(run, "SELECT version_num FROM alembic_version")[0]
    assert revision
    tables = {t for (t,) in _query(run, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"dag", "dag_run", "task_instance", "slot_pool", "connection", "hitl_detail"} <= tables, sorted(tables)


def test_pools_import_like_airflow_init(migrated):
    run, env, res, _ = migrated
    assert res.returncode == 0, "needs the migrated database"
    pools_file = ROOT / "config" / "pools.json"
    if not pools_file.is_file():
        pytest.skip("config/pools.json not written yet (test_compose_file checks that it exists)")
    res = _airflow(env, "pools", "import", str(pools_file))
    assert res.returncode == 0, f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    expected = json.loads(pools_file.read_text())
    got = {name: slots for name, slots in _query(run, "SELECT pool, slots FROM slot_pool")}
    assert {name: spec["slots"] for name, spec in expected.items()} == {n: got.get(n) for n in expected}


# Runs in its own process with the same environment: one Airflow import, then ping until answered.
_PING = r"""
import json, sys, time
from airflow.configuration import conf
from airflow.providers.celery.executors.celery_executor import app

dest, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
out = {
    "executor": conf.get("core", "executor"),
    "keyprefix": app.conf.broker_transport_options.get("global_keyprefix"),
    "ping": None,
}
while out["ping"] is None and time.monotonic() < deadline:
    inspect = app.control.inspect(destination=[dest], timeout=1.0)
    if pong := inspect.ping():
        out["ping"] = pong
        out["registered"] = inspect.registered()
print("RESULT " + json.dumps(out))
"""


def _stop_process_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # Celery's warm shutdown
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:  # the worker's pool children must be gone too
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_celery_worker_answers_ping_through_redis(migrated, tmp_path):
    run, env, res, _ = migrated
    assert res.returncode == 0, "the worker's result backend needs the migrated database"
    node = f"{run['name']}@ci"
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [str(BIN / "airflow"), "celery", "worker", "--celery-hostname", node, "--concurrency", "1",
             "--skip-serve-logs", "--without-gossip", "--without-mingle"],
            env=env, cwd=env["AIRFLOW_HOME"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    ping = None
    try:
        ping = subprocess.Popen(
            [sys.executable, "-c", _PING, node, "45"],
            env=env, cwd=env["AIRFLOW_HOME"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 75
        while ping.poll() is None:
            if worker.poll() is not None:
                pytest.fail(f"the Celery worker exited with {worker.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the ping did not finish in time")
            time.sleep(0.3)
        stdout, stderr = ping.communicate()
        lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
        assert ping.returncode == 0 and lines, f"ping failed:\n{stdout[-2000:]}\n{stderr[-3000:]}"
        result = json.loads(lines[-1].removeprefix("RESULT "))
        assert result["executor"] == "CeleryExecutor"
        assert result["keyprefix"] == f"{run['name']}:", "the run is not isolated in Redis"
        assert result["ping"] == {node: {"ok": "pong"}}, f"no answer from {node}:\n{log.read_text()[-4000:]}"
        assert "execute_workload" in result["registered"][node], result["registered"]
    finally:
        if ping is not None and ping.poll() is None:
            ping.kill()
            ping.wait()
        _stop_process_group(worker)
    assert worker.returncode is not None
