"""Deadline alerts fire for runs that miss them, through Airflow 3.3's own path: the run is created through the
REST API (create_dagrun writes its Deadline from the DAG's DeadlineAlert), the deadline is moved into the past,
the scheduler loop's check (expired, not yet missed: ``Deadline.handle_miss``) queues the callback as a trigger,
and that trigger runs as the triggerer runs it, calling ``releng.notifiers.deadline_missed``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from releng.core.settings import settings
from tests.notifytargets import webhook  # noqa: F401 (fixture)

pytestmark = [pytest.mark.usefixtures("airflow_db")]


def _sync_dag(dag_id: str) -> None:
    """Write the DAG, parsed under this test's settings, to the metadata database as the dag-processor does."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    settings.cache_clear()
    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        bag = BundleDagBag(dag_folder=str(bundle.path / f"{dag_id}.py"), bundle_path=bundle.path,
                           bundle_name=bundle.name)
        assert bag.import_errors == {}
        sync_bag_to_db(bag, bundle.name, bundle.version)


def _trigger(dag_id: str, conf: dict) -> str:
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    client = TestClient(create_app(apps="core"))
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    r = client.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf},
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()["dag_run_id"]


def _miss_and_fire(dag_id: str, run_id: str) -> tuple[timedelta, list]:
    """(deadline - queued_at, the callback trigger's events) after the run's deadline is moved into the past."""
    from airflow._shared.module_loading import import_string
    from airflow.models import Deadline
    from airflow.models.dagrun import DagRun
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as s:
        dr = s.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        (deadline,) = s.scalars(select(Deadline).where(Deadline.dagrun_id == dr.id)).all()
        interval = deadline.deadline_time - dr.queued_at
        deadline.deadline_time = datetime.now(UTC) - timedelta(seconds=1)  # time moves on: the run missed it
        dagrun_id = dr.id
    with create_session() as s:
        # The scheduler loop's deadline check, restricted to this run.
        expired = s.scalars(select(Deadline).where(Deadline.deadline_time < datetime.now(UTC))
                            .where(~Deadline.missed).where(Deadline.dagrun_id == dagrun_id)).all()
        assert len(expired) == 1
        for d in expired:
            d.handle_miss(s)
    with create_session() as s:
        d = s.scalars(select(Deadline).where(Deadline.dagrun_id == dagrun_id)).one()
        assert d.missed
        row = s.get(Trigger, d.callback.trigger_id)
        trigger = import_string(row.classpath)(**row.kwargs)  # what the triggerer runs

    async def collect():
        return [event async for event in trigger.run()]

    return interval, asyncio.run(collect())


def test_a_compose_and_an_approval_that_miss_their_deadlines_notify(webhook, monkeypatch):  # noqa: F811
    monkeypatch.setenv("RELENG_NOTIFY_WEBHOOK", webhook.url)
    monkeypatch.setenv("RELENG_AIRFLOW_URL", "https://airflow.example.org")
    monkeypatch.setenv("RELENG_COMPOSE_DEADLINE_HOURS", "12")
    monkeypatch.setenv("RELENG_APPROVAL_TIMEOUT_HOURS", "24")
    monkeypatch.setenv("RELENG_APPROVAL_REMINDER_HOURS", "4")
    monkeypatch.setenv("RELENG_APPROVERS", "approver")

    _sync_dag("full_compose")
    run_id = _trigger("full_compose", {"release": "el9"})
    interval, events = _miss_and_fire("full_compose", run_id)
    assert interval == timedelta(hours=12)
    assert events[-1].payload["state"] == "success", events
    (sent,) = webhook.by_event("deadline_compose")
    assert sent["audience"] == "releng" and sent["data"]["run_id"] == run_id
    assert "full_compose run not finished within 12 h of being queued" in sent["subject"]
    assert sent["data"]["url"] == f"https://airflow.example.org/dags/full_compose/runs/{quote(run_id, safe='')}"

    _sync_dag("promote_to_production")
    run_id = _trigger("promote_to_production", {"release": "el9"})
    interval, events = _miss_and_fire("promote_to_production", run_id)
    assert interval == timedelta(hours=20)  # 4 h before the 24 h approval timeout
    assert events[-1].payload["state"] == "success", events
    (sent,) = webhook.by_event("deadline_approval")
    assert sent["audience"] == "approvers"
    assert "promotion not finished 4 h before its approval times out" in sent["subject"]
    assert sent["data"]["url"].endswith(f"/runs/{quote(run_id, safe='')}/tasks/approve_promotion/required_actions")


def test_no_deadline_setting_means_no_deadline_alert(dagbag):
    assert dagbag.get_dag("full_compose").deadline in (None, [])
    assert dagbag.get_dag("promote_to_production").deadline in (None, [])
