"""The local stack's secret files (S3 secret, passwords, stack.json, the env file) and Airflow's home
(airflow.cfg holds the Fernet key and JWT secret) are private to the user, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dev import stack


@pytest.fixture
def open_umask():
    old = os.umask(0)  # the worst case: every new file world-readable and writable
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_secret_files_are_written_0600(tmp_path, open_umask):
    s3dir = tmp_path / "s3"
    s3dir.mkdir()
    secret = stack.s3_secret(s3dir)
    assert mode(s3dir / ".secret") == 0o600 and len(secret) == 32
    users = stack.passwords(tmp_path / "passwords.json")
    assert mode(tmp_path / "passwords.json") == 0o600 and set(users) == set(stack.USERS)
    state = stack.Stack(str(tmp_path), {"AIRFLOW_CONN_RELENG_S3": "aws://k:s@"}, users)
    state.save()
    assert mode(tmp_path / "stack.json") == 0o600
    stack.write_env(tmp_path, state.settings)
    assert mode(tmp_path / "env") == 0o600
    assert (tmp_path / "env").read_text() == "export AIRFLOW_CONN_RELENG_S3='aws://k:s@'\n"


def test_files_of_an_older_stack_are_made_private(tmp_path, open_umask):
    """A stack started before this fix left them 0644: the next start tightens them, keeping their content."""
    s3dir = tmp_path / "s3"
    s3dir.mkdir()
    (s3dir / ".secret").write_text("0123456789abcdef0123456789abcdef")
    (tmp_path / "passwords.json").write_text('{"admin": "a", "approver": "b"}')
    for path in (s3dir / ".secret", tmp_path / "passwords.json"):
        path.chmod(0o644)
    assert stack.s3_secret(s3dir) == "0123456789abcdef0123456789abcdef"
    assert stack.passwords(tmp_path / "passwords.json") == {"admin": "a", "approver": "b"}
    assert mode(s3dir / ".secret") == 0o600 and mode(tmp_path / "passwords.json") == 0o600
    (tmp_path / "env").write_text("old")
    (tmp_path / "env").chmod(0o666)
    stack.write_env(tmp_path, {"RELENG_APPROVERS": "approver"})
    assert mode(tmp_path / "env") == 0o600 and (tmp_path / "env").read_text() == "export RELENG_APPROVERS='approver'\n"


def test_airflow_home_is_private(tmp_path, open_umask):
    home = tmp_path / "airflow"
    stack.private_dir(home)
    assert mode(home) == 0o700
    home.chmod(0o755)
    stack.private_dir(home)
    assert mode(home) == 0o700
