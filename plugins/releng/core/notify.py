"""What people are told, and the webhook POST that tells them: one :class:`Message` per event, built from the
promotion record, the audit entry, a compose's STATUS or a run's ids, and ``post_json`` (stdlib urllib,
retries, timeout), which the mirror hand-off uses too.

Who receives a message is the audience's targets in the site settings (releng.notifiers); nothing here
sends mail or reads Airflow.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from releng.core.log import Logger

APPROVERS = "approvers"
RELENG = "releng"
AUDIENCES = (APPROVERS, RELENG)

WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT = 10.0
WEBHOOK_RETRY_DELAY = 5.0


@dataclass(frozen=True)
class Message:
    """One notification: ``event`` names what happened; ``data`` is the machine-readable part of the webhook."""

    event: str
    audience: str
    subject: str
    body: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        return {"event": self.event, "audience": self.audience, "subject": self.subject, "text": self.body,
                "data": dict(self.data)}


class WebhookError(RuntimeError):
    """Every attempt to POST failed; the message names the URL and the last error."""


# --- links -------------------------------------------------------------------------------------------------


def run_url(base: str, dag_id: str, run_id: str) -> str:
    """The Airflow UI page of a DAG run; '' without a base URL."""
    return f"{base.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}" if base else ""


def required_actions_url(base: str, dag_id: str, run_id: str, task_id: str) -> str:
    """The Required Actions tab of an (unmapped) task instance, where an approver answers; '' without a base URL."""
    run = run_url(base, dag_id, run_id)
    return f"{run}/tasks/{quote(task_id, safe='')}/required_actions" if run else ""


def _link_line(label: str, url: str) -> str:
    return f"{label}: {url}" if url else f"{label}: (set RELENG_AIRFLOW_URL or Airflow's [api] base_url for a link)"


# --- the events ----------------------------------------------------------------------------------------------


def approval_waiting(record: Mapping, summary_markdown: str, url: str, approvers: tuple[str, ...],
                     timeout_hours: float) -> Message:
    """Approvers: a promotion waits for their answer. ``summary_markdown`` is the change report (render.markdown)."""
    t = record["totals"]
    subject = (f"[releng] Approval waiting: {record['release']} {Path(record['staging_dir']).name} -> production "
               f"{Path(record['production_dir']).name}")
    body = "\n".join([
        f"A promotion of {record['release']} to production waits for an approver "
        f"({', '.join(approvers) or 'nobody assigned'}). No answer within {timeout_hours:g} h counts as Reject.",
        _link_line("Answer it on the Required Actions page", url),
        "",
        f"Packages: {t['packages']['added']} added, {t['packages']['updated']} updated, "
        f"{t['packages']['removed']} removed; files deleted: {t['deletions']['files']}.",
        f"Report digest: {record['digest']} (run {record['run_id']})",
        "",
        summary_markdown,
    ])
    return Message("approval_waiting", APPROVERS, subject, body, {
        "release": record["release"], "run_id": record["run_id"], "digest": record["digest"],
        "staging_dir": record["staging_dir"], "production_dir": record["production_dir"],
        "packages": dict(t["packages"]), "deletions": t["deletions"]["files"], "url": url,
        "approvers": list(approvers), "timeout_hours": timeout_hours})


def compose_ended(compose_id: str, status: str, top: str, failed: list[str] | tuple[str, ...], url: str,
                  release: str) -> Message | None:
    """Release engineering: a compose ended DOOMED or FINISHED_INCOMPLETE; None for any other STATUS."""
    if status not in ("DOOMED", "FINISHED_INCOMPLETE"):
        return None
    what = ("nothing of it goes to staging" if status == "DOOMED"
            else "it goes to staging without the failed optional deliverables")
    body = "\n".join([
        f"Compose {compose_id} of {release} ended {status}: {what}.",
        f"Failed: {', '.join(failed) or '(see the run)'}",
        f"Compose directory: {top}",
        _link_line("Run", url),
    ])
    return Message("compose_" + status.lower(), RELENG, f"[releng] Compose {compose_id} {status}", body,
                   {"compose_id": compose_id, "release": release, "status": status, "top": top,
                    "failed": list(failed), "url": url})


def promotion_ended(entry: Mapping, url: str) -> Message:
    """Release engineering: a promotion's audit outcome (promoted, rejected, timed out, incomplete, vetting failed,
    no decision); the failed vetting checks are named."""
    outcome = str(entry.get("outcome"))
    user = (entry.get("decided_by") or {}).get("id")
    kind = ("promoted" if outcome == "promoted" else "rejected" if outcome == "rejected"
            else "timed_out" if outcome.startswith("timed out") else "incomplete" if outcome.startswith("incomplete")
            else "vetting_failed" if outcome.startswith("not asked: vetting failed") else "not_promoted")
    vetting = entry.get("vetting") or {}
    phases = entry.get("phases") or {}
    copied = sum(int((p or {}).get("files", 0)) for p in phases.values())
    lines = [
        f"Promotion of {entry.get('release')} from {entry.get('staging_dir')} to {entry.get('production_dir')}: "
        f"{outcome}.",
        f"Decision: {entry.get('decision') or 'none'} by {user or 'nobody'} at {entry.get('decided_at') or '-'}",
        f"Report digest: {entry.get('digest')} (run {entry.get('run_id')})",
    ]
    if kind in ("promoted", "incomplete"):
        lines.append(f"Files transferred or deleted by the phases: {copied}")
    if vetting.get("failed"):
        lines.append(f"Vetting {vetting.get('status')}: failed checks: {', '.join(vetting['failed'])}"
                     + (" (approval asked anyway: vetting_override)" if vetting.get("status") == "overridden" else ""))
    lines.append(_link_line("Run", url))
    return Message("promotion_" + kind, RELENG,
                   f"[releng] Promotion of {entry.get('release')} {outcome.split(':')[0]}", "\n".join(lines),
                   {"release": entry.get("release"), "run_id": entry.get("run_id"), "digest": entry.get("digest"),
                    "outcome": outcome, "decided_by": user, "production_dir": entry.get("production_dir"),
                    "vetting": vetting.get("status"), "failed_checks": list(vetting.get("failed", [])),
                    "url": url})


def updates_failed(release: str | None, dag_id: str, run_id: str, task_id: str, error: str, url: str) -> Message:
    """Release engineering: a scheduled update (one release's instance, or the listing) failed."""
    which = f"of {release}" if release else "(no release was started)"
    body = "\n".join([
        f"The scheduled updates {which} failed in {task_id} of run {run_id}.",
        f"Error: {error or '(see the task log)'}",
        _link_line("Run", url),
    ])
    return Message("updates_failed", RELENG, f"[releng] Scheduled updates {which} failed", body,
                   {"release": release, "dag_id": dag_id, "run_id": run_id, "task_id": task_id, "error": error,
                    "url": url})


MILESTONES = {
    "compose": (RELENG, "full_compose run not finished within {hours:g} h of being queued"),
    "approval": (APPROVERS, "promotion not finished {hours:g} h before its approval times out"),
}


def deadline_missed(milestone: str, hours: float, dag_id: str, run_id: str, deadline_time: str,
                    url: str) -> Message:
    """A deadline alert fired: a compose not finished in time, or an approval still unanswered near its timeout."""
    if milestone not in MILESTONES:
        raise ValueError(f"unknown milestone {milestone!r}; one of {', '.join(MILESTONES)}")
    audience, text = MILESTONES[milestone]
    what = text.format(hours=hours)
    lines = [f"Deadline missed: {what}.", f"Run {run_id} of {dag_id}; deadline {deadline_time}."]
    if milestone == "approval":
        lines.append("If approve_promotion still waits, answer it now, or it counts as Reject when it times out.")
    lines.append(_link_line("Run" if milestone == "compose" else "Answer it on the Required Actions page", url))
    return Message(f"deadline_{milestone}", audience, f"[releng] Deadline missed: {what}", "\n".join(lines),
                   {"milestone": milestone, "hours": hours, "dag_id": dag_id, "run_id": run_id,
                    "deadline": deadline_time, "url": url})


# --- the webhook ---------------------------------------------------------------------------------------------


def post_json(url: str, payload: Mapping[str, Any], *, attempts: int = WEBHOOK_ATTEMPTS,
              timeout: float = WEBHOOK_TIMEOUT, retry_delay: float = WEBHOOK_RETRY_DELAY, log: Logger | None = None,
              sleep: Callable[[float], None] = time.sleep) -> tuple[int, str]:
    """POST ``payload`` as JSON; (status, response body) of the first 2xx answer.

    Every attempt that fails (no connection, timeout, a non-2xx answer) is logged and tried again after
    ``retry_delay`` seconds, up to ``attempts`` in all; then :class:`WebhookError`.
    """
    data = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
    last = ""
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "User-Agent": "releng-airflow"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read(64 * 1024).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}: {exc.read(2000).decode('utf-8', 'replace').strip()}"
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            last = f"{type(reason).__name__}: {reason}"
        if log is not None:
            log.warning("POST %s, attempt %d of %d: %s", url, attempt, attempts, last)
        if attempt < attempts:
            sleep(retry_delay)
    raise WebhookError(f"POST {url} failed {attempts} time(s); last: {last}")
