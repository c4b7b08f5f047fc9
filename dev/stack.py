"""The local stack: fixture build system, SeaweedFS S3 and Airflow on 127.0.0.1.

    python -m dev.stack start   # build fixtures, start every service in the background, print the settings
    python -m dev.stack start --executor celery --workers 2
                                # the same with CeleryExecutor: this machine's PostgreSQL and Redis, one process
                                # per Airflow service and per worker
    python -m dev.stack status  # what runs where
    python -m dev.stack stop    # stop every service
    python -m dev.stack env     # `export` lines for the stack's settings (eval "$(python -m dev.stack env)")
    python -m dev.stack compose # trigger full_compose through the REST API and follow it

State lives in ``.stack/`` of the checkout (or ``--dir``): fixtures, S3 data,
AIRFLOW_HOME, logs, and ``stack.json`` with pids, ports and credentials.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from releng.core import s3keys
from releng.core.gpg import agent_session
from releng.core.profile import ReleaseProfile, load_profile, profile_paths

CHECKOUT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
BUCKET = "resf-empanadas"
S3_CONN_ID = "releng_s3"
S3_ACCESS_KEY = "releng-local"
USERS = {"admin": "admin", "approver": "user"}  # user -> SimpleAuthManager role
FIXTURE_IMAGE_DATE = "20250101"
FIXTURE_EPOCHS = (1735689600, 1735776000)  # two uploads per image, so "newest" has a choice


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_or_free(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def wait_until(check: Callable[[], bool], what: str, timeout: float, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    """Poll ``check`` until it is true; a process that dies or never gets ready is killed and reported."""
    try:
        _poll(check, what, timeout, proc, log)
    except BaseException:
        if proc is not None and proc.poll() is None:
            Service(what, proc.pid, "", str(log)).stop(timeout=5)
        raise


def _poll(check: Callable[[], bool], what: str, timeout: float, proc: subprocess.Popen | None,
          log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready; log {log}:\n{tail}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} was not ready after {timeout:.0f} s; see {log}")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status < 400


@dataclass
class Service:
    name: str
    pid: int
    url: str
    log: str
    # Files the service leaves behind that are removed once it has stopped (sockets it makes at fixed paths).
    leftovers: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the service's process group, SIGKILL what is left after ``timeout``; return when it is empty,
        after removing its :attr:`leftovers`."""
        try:
            self._stop(timeout)
        finally:
            for leftover in map(Path, self.leftovers):
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISSOCK(leftover.lstat().st_mode):
                        leftover.unlink()

    def _stop(self, timeout: float) -> None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.waitpid(self.pid, os.WNOHANG)  # reap the leader when it is our own child
                except ChildProcessError:
                    pass
                try:
                    os.killpg(self.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)


