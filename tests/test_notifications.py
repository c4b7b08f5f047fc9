"""Notifications: the content core builds, the settings that name the targets, and the notifiers delivering to a
real SMTP server (aiosmtpd) and HTTP endpoint on loopback. The DAG runs that send them are in
tests/promotion/test_dag.py, tests/e2e/test_full_compose.py, tests/test_deadlines.py and
tests/updates/test_scheduled_updates_notify.py."""

from __future__ import annotations

import asyncio

import pytest

from releng.core import notify
from releng.core.settings import Settings, SettingsError
from tests.notifytargets import free_port, smtp_server, webhook  # noqa: F401 (fixtures)

RECORD = {
    "release": "el9", "run_id": "manual__2026-01-01T00:00:00+00:00", "digest": "sha256:abc",
    "staging_dir": "/s/mirror/pub/rocky/9.7-RC1", "production_dir": "/p/mirror/pub/rocky/9.7",
    "totals": {"packages": {"added": 2, "updated": 1, "removed": 0}, "deletions": {"files": 3}},
}


def test_required_actions_link_is_the_ui_route_with_the_run_id_quoted():
    url = notify.required_actions_url("https://airflow.example.org/", "promote_to_production",
                                      "manual__2026-01-01T00:00:00+00:00", "approve_promotion")
    assert url == ("https://airflow.example.org/dags/promote_to_production/runs/"
                   "manual__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/approve_promotion/required_actions")
    assert notify.required_actions_url("", "d", "r", "t") == ""


def test_messages_carry_what_their_readers_need():
    m = notify.approval_waiting(RECORD, "| report table |", "https://a/x/required_actions", ("approver",), 24)
    assert m.audience == notify.APPROVERS and "el9 9.7-RC1 -> production 9.7" in m.subject
    assert "https://a/x/required_actions" in m.body and "| report table |" in m.body
    assert "2 added, 1 updated, 0 removed" in m.body and "24 h counts as Reject" in m.body
    m = notify.approval_waiting(RECORD, "", "", (), 24)
    assert "set RELENG_AIRFLOW_URL" in m.body  # no base URL: the message says how to get a link
    assert notify.compose_ended("Rocky-9.7-x", "FINISHED", "/c", [], "", "el9") is None
    doomed = notify.compose_ended("Rocky-9.7-x", "DOOMED", "/c", ["repoclosure"], "u", "el9")
    assert doomed is not None and doomed.event == "compose_doomed" and "repoclosure" in doomed.body
    entry = {"release": "el9", "outcome": "rejected", "decided_by": {"id": "approver"}, "decision": "Reject",
             "digest": "d", "run_id": "r"}
    assert notify.promotion_ended(entry, "").event == "promotion_rejected"
    assert notify.promotion_ended({**entry, "outcome": "timed out (default: Reject)", "decided_by": None},
                                  "").event == "promotion_timed_out"
    with pytest.raises(ValueError, match="unknown milestone 'lunch'; one of compose, approval"):
        notify.deadline_missed("lunch", 1, "d", "r", "t", "")


def test_post_json_retries_then_gives_up_naming_the_url_and_last_error(webhook):  # noqa: F811
    webhook.fail_next[:] = [500, 503]
    status, _ = notify.post_json(webhook.url, {"event": "x"}, attempts=3, retry_delay=0)
    assert status == 200 and webhook.events() == ["x"]
    webhook.fail_next[:] = [500, 500]
    with pytest.raises(notify.WebhookError, match=r"POST http://127\.0\.0\.1:\d+/hook failed 2 time\(s\); last: "
                                                  r"HTTP 500"):
        notify.post_json(webhook.url, {"event": "y"}, attempts=2, retry_delay=0)
    with pytest.raises(notify.WebhookError, match="ConnectionRefusedError"):
        notify.post_json(f"http://127.0.0.1:{free_port()}/", {}, attempts=1)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("RELENG_NOTIFY_EMAIL", "releng@example.org,nobody", "'nobody' is not an e-mail address"),
    ("RELENG_NOTIFY_APPROVERS_EMAIL", "a b@example.org", "is not an e-mail address"),
    ("RELENG_NOTIFY_FROM", "a@example.org,b@example.org", "names 2 addresses; set it to the one sender"),
    ("RELENG_NOTIFY_WEBHOOK", "chat.example.org/hook", "RELENG_NOTIFY_WEBHOOK='chat.example.org/hook' is not an "
                                                       "http(s) URL"),
    ("RELENG_AIRFLOW_URL", "https://", "is not an http(s) URL"),
    ("RELENG_COMPOSE_DEADLINE_HOURS", "soon", "RELENG_COMPOSE_DEADLINE_HOURS='soon' is not a number"),
    ("RELENG_COMPOSE_DEADLINE_HOURS", "0", "is not more than 0"),
    ("RELENG_APPROVAL_REMINDER_HOURS", "24", "is not less than RELENG_APPROVAL_TIMEOUT_HOURS='24'"),
    ("RELENG_MIRROR_HANDOFF_COMMAND", "push --to 'unclosed", "does not split into words"),
    ("RELENG_MIRROR_HANDOFF_COMMAND", "push {relase}", "unknown placeholder(s) 'relase'"),
    ("RELENG_MIRROR_HANDOFF_COMMAND", "push {release", "stray brace"),
    ("RELENG_MIRROR_HANDOFF_URL", "ftp://mirrors", "is not an http(s) URL"),
    ("RELENG_MIRROR_HANDOFF_ATTEMPTS", "0", "out of range [1, 20]"),
    ("RELENG_MIRROR_HANDOFF_ATTEMPTS", "2.5", "is not a whole number"),
])
def test_bad_notification_deadline_and_handoff_settings_are_named(name, value, message):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    assert message in str(err.value) and name in str(err.value)


