"""A scheduled update that fails tells release engineering which release failed and why (RELENG_NOTIFY_*), and
the run's tasks fail as before: the notification is the failure callback of scheduled_updates' tasks."""

from __future__ import annotations

import pendulum
import pytest

from tests.dagrun import parse_dag
from tests.notifytargets import webhook  # noqa: F401 (fixture)
from tests.updates.test_scheduled_updates import _set_paused, _sync_dags, _task_states

pytestmark = [pytest.mark.slow]


def test_a_release_whose_scheduled_update_fails_is_named_in_a_notification(airflow_db, webhook,  # noqa: F811
                                                                          monkeypatch):
    monkeypatch.setenv("RELENG_NOTIFY_WEBHOOK", webhook.url)
    monkeypatch.setenv("RELENG_UPDATES_RELEASES", "el11")  # no such profile: its instance fails before any run
    _sync_dags()
    _set_paused("general_updates", False)
    when = pendulum.datetime(2026, 4, 1, 3, tz="UTC")
    dr = parse_dag("scheduled_updates").test(logical_date=when, run_after=when)
    assert dr.state == "failed"
    assert _task_states("scheduled_updates", dr.run_id) == {"list_releases": "success",
                                                            "trigger_updates[el11]": "failed"}
    (told,) = webhook.by_event("updates_failed")
    assert told["audience"] == "releng" and told["data"]["release"] == "el11"
    assert told["data"]["task_id"] == "trigger_updates" and told["data"]["run_id"] == dr.run_id
    assert "el11" in told["data"]["error"] and "Scheduled updates of el11 failed" in told["subject"]
