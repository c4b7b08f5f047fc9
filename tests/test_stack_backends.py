"""The Celery stack's own PostgreSQL database and Redis database (dev/stack.py), made and dropped without
starting Airflow; and what the stack says when PostgreSQL or Redis is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dev import stack

ROOT = Path(__file__).resolve().parents[1]


def _needs_services():
    for what, host, port in (("PostgreSQL", stack.PG_HOST, stack.PG_PORT), ("Redis", stack.REDIS_HOST,
                                                                              stack.REDIS_PORT)):
        try:
            stack._reachable(what, host, port)
        except stack.ServiceMissing as exc:
            pytest.fail(str(exc))  # CI machines run both; the message says how to install them


def test_two_stacks_get_their_own_database_redis_db_and_user_and_stop_drops_them():
    import redis

    _needs_services()
    made = []
    try:
        for n in range(2):
            made.append(stack.create_backends(f"releng_test_{os.getpid()}_{n}", log=lambda _m: None))
        a, b = made
        assert a.redis_db != b.redis_db and 0 not in (a.redis_db, b.redis_db)
        user = redis.Redis.from_url(a.broker_url, socket_timeout=5)
        try:
            assert user.set(f"{a.name}:k", "v") and user.get(f"{a.name}:k") == b"v"
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.set("not-its-prefix", "v")  # the ACL user may only touch its own keys
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.flushall()
        finally:
            user.close()
        import psycopg2

        conn = psycopg2.connect(a.sql_alchemy_conn.replace("postgresql+psycopg2", "postgresql"), connect_timeout=5)
        conn.close()
    finally:
        for backends in made:
            stack.drop_backends(backends)
    admin = stack._redis_admin()
    try:
        users = {u.decode() if isinstance(u, bytes) else u for u in admin.execute_command("ACL", "USERS")}
        assert not {b.name for b in made} & users
        for backends in made:
            r = redis.Redis(host=stack.REDIS_HOST, port=stack.REDIS_PORT, db=backends.redis_db)
            assert r.get(stack.REDIS_CLAIM_KEY) != backends.name.encode()
            assert not list(r.scan_iter(f"{backends.name}:*"))
            r.close()
    finally:
        admin.close()
    pg = stack._pg_admin()
    try:
        with pg.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", ([b.name for b in made],))
            assert cur.fetchall() == []
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", ([b.name for b in made],))
            assert cur.fetchall() == []
    finally:
        pg.close()


@pytest.mark.parametrize("what, attr, hint", [("PostgreSQL", "PG_PORT", "apt-get install postgresql"),
                                              ("Redis", "REDIS_PORT", "apt-get install redis-server")])
def test_a_missing_service_is_named_with_how_to_install_it(monkeypatch, tmp_path, what, attr, hint):
    monkeypatch.setattr(stack, attr, stack.free_port())  # nothing listens there
    with pytest.raises(stack.ServiceMissing, match=rf"needs {what} on 127\.0\.0\.1:\d+.*{hint}"):
        stack.start(tmp_path / "s", executor="celery")
    assert not (tmp_path / "s").exists(), "nothing is built before the services are there"


def test_bad_executor_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown executor 'kubernetes'"):
        stack.start(tmp_path, executor="kubernetes")
    done = subprocess.run([sys.executable, "-m", "dev.stack", "--dir", str(tmp_path), "start", "--executor",
                           "celery", "--workers", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--workers must be at least 1" in done.stderr
