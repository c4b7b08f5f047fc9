"""The promotion audit log: ``<state>/promotion-log.jsonl``, one JSON line per entry, O_APPEND and fsync'd."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from releng.core import fs
from releng.core.promotion.target import StateDir


def append_audit(state: StateDir, entry: Mapping) -> bool:
    """Append one JSON line to the promotion log, fsync'd; False when the same entry (run, digest, event,
    task and outcome) is already there, so a rerun teardown does not log twice."""
    state.root.mkdir(parents=True, exist_ok=True)

    def key_of(e: Mapping) -> tuple:
        return tuple(e.get(k) for k in ("run_id", "digest", "event", "task_id", "outcome"))

    key = key_of(entry)
    if state.log_file.exists():
        with open(state.log_file, encoding="utf-8") as f:
            for line in f:
                try:
                    old = json.loads(line)
                except ValueError:
                    continue
                if key_of(old) == key:
                    return False
    line = json.dumps(entry, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    fd = os.open(state.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    fs.fsync_dir(state.root)
    return True
