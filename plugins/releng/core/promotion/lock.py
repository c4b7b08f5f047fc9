"""The production tree's lock: writers hold an exclusive ``flock`` on ``<state>/promotion.lock``, readers a shared one.

The kernel drops the lock when its holder dies, and the rsync child inherits
it, so a killed task's orphaned rsync still excludes a rerun until it exits.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from releng.core.promotion.base import Log, PromotionError, quiet, utc_now
from releng.core.promotion.target import StateDir


@contextmanager
def production_lock(state: StateDir, *, exclusive: bool, holder: str, wait_seconds: float = 3600,
                    log: Log = quiet) -> Iterator[int]:
    """Hold the production tree's flock; yields the fd (pass it to children that write production)."""
    state.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(state.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline, next_note = time.monotonic() + wait_seconds, 0.0
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                owner = _lock_owner(state)
                if time.monotonic() >= deadline:
                    raise PromotionError(f"production tree is locked ({state.lock_file}) by {owner}; waited "
                                         f"{wait_seconds:.0f} s. Wait for that promotion to finish; a crashed "
                                         "holder releases the lock when its processes exit") from None
                if time.monotonic() >= next_note:
                    log(f"waiting for the production lock held by {owner}")
                    next_note = time.monotonic() + 60
                time.sleep(0.5)
        if exclusive:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"holder": holder, "pid": os.getpid(), "host": socket.gethostname(),
                                      "since": utc_now()}).encode(), 0)
        yield fd
    finally:
        os.close(fd)


def _lock_owner(state: StateDir) -> str:
    try:
        info = json.loads(state.lock_file.read_text() or "{}")
        return f"{info.get('holder')} (pid {info.get('pid')} on {info.get('host')} since {info.get('since')})"
    except (OSError, ValueError):
        return "another process"
