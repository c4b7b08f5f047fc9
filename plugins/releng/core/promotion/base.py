"""What every promotion module shares: the error class, the log callable, timestamps and state file names."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime

Log = Callable[[str], None]


class PromotionError(RuntimeError):
    """A promotion cannot go on; the message says what is wrong and what to do."""


def quiet(_msg: str) -> None:
    pass


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def slug(value: str) -> str:
    """A file name for any run id or path: safe characters plus a short hash, so distinct values stay distinct."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._") or "x"
    return f"{safe[:80]}-{hashlib.sha1(value.encode()).hexdigest()[:8]}"
