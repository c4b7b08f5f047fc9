"""The mail notifier: the smtp provider's SmtpNotifier with a finished message.

In its own module so that parsing a DAG file (which imports ``releng.notifiers``) does not import the smtp
provider and its mail libraries; ``releng.notifiers.targets`` imports it when a mail is to be sent.
"""

from __future__ import annotations

import html

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

from releng.core import notify


class EmailNotifier(SmtpNotifier):
    """The smtp provider's SmtpNotifier with a finished message: plain-text body in HTML ``<pre>``, no templating."""

    template_fields: tuple[str, ...] = ()  # type: ignore[assignment]  # report text may hold braces: sent as is

    def __init__(self, *, to: tuple[str, ...], message: notify.Message, smtp_conn_id: str, from_email: str = "",
                 **kwargs) -> None:
        super().__init__(to=list(to), from_email=from_email or None, subject=message.subject,
                         html_content=f"<pre>{html.escape(message.body)}</pre>", smtp_conn_id=smtp_conn_id,
                         custom_headers={"X-Releng-Event": message.event}, **kwargs)
