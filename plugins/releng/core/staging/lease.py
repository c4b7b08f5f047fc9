"""The staging lease: one holder at a time among the DAG runs that write or promote staging.

A writer of staging (full_compose's and general_updates' staging steps) and a
promotion (from its change report until its last phase) each span several
tasks, often on different workers, so an ``flock`` held by one process cannot
cover them. The lease is a small JSON file, ``<staging_root>/.releng/
staging-lease.json``, naming the DAG run that holds it; it is read and changed
only under an exclusive ``flock`` on ``<staging_root>/.releng/staging.lock``,
so two runs never both take it. Every task of the holding run may use staging;
a task of another run waits, and its log says who holds the lease.

A lease is released by its run's last task (a teardown, so it runs after a
failure too). If a run ended without releasing it (its worker was killed, the
run was marked failed by hand), the next run that asks finds the holder's run
no longer running (the caller says how, e.g. through Airflow's run state) and
takes the lease over, saying so in its log. ``.releng`` is outside ``mirror/``:
mirrors and web clients never see it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from releng.core.fs import atomic_write
from releng.core.modes import FILE_MODE, public_dirs

LEASE_FILE = "staging-lease.json"
LOCK_FILE = "staging.lock"


class LeaseError(RuntimeError):
    """Staging is leased to another run, or this run does not hold the lease it needs."""


@dataclass(frozen=True)
class Holder:
    """A DAG run that holds (or asks for) the lease, and why."""

    dag_id: str
    run_id: str
    purpose: str = ""
    since: str = ""
    host: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.dag_id, self.run_id)

    def describe(self) -> str:
        what = f" ({self.purpose})" if self.purpose else ""
        where = f" on {self.host}" if self.host else ""
        return f"{self.dag_id} run {self.run_id}{what}, since {self.since or '?'}{where}"

    def to_json(self) -> dict:
        return {"dag_id": self.dag_id, "run_id": self.run_id, "purpose": self.purpose, "since": self.since,
                "host": self.host}

    @classmethod
    def from_json(cls, data: dict) -> Holder:
        return cls(str(data["dag_id"]), str(data["run_id"]), str(data.get("purpose", "")),
                   str(data.get("since", "")), str(data.get("host", "")))


def state_dir(staging_root: Path) -> Path:
    """``<staging_root>/.releng``: staging state that mirrors never see."""
    return Path(staging_root) / ".releng"


@contextmanager
def _locked(staging_root: Path) -> Iterator[Path]:
    """The lease file's path, with the exclusive flock that guards it held (a few milliseconds at a time)."""
    directory = public_dirs(state_dir(staging_root))  # readable like the rest of staging: who holds it is no secret
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory / LEASE_FILE
    finally:
        os.close(fd)


def _read(path: Path) -> Holder | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return Holder.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise LeaseError(f"{path} is not a staging lease ({exc}); if no run is writing or promoting staging, "
                         "delete the file") from None


def current_holder(staging_root: Path) -> Holder | None:
    """Who holds the lease now (None: nobody)."""
    with _locked(staging_root) as path:
        return _read(path)


@dataclass(frozen=True)
class Attempt:
    """The outcome of :func:`try_acquire`: ``acquired`` by the asker, else ``holder`` holds it."""

    acquired: bool
    holder: Holder
    took_over: Holder | None = None  # a lease left by a run that is no longer running


def try_acquire(staging_root: Path, asker: Holder, still_running: Callable[[Holder], bool]) -> Attempt:
    """Take the lease for ``asker``'s run if nobody holds it, its run already does, or the holder's run is no
    longer running (``still_running`` says; it is asked only about other runs). Never waits."""
    with _locked(staging_root) as path:
        holder = _read(path)
        if holder is not None and holder.key == asker.key:
            return Attempt(True, holder)
        stale = None
        if holder is not None:
            if still_running(holder):
                return Attempt(False, holder)
            stale = holder
        mine = Holder(asker.dag_id, asker.run_id, asker.purpose,
                      datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), socket.gethostname())
        atomic_write(path, json.dumps(mine.to_json(), indent=1) + "\n")
        return Attempt(True, mine, stale)


def require(staging_root: Path, dag_id: str, run_id: str, what: str) -> Holder:
    """The lease, which ``dag_id`` run ``run_id`` must hold for ``what``; LeaseError otherwise."""
    holder = current_holder(staging_root)
    if holder is None or holder.key != (dag_id, run_id):
        who = holder.describe() if holder else "nobody"
        raise LeaseError(f"{what} needs the staging lease for {dag_id} run {run_id}, but it is held by {who} "
                         f"({state_dir(staging_root) / LEASE_FILE}). Clear this run's lease task "
                         "(wait_for_staging, or change_report for a promotion) so that it asks for the lease again")
    return holder


def release(staging_root: Path, dag_id: str, run_id: str) -> Holder | None:
    """Give the lease back if ``dag_id`` run ``run_id`` holds it; returns who holds it afterwards."""
    with _locked(staging_root) as path:
        holder = _read(path)
        if holder is not None and holder.key == (dag_id, run_id):
            path.unlink()
            return None
        return holder
