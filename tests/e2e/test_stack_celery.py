"""The three DAGs on the Celery stack (`python -m dev.stack start --executor celery --workers 2`), driven
through the REST API as a site would: a two-arch full_compose, general_updates, and promote_to_production
approved by the approver through REST.

Checks that tasks ran on both workers (the task instances' hostname), that pools held while the workers offered
more slots than a pool has, and that the compose equals the one the LocalExecutor-side e2e test made in this
session (tests/e2e/digest.py; run alone, this test composes that reference itself with dag.test()).

Needs this machine's PostgreSQL (127.0.0.1:5432, trust for postgres) and Redis (127.0.0.1:6379): CI machines
run both; without them the stack refuses to start, saying how to install them, and the test fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from dev import stack
from tests.e2e.digest import RECORDED, digest_lines

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.stack, pytest.mark.slow]
WORKERS = 2
ARCHES = ["x86_64", "aarch64"]
CONF = {"release": "el9", "arches": ARCHES}


def _cli(stack_dir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dev.stack", "--dir", str(stack_dir), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory):
    stack_dir = tmp_path_factory.mktemp("celery-stack")
    ports = [str(stack.free_port()) for _ in range(3)]
    result = _cli(stack_dir, "start", "--executor", "celery", "--workers", str(WORKERS), "--airflow-port", ports[0],
                  "--buildsystem-port", ports[1], "--s3-port", ports[2])
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        state = stack.Stack.load(stack_dir)
        yield state
    finally:
        stopped = _cli(stack_dir, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(s.alive() for s in state.services)
    assert not _database_exists(state.backends.name), "stop must drop the stack's database"


def _database_exists(name: str) -> bool:
    conn = stack._pg_admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None
    finally:
        conn.close()


def _peak(tis: list[dict]) -> int:
    """The most of these task instances that ran at one time (by their start and end dates)."""
    events = []
    for ti in tis:
        if ti["start_date"] and ti["end_date"]:
            events += [(datetime.fromisoformat(ti["start_date"]), 1), (datetime.fromisoformat(ti["end_date"]), -1)]
    peak = running = 0
    for _, step in sorted(events):  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def _reference_digest(request) -> list[str]:
    """The compose of the LocalExecutor-side e2e test of this session, or one made here with dag.test()."""
    if "el9 x86_64,aarch64" not in RECORDED:
        from tests.dagrun import run_dag

        request.getfixturevalue("airflow_db")
        site = request.getfixturevalue("site")
        dr, states = run_dag("full_compose", CONF)
        assert dr.state == "success", json.dumps(states, indent=1)
        (top,) = (Path(site["RELENG_COMPOSE_ROOT"]) / "9").glob("Rocky-9.7-*")
        RECORDED["el9 x86_64,aarch64"] = digest_lines(top)
    return RECORDED["el9 x86_64,aarch64"]


def test_three_dags_on_two_celery_workers(celery_stack, request):
    lines: list[str] = []
    st = celery_stack
    token = stack.airflow_token(st.ui, "admin", st.users["admin"])

    # full_compose, two arches
    run_id = stack.trigger(st, "full_compose", CONF, token)
    assert stack.follow(st, "full_compose", run_id, token, timeout=1800, log=lines.append) == "success", \
        "\n".join(lines)
    tis = stack.task_instances(st.ui, token, "full_compose", run_id)
    ran = [ti for ti in tis if ti["state"] == "success"]
    assert len(tis) > 100 and all(ti["state"] in ("success", "skipped") for ti in tis)  # all pages were read
    hosts = {ti["hostname"] for ti in ran}
    assert {h.split(".")[0] for h in hosts} == {f"worker-{n}" for n in range(1, WORKERS + 1)}, hosts
    per_host = {h: sum(ti["hostname"] == h for ti in ran) for h in hosts}
    assert min(per_host.values()) >= 10, per_host  # both workers did a share, not one task

    # pools held although the workers offered more slots than any pool has
    pools = {name: spec["slots"] for name, spec in json.loads((ROOT / "config/pools.json").read_text()).items()}
    assert WORKERS * stack.WORKER_CONCURRENCY > pools["reposync"]
    for pool, slots in pools.items():
        assert _peak([ti for ti in tis if ti["pool"] == pool]) <= slots, pool
    assert _peak([ti for ti in tis if ti["pool"] == "reposync"]) >= 2  # syncs did run side by side

    # the same compose as the LocalExecutor side made
    (top,) = (Path(st.settings["RELENG_COMPOSE_ROOT"]) / "9").glob("Rocky-9.7-*")
    assert (top / "STATUS").read_text().strip() == "FINISHED"
    celery = digest_lines(top)
    reference = _reference_digest(request)
    only_celery, only_local = Counter(celery) - Counter(reference), Counter(reference) - Counter(celery)
    assert celery == reference, "\n".join([f"only Celery: {x}" for x in sorted(only_celery)][:20]
                                          + [f"only LocalExecutor: {x}" for x in sorted(only_local)][:20])

    # general_updates for the release
    run_id = stack.trigger(st, "general_updates", {"release": "el9"}, token)
    assert stack.follow(st, "general_updates", run_id, token, timeout=900, log=lines.append) == "success", \
        "\n".join(lines)

    # promote_to_production, approved by the approver through REST
    run_id = stack.trigger(st, "promote_to_production", {"release": "el9"}, token)
    waiting = stack.follow(st, "promote_to_production", run_id, token, timeout=900, log=lines.append,
                           until=lambda tis: any(ti["task_id"] == "approve_promotion"
                                                 and ti["state"] == "awaiting_input" for ti in tis))
    assert waiting == "until", "\n".join(lines)
    approver = stack.airflow_token(st.ui, "approver", st.users["approver"])
    stack.api(st.ui, approver, "PATCH", f"/api/v2/dags/promote_to_production/dagRuns/{quote(run_id, safe='')}"
              "/taskInstances/approve_promotion/-1/hitlDetails", {"chosen_options": ["Approve"]})
    assert stack.follow(st, "promote_to_production", run_id, token, timeout=900, log=lines.append) == "success", \
        "\n".join(lines)
    production = Path(st.settings["RELENG_PRODUCTION_ROOT"]) / "mirror/pub/rocky/9.7"
    assert (production / "BaseOS/x86_64/os/repodata/repomd.xml").is_file()
    tis = stack.task_instances(st.ui, token, "promote_to_production", run_id)
    assert {ti["task_id"]: ti["state"] for ti in tis}["promote_payload"] == "success"
