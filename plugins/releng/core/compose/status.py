"""A compose's STATUS file: STARTED -> FINISHED | FINISHED_INCOMPLETE | DOOMED (Pungi's words),
back to STARTED when a task rewrites a finished compose."""

from __future__ import annotations

from releng.core.fs import atomic_write
from releng.core.layout import STATUSES, ComposeLayout

FINISHED_STATUSES = frozenset({"FINISHED", "FINISHED_INCOMPLETE"})


def write_status(layout: ComposeLayout, status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown compose status {status!r}; one of {', '.join(STATUSES)}")
    atomic_write(layout.status_file, status + "\n")


def read_status(layout: ComposeLayout) -> str | None:
    try:
        return layout.status_file.read_text().strip() or None
    except FileNotFoundError:
        return None


def reopen(layout: ComposeLayout) -> str | None:
    """Before rewriting a finished compose: STATUS back to STARTED. Returns the status it had when it changed.

    A STARTED or DOOMED compose is left as it is; finalizing decides the status again.
    """
    status = read_status(layout)
    if status in FINISHED_STATUSES:
        write_status(layout, "STARTED")
        return status
    return None
