"""Notifications through Airflow's notifier interface (``airflow.sdk.BaseNotifier``).

The content of every message is built in :mod:`releng.core.notify`; this module sends it to the targets the
site settings name for the message's audience:

* ``RELENG_NOTIFY_WEBHOOK``: every message, as a JSON POST (:class:`WebhookNotifier`, stdlib urllib, retries);
* ``RELENG_NOTIFY_EMAIL``: release engineering's messages, by mail through the smtp provider's ``SmtpNotifier``
  and the Airflow connection ``RELENG_SMTP_CONN_ID`` (:class:`EmailNotifier`);
* ``RELENG_NOTIFY_APPROVERS_EMAIL`` (empty: ``RELENG_NOTIFY_EMAIL``): the approvers' messages.

No target set: nothing is sent and nothing fails. A target that fails is logged and the others still get the
message; a notification never fails the task it reports on (:func:`send` and :func:`asend` never raise).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseNotifier, Context

from releng.core import notify
from releng.core.log import Logger
from releng.core.settings import Settings, settings

log = logging.getLogger(__name__)


def airflow_url(cfg: Settings) -> str:
    """The UI's base address for links: RELENG_AIRFLOW_URL, else Airflow's ``[api] base_url``, else ''."""
    if cfg.airflow_url:
        return cfg.airflow_url
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "").rstrip("/")


class WebhookNotifier(BaseNotifier):
    """POST a message's JSON payload to ``url`` (``releng.core.notify.post_json``: retries, timeout)."""

    template_fields = ()  # the payload is final text, never a Jinja template

    def __init__(self, *, url: str, payload: Mapping[str, Any], attempts: int = notify.WEBHOOK_ATTEMPTS,
                 timeout: float = notify.WEBHOOK_TIMEOUT, retry_delay: float = notify.WEBHOOK_RETRY_DELAY,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.payload = dict(payload)
        self.attempts = attempts
        self.timeout = timeout
        self.retry_delay = retry_delay

    def notify(self, context: Context) -> None:
        status, _ = notify.post_json(self.url, self.payload, attempts=self.attempts, timeout=self.timeout,
                                     retry_delay=self.retry_delay, log=self.log)
        self.log.info("notification %s posted to %s (HTTP %s)", self.payload.get("event"), self.url, status)

    async def async_notify(self, context: Context) -> None:
        await asyncio.to_thread(self.notify, context)


def targets(cfg: Settings, message: notify.Message) -> list[BaseNotifier]:
    """The notifiers the settings name for the message's audience (empty: nobody is told)."""
    out: list[BaseNotifier] = []
    emails = cfg.notify_email
    if message.audience == notify.APPROVERS and cfg.notify_approvers_email:
        emails = cfg.notify_approvers_email
    if emails:
        from releng.email_notifier import EmailNotifier  # the smtp provider only when a mail is sent

        out.append(EmailNotifier(to=emails, message=message, smtp_conn_id=cfg.smtp_conn_id,
                                 from_email=cfg.notify_from))
    if cfg.notify_webhook:
        out.append(WebhookNotifier(url=cfg.notify_webhook, payload=message.payload()))
    return out


def _describe(notifier: BaseNotifier) -> str:
    return (f"webhook {notifier.url}" if isinstance(notifier, WebhookNotifier)
            else f"mail to {', '.join(getattr(notifier, 'to', []))}")


def send(message: notify.Message | None, context: Context | None = None, logger: Logger | None = None) -> int:
    """Send ``message`` to its targets through each notifier's ``__call__``; the number that succeeded.

    Never raises: a failing target is logged as a warning.
    """
    logger = logger or log
    if message is None:
        return 0
    try:
        found = targets(settings(), message)
    except Exception as exc:  # settings that do not validate: the task's own work must not fail for them
        logger.warning("notification %s not sent: %s", message.event, exc)
        return 0
    if not found:
        logger.info("notification %s: no target configured (RELENG_NOTIFY_*); nothing sent", message.event)
        return 0
    sent = 0
    for notifier in found:
        try:
            notifier(dict(context or {}))
            sent += 1
            logger.info("notification %s sent: %s", message.event, _describe(notifier))
        except Exception as exc:
            logger.warning("notification %s NOT sent (%s): %s: %s", message.event, _describe(notifier),
                           type(exc).__name__, exc)
    return sent


async def asend(message: notify.Message, logger: Logger | None = None) -> int:
    """:func:`send` for the triggerer (deadline callbacks): each notifier awaited, never raising."""
    logger = logger or log
    try:
        found = targets(settings(), message)
    except Exception as exc:
        logger.warning("notification %s not sent: %s", message.event, exc)
        return 0
    if not found:
        logger.info("notification %s: no target configured (RELENG_NOTIFY_*); nothing sent", message.event)
    sent = 0
    for notifier in found:
        notifier.context = {}
        try:
            await notifier
            sent += 1
            logger.info("notification %s sent: %s", message.event, _describe(notifier))
        except Exception as exc:
            logger.warning("notification %s NOT sent (%s): %s: %s", message.event, _describe(notifier),
                           type(exc).__name__, exc)
    return sent


# --- notifiers that build their message from the task's context ------------------------------------------------


class ApprovalWaitingNotifier(BaseNotifier):
    """Tells the approvers that the run's promotion waits for them: the approval operator's ``notifiers``.

    Airflow's HITL operator calls it once the request is written; the message comes from the run's record file
    (the report the approvers are asked about) and links to the task's Required Actions page.
    """

    template_fields = ()

    def notify(self, context: Context) -> None:
        from releng.core.promotion import approval, render, vetting  # where it runs: DAG files import this module
        from releng.core.promotion.target import state_dir

        try:
            cfg = settings()
            run_id, task = context["run_id"], context["task"]
            record = approval.run_record(state_dir(cfg), run_id)
            url = notify.required_actions_url(airflow_url(cfg), task.dag_id, run_id, task.task_id)
            verdict = vetting.load_verdict(state_dir(cfg), run_id, record["digest"])
            message = notify.approval_waiting(record, vetting.approval_body(render.markdown(record), verdict), url,
                                              cfg.approvers, cfg.approval_timeout_hours)
        except Exception as exc:
            self.log.warning("approval notification not built: %s: %s", type(exc).__name__, exc)
            return
        send(message, context, self.log)


class UpdatesFailedNotifier(BaseNotifier):
    """A failure callback of scheduled_updates' tasks: release engineering hears which release failed and why."""

    template_fields = ()

    def notify(self, context: Context) -> None:
        try:
            task, run_id = context["task"], context["run_id"]
            release = getattr(task, "release", None)
            error = str(context.get("exception") or "")
            url = notify.run_url(airflow_url(settings()), task.dag_id, run_id)
            message = notify.updates_failed(release if isinstance(release, str) else None, task.dag_id, run_id,
                                            task.task_id, error, url)
        except Exception as exc:
            self.log.warning("updates notification not built: %s: %s", type(exc).__name__, exc)
            return
        send(message, context, self.log)


# --- deadline alerts -------------------------------------------------------------------------------------------


async def deadline_missed(milestone: str, hours: float, context: Mapping[str, Any] | None = None) -> str:
    """The callback of the deadline alerts (``AsyncCallback``; runs in the triggerer when a deadline is missed).

    ``context`` is what the scheduler hands a missed deadline's callback: the run (``dag_run``) and the deadline.
    """
    context = context or {}
    run = context.get("dag_run") or {}
    dag_id, run_id = str(run.get("dag_id", "")), str(run.get("dag_run_id") or run.get("run_id") or "")
    deadline = str((context.get("deadline") or {}).get("deadline_time", ""))
    base = airflow_url(settings())
    url = (notify.required_actions_url(base, dag_id, run_id, "approve_promotion") if milestone == "approval"
           else notify.run_url(base, dag_id, run_id))
    message = notify.deadline_missed(milestone, hours, dag_id, run_id, deadline, url)
    sent = await asend(message)
    return f"{message.event} for {dag_id} {run_id}: {sent} notification(s) sent"


def deadline_alerts(milestone: str, cfg: Settings) -> list:
    """The DAG's ``deadline`` list for a milestone the site set (empty when it set none).

    ``compose``: full_compose not finished RELENG_COMPOSE_DEADLINE_HOURS after its run was queued.
    ``approval``: promote_to_production not finished RELENG_APPROVAL_REMINDER_HOURS before
    RELENG_APPROVAL_TIMEOUT_HOURS, counted from the run's queueing (the request is made after the change report,
    so the reminder comes at least that many hours before the request times out). A run that ends before its
    deadline drops it; one still running when it passes fires ``deadline_missed`` in the triggerer.
    """
    from datetime import timedelta

    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    if milestone == "compose":
        hours = cfg.compose_deadline_hours
        after = hours
    elif milestone == "approval":
        hours = cfg.approval_reminder_hours
        after = None if hours is None else cfg.approval_timeout_hours - hours
    else:
        raise ValueError(f"unknown milestone {milestone!r}; one of {', '.join(notify.MILESTONES)}")
    if hours is None or after is None:
        return []
    return [DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(hours=after),
                          callback=AsyncCallback(deadline_missed, kwargs={"milestone": milestone, "hours": hours}),
                          name=notify.MILESTONES[milestone][1].format(hours=hours))]