def spawn(name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 whatever the umask, replacing the file atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def private_dir(path: Path) -> None:
    """Create ``path`` if needed and make it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


# --- services ------------------------------------------------------------------------------


def start_buildsystem(root: Path, port: int, log: Path) -> tuple[Service, subprocess.Popen]:
    proc = spawn("buildsystem", [sys.executable, "-m", "dev.buildsystem", "serve", str(root), "--port", str(port)],
                 log, env={**os.environ, "PYTHONPATH": str(CHECKOUT)}, cwd=CHECKOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/v1/projects/"), "fixture build system", 20, proc, log)
    return Service("buildsystem", proc.pid, url, str(log)), proc


# The gRPC sockets weed mini makes at a path of its own, /tmp/seaweedfs-<service>-grpc-<port>.sock (no flag
# moves them); its flag naming the port of each.
WEED_TMP_GRPC_SOCKETS = {"master": "master.port.grpc", "volume": "volume.port.grpc", "filer": "filer.port.grpc",
                         "s3": "s3.port.grpc", "admin": "admin.port.grpc"}
UNIX_PATH_MAX = 107  # bytes of a socket path (sockaddr_un.sun_path, without its NUL)


def s3_state(datadir: Path, log: Path) -> tuple[Path, Path]:
    """Where weed's own log files go (``<log dir>/weed``, beside ``log``) and its local sockets
    (``<datadir>/sockets``), so nothing of the service lands in /tmp."""
    return log.parent / "weed", datadir / "sockets"


def start_s3(datadir: Path, port: int, log: Path) -> tuple[Service, subprocess.Popen]:
    """SeaweedFS ``weed mini`` with every port pinned to 127.0.0.1 (its defaults collide between instances).

    Its log files and local sockets are kept in the service's own directories (see :func:`s3_state`); the
    gRPC sockets weed makes in /tmp whatever the flags are removed when the service is stopped."""
    datadir.mkdir(parents=True, exist_ok=True)
    logdir, sockets = s3_state(datadir, log)
    logdir.mkdir(parents=True, exist_ok=True)
    sockets.mkdir(mode=0o700, exist_ok=True)
    local = {"s3.localSocket": sockets / "s3.sock", "filer.localSocket": sockets / "filer.sock"}
    too_long = [str(p) for p in local.values() if len(os.fsencode(p)) > UNIX_PATH_MAX]
    if too_long:
        raise RuntimeError(f"SeaweedFS socket path(s) {', '.join(too_long)} longer than {UNIX_PATH_MAX} bytes; "
                           "start the stack with a shorter --dir (or a test with a shorter --basetemp)")
    ports = iter(free_port() for _ in range(16))
    argv = [str(VENV_BIN / "weed"), f"-logdir={logdir}", "mini", f"-dir={datadir}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-s3.port={port}", "-admin.ui=false", "-webdav=false",
            *(f"-{flag}={path}" for flag, path in local.items())]
    assigned = {}
    for flag in ("master.port", "filer.port", "volume.port", "admin.port", "s3.port.iceberg", "metricsPort",
                 "s3.metricsPort", "debug.port", "s3.debug.port", "s3.port.lance", "master.port.grpc",
                 "filer.port.grpc", "volume.port.grpc", "s3.port.grpc", "admin.port.grpc"):
        assigned[flag] = next(ports)
        argv.append(f"-{flag}={assigned[flag]}")
    leftovers = [f"/tmp/seaweedfs-{name}-grpc-{assigned[flag]}.sock" for name, flag in WEED_TMP_GRPC_SOCKETS.items()]
    # weed's default local sockets, which some weed components still make at times despite the flags above
    leftovers += [f"/tmp/seaweedfs-s3-{port}.sock", f"/tmp/seaweedfs-filer-{assigned['filer.port']}.sock"]
    # weed turns S3 auth on when these are set at start; the stack uses them, so auth is real.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": s3_secret(datadir)}
    proc = spawn("s3", argv, log, env=env)
    service = Service("s3", proc.pid, f"http://127.0.0.1:{port}", str(log), leftovers)
    try:
        wait_until(lambda: _s3_ready(service.url, datadir), "SeaweedFS S3", 60, proc, log)
    except BaseException:
        service.stop(timeout=5)
        raise
    return service, proc


def s3_secret(datadir: Path) -> str:
    path = datadir / ".secret"
    if path.exists():
        path.chmod(0o600)
    else:
        write_private(path, secrets.token_hex(16))
    return path.read_text().strip()


def s3_client(url: str, datadir: Path):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=S3_ACCESS_KEY,
                        aws_secret_access_key=s3_secret(datadir),
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


def _s3_ready(url: str, datadir: Path) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3_client(url, datadir).list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def seed_s3(client, bucket: str, profiles: Sequence[ReleaseProfile], arches: Sequence[str] | None = None,
            log: Callable[[str], None] = print) -> list[str]:
    """Create the bucket and upload fixture cloud images in the real layout (two uploads per image)."""
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    keys = []
    for p in profiles:
        for image in p.cloud_images.values():
            for arch in image.arches if arches is None else [a for a in image.arches if a in arches]:
                for variant in image.variants or (None,):
                    for build, epoch in enumerate(FIXTURE_EPOCHS):
                        name = s3keys.cloud_image_name(p.shortname, p.major, image.type, variant, p.revision,
                                                       FIXTURE_IMAGE_DATE, build, arch)
                        key = s3keys.cloud_image_key(name, p.revision, arch, epoch, image.format)
                        body = (f"FIXTURE CLOUD IMAGE (local stack, not a real {image.format} image)\n{key}\n"
                                .encode() * 64)
                        client.put_object(Bucket=bucket, Key=key, Body=body,
                                          Metadata={s3keys.CHECKSUM_METADATA: hashlib.sha256(body).hexdigest()})
                        keys.append(key)
    log(f"s3: bucket {bucket} holds {len(keys)} fixture cloud images")
    return keys


def s3_connection(url: str, datadir: Path) -> str:
    return json.dumps({"conn_type": "aws", "login": S3_ACCESS_KEY, "password": s3_secret(datadir),
                       "extra": {"endpoint_url": url, "region_name": "us-east-1"}})


def passwords(path: Path) -> dict[str, str]:
    """Local passwords for the SimpleAuthManager users, generated once and kept in the stack dir."""
    if path.exists():
        path.chmod(0o600)
        data = json.loads(path.read_text())
        if set(data) == set(USERS):
            return data
    data = {user: secrets.token_urlsafe(12) for user in USERS}
    write_private(path, json.dumps(data, indent=1))
    return data


def airflow_env(home: Path, port: int, passwords_file: Path, releng_env: Mapping[str, str],
                s3_conn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RELENG_"))}
    env.update(releng_env)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(CHECKOUT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(CHECKOUT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # 2 cores: a few LocalExecutor workers; the default 32 idle processes cost memory for nothing.
        "AIRFLOW__CORE__PARALLELISM": "4",
        # A task's calls to the execution API wait this long for the api-server: its default (5 s) is too short
        # on 2 busy cores, where a task died before it started ("Process exited ... SIGKILL" after ReadTimeouts).
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # Airflow's log servers bind every interface (hard-coded) but need a JWT signed with the stack's secret.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW_CONN_RELENG_S3": s3_conn,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    })
    return env


def pool_commands(airflow: str, env: Mapping[str, str]) -> list[list[str]]:
    """Load config/pools.json, then size the repodata pool by RELENG_REPODATA_POOL_SLOTS (as airflow-init does)."""
    from releng.core.settings import Settings

    slots = Settings.from_env(env).repodata_pool_slots
    return [[airflow, "pools", "import", str(CHECKOUT / "config" / "pools.json")],
            [airflow, "pools", "set", "repodata", str(slots),
             "update_repodata: staging trees regenerated at once (RELENG_REPODATA_POOL_SLOTS)"]]


def start_airflow(home: Path, port: int, env: Mapping[str, str], log: Path) -> tuple[Service, subprocess.Popen]:
    """Migrate the SQLite DB, load the pools, then ``airflow standalone`` in the background."""
    private_dir(home)  # Airflow writes airflow.cfg (Fernet key, JWT secret) with the process umask
    airflow = str(VENV_BIN / "airflow")
    for argv in ([airflow, "db", "migrate"], *pool_commands(airflow, env)):
        result = subprocess.run(argv, env=dict(env), capture_output=True, text=True)
        with log.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}")
        if result.returncode:
            raise RuntimeError(f"{' '.join(argv[1:])} failed (exit {result.returncode}); see {log}:\n"
                               f"{result.stderr[-1500:]}")
    proc = spawn("airflow", [airflow, "standalone"], log, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/api/v2/version"), "Airflow api-server", 180, proc, log)
    return Service("airflow", proc.pid, url, str(log)), proc


# --- CeleryExecutor: this machine's PostgreSQL and Redis ------------------------------------------------

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_CLAIM_KEY = "releng-stack:claim"  # set in a Redis database the stack has taken, naming the stack
WORKER_CONCURRENCY = 4  # task slots per worker: two workers offer more slots than the largest pool (reposync, 4)
# Longer than the longest task (a full reposync or a DVD build): Redis hands an unacknowledged task to another
# worker after this, and Celery's 24 h default would leave a task of a killed worker queued for a day.
VISIBILITY_TIMEOUT = 21600
INSTALL_HINT = {
    "PostgreSQL": "install and start it: `apt-get install postgresql` (Debian/Ubuntu) or `dnf install "
                  "postgresql-server && postgresql-setup --initdb && systemctl enable --now postgresql` (EL), "
                  "listening on 127.0.0.1:5432 with `host all postgres 127.0.0.1/32 trust` in pg_hba.conf",
    "Redis": "install and start it: `apt-get install redis-server` (Debian/Ubuntu) or `dnf install redis && "
             "systemctl enable --now redis` (EL), listening on 127.0.0.1:6379 (Redis 6 or later, for ACL users)",
}


class ServiceMissing(RuntimeError):
    """PostgreSQL or Redis is not there for a Celery stack; says how to install it."""


def _reachable(what: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        raise ServiceMissing(f"the Celery stack needs {what} on {host}:{port}, which does not answer ({exc}); "
                             f"{INSTALL_HINT[what]}") from None


@dataclass
class CeleryBackends:
    """The stack's own PostgreSQL database and role, and its own Redis database and ACL user."""

    name: str  # role, database, Redis user and key prefix
    password: str
    redis_db: int

    @property
    def sql_alchemy_conn(self) -> str:
        return f"postgresql+psycopg2://{self.name}:{self.password}@{PG_HOST}:{PG_PORT}/{self.name}"

    @property
    def broker_url(self) -> str:
        return f"redis://{self.name}:{self.password}@{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}"


def _pg_admin():
    import psycopg2

    try:
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise ServiceMissing(f"cannot log in to PostgreSQL on {PG_HOST}:{PG_PORT} as postgres without a password "
                             f"({str(exc).strip()}); {INSTALL_HINT['PostgreSQL']}") from None
    conn.autocommit = True
    return conn


def _redis_admin():
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5)


