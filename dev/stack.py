"""The local stack: fixture build system, SeaweedFS S3 and Airflow on 127.0.0.1.

    python -m dev.stack start   # build fixtures, start every service in the background, print the settings
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


def start_airflow(home: Path, port: int, env: Mapping[str, str], log: Path) -> tuple[Service, subprocess.Popen]:
    """Migrate the SQLite DB, load the pools, then ``airflow standalone`` in the background."""
    private_dir(home)  # Airflow writes airflow.cfg (Fernet key, JWT secret) with the process umask
    airflow = str(VENV_BIN / "airflow")
    for argv in ([airflow, "db", "migrate"], [airflow, "pools", "import", str(CHECKOUT / "config" / "pools.json")]):
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

    @property
    def ui(self) -> str:
        return next(s.url for s in self.services if s.name == "airflow")

    def save(self) -> None:
        write_private(Path(self.dir) / "stack.json", json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, stack_dir: Path) -> Stack | None:
        path = Path(stack_dir) / "stack.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(data["dir"], data["settings"], data["users"], [Service(**s) for s in data["services"]])

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
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


def start(stack_dir: Path, *, buildsystem_port: int = 18080, s3_port: int = 18333, airflow_port: int = 8080,
          with_airflow: bool = True, log: Callable[[str], None] = print) -> Stack:
    """Start the whole stack; on any failure, stop what was started and re-raise."""
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
    stack = Stack(str(stack_dir), {}, {})
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
    lines = ["", "Local stack is up."]
    if stack.users:
        lines += [f"  Airflow UI:  {stack.ui}"]
        lines += [f"  user {u!r:11} password {p!r}  ({USERS[u]})" for u, p in stack.users.items()]
    lines += ["  Services:"] + [f"    {s.name:12} {s.url:28} pid {s.pid}  log {s.log}" for s in stack.services]
    lines += ["  Settings (also in " + str(Path(stack.dir) / "env") + "):"]
    lines += [f"    {k}={v}" for k, v in stack.settings.items() if k.startswith("RELENG_")]
    lines += ["  Stop it with: make stop", ""]
    return "\n".join(lines)


def _api(url: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{url}{path}", method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def run_compose(stack: Stack, conf: dict, *, timeout: float = 3600, log: Callable[[str], None] = print) -> str:
    """Trigger full_compose on the running stack through the REST API and follow it to the end."""
    from urllib.parse import quote

    url = stack.ui
    token = airflow_token(url, "admin", stack.users["admin"])
    deadline = time.monotonic() + 120
    while True:  # the dag-processor parses the DAG files some seconds after start
        try:
            _api(url, token, "PATCH", "/api/v2/dags/full_compose", {"is_paused": False})
            break
        except urllib.error.HTTPError as err:
            if err.code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(2)
    run = _api(url, token, "POST", "/api/v2/dags/full_compose/dagRuns", {"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]
    log(f"full_compose: triggered {run_id} with {json.dumps(conf)}; follow it at {url}/dags/full_compose")
    started, last = time.monotonic(), ""
    while time.monotonic() - started < timeout:
        time.sleep(5)
        state = _api(url, token, "GET", f"/api/v2/dags/full_compose/dagRuns/{quote(run_id, safe='')}")["state"]
        tis = _task_instances(url, token, "full_compose", run_id)
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
                log(f"full_compose {state}; failed tasks: {', '.join(failed)} (logs in the UI)")
            return state
    raise RuntimeError(f"full_compose run {run_id} did not finish in {timeout:.0f} s; see {url}")


def _task_instances(url: str, token: str, dag_id: str, run_id: str, page: int = 100) -> list[dict]:
    """Every task instance of a run: the API returns at most 100 per request, whatever the limit asked."""
    from urllib.parse import quote

    found: list[dict] = []
    while True:
        answer = _api(url, token, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
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
    sub.add_parser("stop", help="stop the stack")
    sub.add_parser("status", help="show the stack")
    sub.add_parser("env", help="print export lines for the stack's settings")
    co = sub.add_parser("compose", help="run full_compose on the running stack and follow it")
    co.add_argument("--release", default="el9")
    co.add_argument("--arches", default="x86_64,aarch64", help="comma-separated (default: x86_64,aarch64)")
    args = parser.parse_args(argv)

    if args.cmd == "start":
        stack = start(args.dir, buildsystem_port=args.buildsystem_port, s3_port=args.s3_port,
                      airflow_port=args.airflow_port)
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
        state = run_compose(stack, {"release": args.release, "arches": args.arches.split(",")})
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
