"""The run command's stack, started and stopped through its CLI like a user would."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dev import stack
from tests.livestack import cli

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _cli(stack_dir: Path, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return cli(stack_dir, *args, timeout=timeout)


def _listeners(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening socket of these processes."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            address, port = line.split()[3].rsplit(":", 1)
            found.append((address, int(port), re.search(r'\(\("([^"]+)"', line).group(1)))
    return found


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid="], capture_output=True, text=True).stdout
    return {int(p) for p, g in (line.split() for line in out.splitlines()) if int(g) == pid}


@pytest.fixture
def started(live_stack):
    """The session's shared stack (tests/livestack.py): these tests only read it, except the last, which stops it."""
    return live_stack.dir, live_stack.out


def test_start_prints_the_ui_credentials_and_settings(started):
    stack_dir, out = started
    assert re.search(r"Airflow UI:\s+http://127\.0\.0\.1:\d+", out)
    assert re.search(r"user 'admin'\s+password '\S+'", out) and re.search(r"user 'approver'\s+password '\S+'", out)
    for name in ("RELENG_CONFIG_DIR", "RELENG_COMPOSE_ROOT", "RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT",
                 "RELENG_PERIDOT_URL", "RELENG_S3_BUCKET", "RELENG_S3_CONN_ID", "RELENG_LORAX_BACKEND",
                 "RELENG_APPROVERS", "RELENG_GPG_KEY_DIR", "RELENG_REPO_SIGNING_KEY", "RELENG_GNUPGHOME"):
        assert f"    {name}=" in out
    env = (stack_dir / "env").read_text()
    assert f"export RELENG_COMPOSE_ROOT='{stack_dir.resolve()}/trees/compose'" in env


def test_the_stack_signs_repodata_with_a_key_of_its_own(started, tmp_path):
    """Staging and production are signed as at a real site: a usable secret key, its public half exported."""
    from releng.core.staging.signing import signing_key_problem

    stack_dir, out = started
    key = re.search(r"RELENG_REPO_SIGNING_KEY=([0-9A-F]{40})", out).group(1)
    home = stack_dir / "release-gnupg"
    (tmp_path / "g").mkdir(mode=0o700)
    assert signing_key_problem(key, home) is None  # which stops the agent it needed
    shown = subprocess.run(["gpg", "--homedir", str(tmp_path / "g"), "--batch", "--show-keys", "--with-colons",
                            str(stack_dir / "release-key.asc")], capture_output=True, text=True)
    assert f"fpr:::::::::{key}:" in shown.stdout


def test_secrets_of_the_started_stack_are_private(started):
    import stat

    stack_dir, _ = started
    for name in ("env", "s3/.secret", "passwords.json", "stack.json"):
        assert stat.S_IMODE((stack_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((stack_dir / "airflow").stat().st_mode) == 0o700  # airflow.cfg: Fernet key, JWT secret
    assert "fernet_key" in (stack_dir / "airflow" / "airflow.cfg").read_text()


def test_ui_answers_with_the_printed_credentials(started):
    _, out = started
    url = re.search(r"Airflow UI:\s+(\S+)", out).group(1)
    for user in ("admin", "approver"):
        password = re.search(rf"user '{user}'\s+password '(\S+)'", out).group(1)
        token = stack.airflow_token(url, user, password)
        req = urllib.request.Request(f"{url}/api/v2/pools", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            pools = {p["name"]: p["slots"] for p in json.loads(resp.read())["pools"]}
        expected = json.loads((ROOT / "config" / "pools.json").read_text())
        assert {name: spec["slots"] for name, spec in expected.items()}.items() <= pools.items()
    with pytest.raises(urllib.error.HTTPError) as err:
        stack.airflow_token(url, "admin", "wrong-password")
    assert err.value.code == 401


def test_s3_lists_the_fixtures_and_services_bind_loopback_only(started):
    stack_dir, _ = started
    state = stack.Stack.load(stack_dir)
    s3 = next(s for s in state.services if s.name == "s3")
    client = stack.s3_client(s3.url, stack_dir / "s3")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=stack.BUCKET, Prefix="buildimage-9.7-x86_64/")["Contents"]]
    assert any(k.endswith(".x86_64.qcow2") and "GenericCloud-Base" in k for k in keys)
    conn = json.loads(state.settings["AIRFLOW_CONN_RELENG_S3"])
    assert conn["extra"]["endpoint_url"] == s3.url
    pids = set().union(*(_descendants(s.pid) for s in state.services))
    listeners = _listeners(pids)
    assert any(port == int(s3.url.rsplit(":", 1)[1]) for _, port, _ in listeners)
    # Everything is loopback-only except Airflow's own log servers, whose bind address Airflow hard-codes;
    # they refuse requests without a JWT signed with the stack's secret.
    for address, port, name in listeners:
        if address != "127.0.0.1":
            assert name == "airflow serve-l", (address, port, name)
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/log/x.log", timeout=5)
            assert err.value.code == 403


def test_status_and_second_start_refused(started):
    stack_dir, _ = started
    status = _cli(stack_dir, "status")
    assert status.returncode == 0 and status.stdout.count("running") >= 3 and "NOT RUNNING" not in status.stdout
    again = _cli(stack_dir, "start")
    assert again.returncode != 0 and "a stack is already running" in again.stderr


def _in_tmp(weed_pid: int, ports: set[str]) -> list[str]:
    """What the weed process ``weed_pid`` has in /tmp or the temp dir (TMPDIR): glog files (named
    ``weed.<host>.<user>.log.<LEVEL>.<time>.<pid>``) and sockets named after one of its ports."""
    return sorted(str(p) for tmp in {Path("/tmp"), Path(tempfile.gettempdir())} for p in tmp.iterdir()
                  if (p.name.startswith("weed.") and p.name.endswith(f".{weed_pid}"))
                  or (p.name.startswith("seaweedfs-") and p.name.rsplit("-", 1)[-1].removesuffix(".sock") in ports))


def test_stop_leaves_no_process(tmp_path_factory, started):
    """Issue 9 finding 2: SeaweedFS keeps its logs and local sockets in the stack dir, and once the stack is
    stopped nothing of it is left in /tmp (its gRPC sockets, at a fixed /tmp path, are removed by stop)."""
    stack_dir, _ = started
    state = stack.Stack.load(stack_dir)
    pids = set().union(*(_descendants(s.pid) for s in state.services))
    s3 = next(s for s in state.services if s.name == "s3")
    argv = Path(f"/proc/{s3.pid}/cmdline").read_bytes().decode().split("\0")
    ports = {a.split("=", 1)[1] for a in argv if re.match(r"-[\w.]*port[\w.]*=\d+$", a)}
    assert list((stack_dir / "logs" / "weed").glob(f"weed.*.log.INFO.*.{s3.pid}"))  # weed's own log files
    assert {p.name for p in (stack_dir / "s3" / "sockets").iterdir()} >= {"s3.sock", "filer.sock"}
    assert not [p for p in _in_tmp(s3.pid, ports) if "-grpc-" not in p]  # only the fixed-path gRPC sockets
    result = _cli(stack_dir, "stop")
    assert result.returncode == 0 and "stopped the stack" in result.stdout
    assert not any(_descendants(s.pid) for s in state.services), pids
    assert not (stack_dir / "stack.json").exists()
    assert _cli(stack_dir, "status").returncode == 1
    assert _in_tmp(s3.pid, ports) == []