def create_backends(name: str, log: Callable[[str], None] = print) -> CeleryBackends:
    """Make the stack's PostgreSQL role and database and take a Redis database of its own (the first one
    holding no key, claimed atomically) with an ACL user that may only touch keys with its prefix.
    The machine's Redis configuration is left as it is (no server password is set)."""
    _reachable("PostgreSQL", PG_HOST, PG_PORT)
    _reachable("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    backends = CeleryBackends(name, secrets.token_hex(16), -1)
    conn = _pg_admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE ROLE {name} LOGIN PASSWORD %s", (backends.password,))
            cur.execute(f"CREATE DATABASE {name} OWNER {name}")
    finally:
        conn.close()
    log(f"postgresql: database and role {name} on {PG_HOST}:{PG_PORT}")
    admin = _redis_admin()
    try:
        databases = int(admin.config_get("databases").get("databases", 16))
        for db in range(1, databases):  # db 0 is everybody's default
            r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=5)
            try:
                if r.dbsize() == 0 and r.set(REDIS_CLAIM_KEY, name, nx=True):
                    backends.redis_db = db
                    break
            finally:
                r.close()
        else:
            raise RuntimeError(f"no free Redis database on {REDIS_HOST}:{REDIS_PORT} (all {databases - 1} of 1.."
                               f"{databases - 1} hold keys); stop other stacks or raise `databases` in redis.conf")
        admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{backends.password}", f"~{name}:*",
                              "&*", "+@all", "-@admin", "-@dangerous", "+info")
    finally:
        admin.close()
    log(f"redis: database {backends.redis_db}, ACL user {name} (keys {name}:*) on {REDIS_HOST}:{REDIS_PORT}")
    return backends