def test_new_settings_defaults_and_round_trip():
    s = Settings.from_env({})
    assert (s.notify_email, s.notify_approvers_email, s.notify_webhook) == ((), (), "")
    assert s.smtp_conn_id == "releng_smtp" and s.compose_deadline_hours is None and s.approval_reminder_hours is None
    assert s.mirror_handoff_argv == () and s.mirror_handoff_attempts == 3
    s = Settings.from_env({"RELENG_NOTIFY_EMAIL": "a@x.org, b@x.org", "RELENG_COMPOSE_DEADLINE_HOURS": "12",
                           "RELENG_APPROVAL_REMINDER_HOURS": "4",
                           "RELENG_MIRROR_HANDOFF_COMMAND": "push-mirrors --release {release} 'a b'"})
    assert s.notify_email == ("a@x.org", "b@x.org") and s.compose_deadline_hours == 12
    assert s.mirror_handoff_argv == ("push-mirrors", "--release", "{release}", "a b")
    assert Settings.from_env(s.as_env()) == s


def _use(monkeypatch, **env):
    from releng.core.settings import settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()


def test_no_target_configured_sends_nothing_and_fails_nothing(capfd, caplog):
    from releng.notifiers import send

    assert send(notify.updates_failed("el9", "d", "r", "t", "boom", "")) == 0
    assert "no target configured" in capfd.readouterr().out + caplog.text  # where Airflow's logging sends it


def test_mail_and_webhook_reach_their_targets_through_the_notifiers(smtp_server, webhook, monkeypatch):  # noqa: F811
    """The smtp provider's SmtpNotifier (3.2.0) works with Airflow 3.3.2, sync and async (the deadline path)."""
    from releng.notifiers import asend, send

    _use(monkeypatch, RELENG_NOTIFY_EMAIL="releng@example.org", RELENG_NOTIFY_APPROVERS_EMAIL="approvers@example.org",
         RELENG_NOTIFY_WEBHOOK=webhook.url, RELENG_NOTIFY_FROM="pipeline@example.org")
    waiting = notify.approval_waiting(RECORD, "<report> {{ not a template }}", "https://a/required_actions",
                                      ("approver",), 24)
    assert send(waiting) == 2
    (mail,) = smtp_server.messages
    assert mail.envelope_to == ["approvers@example.org"] and mail["From"] == "pipeline@example.org"
    assert mail["Subject"] == waiting.subject
    assert "&lt;report&gt; {{ not a template }}" in smtp_server.text(mail)  # escaped, never rendered by Jinja
    assert webhook.by_event("approval_waiting")[0]["data"]["url"] == "https://a/required_actions"

    assert asyncio.run(asend(notify.updates_failed("el9", "d", "r", "t", "boom", ""))) == 2
    assert smtp_server.messages[1].envelope_to == ["releng@example.org"]
    assert webhook.events() == ["approval_waiting", "updates_failed"]


def test_a_failing_target_is_logged_and_the_others_still_get_the_message(webhook, monkeypatch, capfd,  # noqa: F811
                                                                           caplog):
    from releng.notifiers import send

    monkeypatch.setenv("AIRFLOW_CONN_RELENG_SMTP", f'{{"conn_type": "smtp", "host": "127.0.0.1", "port": '
                                                   f'{free_port()}, "extra": {{"disable_ssl": true, '
                                                   f'"disable_tls": true, "retry_limit": 1}}}}')
    _use(monkeypatch, RELENG_NOTIFY_EMAIL="releng@example.org", RELENG_NOTIFY_WEBHOOK=webhook.url)
    assert send(notify.updates_failed("el9", "d", "r", "t", "boom", "")) == 1
    assert ("notification updates_failed NOT sent (mail to releng@example.org)"
            in capfd.readouterr().out + caplog.text)
    assert webhook.events() == ["updates_failed"]