def drop_backends(backends: CeleryBackends) -> None:
    """Drop the stack's database and role, its Redis keys, claim and ACL user (each step also when another
    failed; a server that is gone is skipped)."""
    with contextlib.suppress(ServiceMissing):
        conn = _pg_admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {backends.name} WITH (FORCE)")
                cur.execute(f"DROP ROLE IF EXISTS {backends.name}")
        finally:
            conn.close()
    import redis

    with contextlib.suppress(redis.ConnectionError):
        admin = _redis_admin()
        try:
            admin.execute_command("ACL", "DELUSER", backends.name)
            if backends.redis_db > 0:
                r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=backends.redis_db, socket_timeout=5)
                try:
                    for key in r.scan_iter(match=f"{backends.name}:*", count=1000):
                        r.delete(key)
                    if r.get(REDIS_CLAIM_KEY) == backends.name.encode():
                        r.delete(REDIS_CLAIM_KEY)
                finally:
                    r.close()
        finally:
            admin.close()


def celery_env(env: Mapping[str, str], backends: CeleryBackends, home: Path) -> dict[str, str]:
    """The Airflow settings of every process of a Celery stack: the stack's database and broker, the secrets
    all processes must share (JWT, API key, Fernet key), the worker concurrency and the visibility timeout."""
    keys = stack_keys(home)
    return {
        **env,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": backends.sql_alchemy_conn,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{backends.sql_alchemy_conn}",
        "AIRFLOW__CELERY__BROKER_URL": backends.broker_url,
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": f"{backends.name}:",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        "AIRFLOW__CORE__PARALLELISM": "16",
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
        "AIRFLOW__API__SECRET_KEY": keys["api"],
        # The task instances' hostname: each worker's own name (HOSTNAME_MODULE, in the config folder).
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "releng_stack_hostname.hostname",
    }


def stack_keys(home: Path) -> dict[str, str]:
    """The secrets every Airflow process of the stack shares, made once and kept private in AIRFLOW_HOME."""
    import base64

    path = home / "stack-keys.json"
    if path.exists():
        return json.loads(path.read_text())
    keys = {"fernet": base64.urlsafe_b64encode(os.urandom(32)).decode(), "jwt": secrets.token_hex(32),
            "api": secrets.token_hex(32)}
    write_private(path, json.dumps(keys))
    return keys


HOSTNAME_MODULE = '''"""Task instances' hostname on the local Celery stack: the worker's own name, so the UI
and the API tell the stack's workers apart although they run on one machine (written by dev/stack.py)."""

import os
import socket


def hostname() -> str:
    return os.environ.get("RELENG_STACK_HOSTNAME") or socket.getfqdn()
'''


def start_celery_airflow(home: Path, port: int, env: Mapping[str, str], logs: Path, workers: int,
                         log: Callable[[str], None] = print) -> list[Service]:
    """Migrate the stack's PostgreSQL database, load the pools, then start api-server, scheduler,
    dag-processor, triggerer and ``workers`` Celery workers, one process (group) each."""
    private_dir(home)
    (home / "config").mkdir(exist_ok=True)  # on sys.path in every Airflow process
    (home / "config" / "releng_stack_hostname.py").write_text(HOSTNAME_MODULE)
    airflow = str(VENV_BIN / "airflow")
    setup_log = logs / "airflow-setup.log"
    setup_log.parent.mkdir(parents=True, exist_ok=True)
    for argv in ([airflow, "db", "migrate"], *pool_commands(airflow, env)):
        result = subprocess.run(argv, env=dict(env), capture_output=True, text=True, cwd=home)
        with setup_log.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}")
        if result.returncode:
            raise RuntimeError(f"{' '.join(argv[1:])} failed (exit {result.returncode}); see {setup_log}:\n"
                               f"{result.stderr[-1500:]}")
    services: list[Service] = []
    url = f"http://127.0.0.1:{port}"
    try:
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            proc = spawn(name, [airflow, name], logs / f"{name}.log", env=env, cwd=home)
            services.append(Service(name, proc.pid, url if name == "api-server" else "", str(logs / f"{name}.log")))
            if name == "api-server":
                wait_until(lambda: http_ok(f"{url}/api/v2/version"), "Airflow api-server", 180, proc,
                           logs / f"{name}.log")
        for n in range(1, workers + 1):
            name = f"worker-{n}"
            worker_env = {**env, "RELENG_STACK_HOSTNAME": f"{name}.{socket.gethostname()}",
                          # each worker serves its own task logs; two workers cannot share the port
                          "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
            proc = spawn(name, [airflow, "celery", "worker", "--celery-hostname", f"{name}@%h",
                                "--concurrency", str(WORKER_CONCURRENCY)], logs / f"{name}.log", env=worker_env,
                         cwd=home)
            services.append(Service(name, proc.pid, "", str(logs / f"{name}.log")))
        _wait_for_workers(env, workers, services, logs)
        dead = [s.name for s in services if not s.alive()]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited after start; see their logs in {logs}")
    except BaseException:
        for service in reversed(services):
            service.stop(timeout=10)
        raise
    log(f"airflow: api-server, scheduler, dag-processor, triggerer and {workers} Celery workers "
        f"({WORKER_CONCURRENCY} slots each)")
    return services


_PING_WORKERS = r"""
import json, sys, time
from airflow.providers.celery.executors.celery_executor import app
want, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
seen = {}
while len(seen) < want and time.monotonic() < deadline:
    seen = app.control.inspect(timeout=1.0).ping() or {}
print(json.dumps(sorted(seen)))
"""


def _wait_for_workers(env: Mapping[str, str], workers: int, services: Sequence[Service], logs: Path) -> None:
    """Until every worker answers a Celery ping through the stack's Redis."""
    result = subprocess.run([sys.executable, "-c", _PING_WORKERS, str(workers), "90"], env=dict(env),
                            capture_output=True, text=True, timeout=180)
    answered = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else []
    if len(answered) < workers:
        dead = [s.name for s in services if not s.alive()]
        raise RuntimeError(f"only {len(answered)} of {workers} Celery workers answered ({', '.join(answered)}); "
                           f"stopped: {', '.join(dead) or 'none'}; see the worker logs in {logs}\n"
                           f"{result.stderr[-1500:]}")


def airflow_token(url: str, user: str, password: str) -> str:
    req = urllib.request.Request(f"{url}/auth/token", method="POST",
                                 data=json.dumps({"username": user, "password": password}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["access_token"]


# --- the stack -----------------------------------------------------------------------------


@dataclass
class Stack:
    """A started stack, as recorded in ``stack.json``."""

    dir: str
    settings: dict[str, str]
    users: dict[str, str]
    services: list[Service] = field(default_factory=list)
    executor: str = "local"
    backends: CeleryBackends | None = None  # the Celery stack's PostgreSQL database and Redis database

    @property
    def ui(self) -> str:
        return next(s.url for s in self.services if s.name in ("airflow", "api-server"))

    def save(self) -> None:
        write_private(Path(self.dir) / "stack.json", json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, stack_dir: Path) -> Stack | None:
        path = Path(stack_dir) / "stack.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        backends = CeleryBackends(**data["backends"]) if data.get("backends") else None
        return cls(data["dir"], data["settings"], data["users"], [Service(**s) for s in data["services"]],
                   data.get("executor", "local"), backends)

    def stop(self) -> None:
        """Stop every service (workers first), then drop the Celery stack's database and Redis keys."""
        try:
            for service in reversed(self.services):
                service.stop()
        finally:
            if self.backends is not None:
                drop_backends(self.backends)
        (Path(self.dir) / "stack.json").unlink(missing_ok=True)


def releng_settings(stack_dir: Path, peridot_url: str, key_dir: Path) -> dict[str, str]:
    return {
        "RELENG_CONFIG_DIR": str(CHECKOUT / "config" / "releases"),
        "RELENG_COMPOSE_ROOT": str(stack_dir / "trees" / "compose"),
        "RELENG_STAGING_ROOT": str(stack_dir / "trees" / "repos-staging"),
        "RELENG_PRODUCTION_ROOT": str(stack_dir / "trees" / "repos-production"),
        "RELENG_PERIDOT_URL": f"{peridot_url}/v1/projects",
        "RELENG_S3_BUCKET": BUCKET,
        "RELENG_S3_CONN_ID": S3_CONN_ID,
        "RELENG_LORAX_BACKEND": "local",
        "RELENG_APPROVERS": "approver",
        "RELENG_GPG_KEY_DIR": str(key_dir),
        "RELENG_TEST_SITE": "true",  # lorax is not packaged for Debian: the stand-in builds the boot trees
    }


def release_key(stack_dir: Path, log: Callable[[str], None] = print) -> dict[str, str]:
    """The stack's repo signing key (made once, kept in ``<stack>/release-gnupg``), so staging and production
    are signed as at a real site: RELENG_REPO_SIGNING_KEY and RELENG_GNUPGHOME. Its public key is
    ``<stack>/release-key.asc``. gpg's agent is stopped afterwards."""
    home = Path(stack_dir) / "release-gnupg"
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    made = not home.is_dir()
    if made:
        home.mkdir(mode=0o700, parents=True)
    with agent_session(home):
        if made:
            subprocess.run([*gpg, "--passphrase", "", "--quick-gen-key",
                            "Local stack release key <release@releng.invalid>", "ed25519", "sign", "never"],
                           check=True, capture_output=True)
            log(f"repo signing key: made in {home}")
        out = subprocess.run([*gpg, "--with-colons", "--list-secret-keys"], check=True, capture_output=True,
                             text=True).stdout
        fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
        public = subprocess.run([*gpg, "--armor", "--export", fpr], check=True, capture_output=True).stdout
        (Path(stack_dir) / "release-key.asc").write_bytes(public)
    return {"RELENG_REPO_SIGNING_KEY": fpr, "RELENG_GNUPGHOME": str(home)}


EXECUTORS = ("local", "celery")


def start(stack_dir: Path, *, buildsystem_port: int = 18080, s3_port: int = 18333, airflow_port: int = 8080,
          with_airflow: bool = True, executor: str = "local", workers: int = 2,
          log: Callable[[str], None] = print) -> Stack:
    """Start the whole stack; on any failure, stop what was started and re-raise.

    ``executor="local"``: ``airflow standalone`` (SQLite, LocalExecutor). ``"celery"``: CeleryExecutor with a
    database and a Redis database of the stack's own on this machine's PostgreSQL and Redis (dropped by stop),
    api-server, scheduler, dag-processor, triggerer and ``workers`` Celery workers as separate processes."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if executor == "celery" and workers < 1:
        raise ValueError(f"--workers must be at least 1 (got {workers})")
    if executor == "celery" and with_airflow:  # before any fixture is built: missing services are said at once
        _reachable("PostgreSQL", PG_HOST, PG_PORT)
        _reachable("Redis", REDIS_HOST, REDIS_PORT)
    from dev import buildsystem, extrafiles

    stack_dir = Path(stack_dir).resolve()
    old = Stack.load(stack_dir)
    if old and any(s.alive() for s in old.services):
        raise RuntimeError(f"a stack is already running from {stack_dir}; stop it first (python -m dev.stack stop)")
    stack_dir.mkdir(parents=True, exist_ok=True)
    logs = stack_dir / "logs"
    profiles = [load_profile(p) for p in profile_paths(CHECKOUT / "config" / "releases")]
    fixture = buildsystem.build(stack_dir / "buildsystem", profiles, log=log)
    extra_git = extrafiles.build(stack_dir / "git", profiles, fixture.key_dir)
    stack = Stack(str(stack_dir), {}, {}, executor=executor)
    try:
        service, _ = start_buildsystem(fixture.root, port_or_free(buildsystem_port), logs / "buildsystem.log")
        stack.services.append(service)
        log(f"build system: {service.url}/v1/projects")
        s3dir = stack_dir / "s3"
        service, _ = start_s3(s3dir, port_or_free(s3_port), logs / "s3.log")
        stack.services.append(service)
        seed_s3(s3_client(service.url, s3dir), BUCKET, profiles, log=log)
        log(f"s3: {service.url} (bucket {BUCKET})")
        stack.settings = releng_settings(stack_dir, stack.services[0].url, fixture.key_dir)
        stack.settings.update(release_key(stack_dir, log))
        stack.settings["RELENG_EXTRA_FILES_GIT"] = f"file://{extra_git}"
        for root in ("RELENG_COMPOSE_ROOT", "RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT"):
            Path(stack.settings[root]).mkdir(parents=True, exist_ok=True)
        stack.settings["AIRFLOW_CONN_RELENG_S3"] = s3_connection(service.url, s3dir)
        if with_airflow:
            port = port_or_free(airflow_port)
            stack.users = passwords(stack_dir / "passwords.json")
            env = airflow_env(stack_dir / "airflow", port, stack_dir / "passwords.json", stack.settings,
                              stack.settings["AIRFLOW_CONN_RELENG_S3"])
            if executor == "celery":
                # unique per stack (its port and pid), so two stacks on one machine never share a database
                stack.backends = create_backends(f"releng_stack_{port}_{os.getpid()}", log)
                stack.save()  # a stop after a crash from here on still drops them
                private_dir(stack_dir / "airflow")
                env = celery_env(env, stack.backends, stack_dir / "airflow")
                log(f"airflow: migrating the database and starting the services and {workers} Celery workers "
                    "(about 60 s)")
                stack.services += start_celery_airflow(stack_dir / "airflow", port, env, logs, workers, log)
            else:
                log("airflow: migrating the database and starting `airflow standalone` (about 20 s)")
                service, _ = start_airflow(stack_dir / "airflow", port, env, logs / "airflow.log")
                stack.services.append(service)
            stack.settings["AIRFLOW_HOME"] = str(stack_dir / "airflow")
    except BaseException:
        stack.stop()
        raise
    stack.save()
    write_env(stack_dir, stack.settings)
    return stack


def write_env(stack_dir: Path, settings: Mapping[str, str]) -> None:
    """``<stack>/env``: export lines for the settings, which include the S3 connection's secret."""
    write_private(Path(stack_dir) / "env", "".join(f"export {k}={_shell_quote(v)}\n" for k, v in settings.items()))


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def describe(stack: Stack) -> str:
    lines = ["", f"Local stack is up ({'CeleryExecutor' if stack.executor == 'celery' else 'LocalExecutor'})."]
    if stack.users:
        lines += [f"  Airflow UI:  {stack.ui}"]
        lines += [f"  user {u!r:11} password {p!r}  ({USERS[u]})" for u, p in stack.users.items()]
    lines += ["  Services:"] + [f"    {s.name:13} {s.url:28} pid {s.pid}  log {s.log}" for s in stack.services]
    if stack.backends is not None:
        lines += [f"  PostgreSQL database {stack.backends.name} on {PG_HOST}:{PG_PORT}; Redis database "
                  f"{stack.backends.redis_db} on {REDIS_HOST}:{REDIS_PORT} (dropped by stop)"]
    lines += ["  Settings (also in " + str(Path(stack.dir) / "env") + "):"]
    lines += [f"    {k}={v}" for k, v in stack.settings.items() if k.startswith("RELENG_")]
    lines += ["  Stop it with: make stop", ""]
    return "\n".join(lines)


def api(url: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{url}{path}", method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def unpause(stack: Stack, dag_id: str, token: str, wait: float = 120) -> None:
    """Unpause ``dag_id``, waiting for the dag-processor to have parsed it (some seconds after start)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            api(stack.ui, token, "PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
            return
        except urllib.error.HTTPError as err:
            if err.code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(2)


def trigger(stack: Stack, dag_id: str, conf: dict, token: str) -> str:
    """Unpause ``dag_id`` and start a run with ``conf`` through the REST API; returns the run id."""
    unpause(stack, dag_id, token)
    return api(stack.ui, token, "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})[
        "dag_run_id"]


def follow(stack: Stack, dag_id: str, run_id: str, token: str, *, timeout: float = 3600,
           log: Callable[[str], None] = print, until: Callable[[list[dict]], bool] | None = None) -> str:
    """Follow a run, logging task-state counts as they change, until it ends (returns its state) or until
    ``until(task instances)`` is true (returns ``"until"``)."""
    from urllib.parse import quote

    started, last = time.monotonic(), ""
    while time.monotonic() - started < timeout:
        time.sleep(5)
        state = api(stack.ui, token, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")["state"]
        tis = task_instances(stack.ui, token, dag_id, run_id)
        counts: dict[str, int] = {}
        for ti in tis:
            counts[ti["state"] or "none"] = counts.get(ti["state"] or "none", 0) + 1
        line = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        if line != last:
            log(f"  {time.monotonic() - started:5.0f} s  {state}: {line}")
            last = line
        if state in ("success", "failed"):
            failed = sorted({ti["task_id"] for ti in tis if ti["state"] == "failed"})
            if failed:
                log(f"{dag_id} {state}; failed tasks: {', '.join(failed)} (logs in the UI)")
            return state
        if until is not None and until(tis):
            return "until"
    raise RuntimeError(f"{dag_id} run {run_id} did not finish in {timeout:.0f} s; see {stack.ui}")


def run_compose(stack: Stack, conf: dict, *, timeout: float = 3600, log: Callable[[str], None] = print) -> str:
    """Trigger full_compose on the running stack through the REST API and follow it to the end."""
    token = airflow_token(stack.ui, "admin", stack.users["admin"])
    run_id = trigger(stack, "full_compose", conf, token)
    log(f"full_compose: triggered {run_id} with {json.dumps(conf)}; follow it at {stack.ui}/dags/full_compose")
    return follow(stack, "full_compose", run_id, token, timeout=timeout, log=log)


def task_instances(url: str, token: str, dag_id: str, run_id: str, page: int = 100) -> list[dict]:
    """Every task instance of a run: the API returns at most 100 per request, whatever the limit asked."""
    from urllib.parse import quote

    found: list[dict] = []
    while True:
        answer = api(url, token, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
                                         f"/taskInstances?limit={page}&offset={len(found)}")
        found += answer["task_instances"]
        if not answer["task_instances"] or len(found) >= answer["total_entries"]:
            return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("RELENG_STACK_DIR", CHECKOUT / ".stack")))
    sub = parser.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start", help="start the stack in the background")
    st.add_argument("--airflow-port", type=int, default=8080)
    st.add_argument("--buildsystem-port", type=int, default=18080)
    st.add_argument("--s3-port", type=int, default=18333)
    st.add_argument("--executor", choices=EXECUTORS, default="local",
                    help="local: airflow standalone with SQLite (default); celery: CeleryExecutor on this machine's "
                         "PostgreSQL and Redis, one process per service and worker")
    st.add_argument("--workers", type=int, default=2, help="Celery workers (with --executor celery; default 2)")
    sub.add_parser("stop", help="stop the stack")
    sub.add_parser("status", help="show the stack")
    sub.add_parser("env", help="print export lines for the stack's settings")
    co = sub.add_parser("compose", help="run full_compose on the running stack and follow it")
    co.add_argument("--release", default="el9")
    co.add_argument("--arches", default="x86_64,aarch64", help="comma-separated (default: x86_64,aarch64)")
    args = parser.parse_args(argv)

    if args.cmd == "start":
        try:
            stack = start(args.dir, buildsystem_port=args.buildsystem_port, s3_port=args.s3_port,
                          airflow_port=args.airflow_port, executor=args.executor, workers=args.workers)
        except (ServiceMissing, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(describe(stack))
        return 0
    stack = Stack.load(args.dir)
    if stack is None:
        print(f"no stack is running from {args.dir}", file=sys.stderr)
        return 0 if args.cmd == "stop" else 1
    if args.cmd == "stop":
        stack.stop()
        print(f"stopped the stack in {args.dir}")
    elif args.cmd == "compose":
        state = run_compose(stack, {"release": args.release, "arches": args.arches.split(",")},
                            log=lambda line: print(line, flush=True))
        compose_root = Path(stack.settings["RELENG_COMPOSE_ROOT"])
        latest = sorted(compose_root.glob("*/latest-*"))
        print(f"full_compose {state}. Compose root: {compose_root}" +
              "".join(f"\n  {link} -> {os.readlink(link)}" for link in latest))
        print(f"Staging: {stack.settings['RELENG_STAGING_ROOT']}/mirror/pub/rocky\nUI: {stack.ui}")
        return 0 if state == "success" else 1
    elif args.cmd == "env":
        print((Path(stack.dir) / "env").read_text(), end="")
    else:
        print(describe(stack))
        for s in stack.services:
            print(f"  {s.name:12} {'running' if s.alive() else 'NOT RUNNING'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
