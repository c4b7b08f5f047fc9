"""The run's vetting files that the gate and the audit read: where they are, the verdict's states and summary.

Kept apart from :mod:`releng.core.promotion.vetting` (which runs the checks) so the approval gate's audit can
read a verdict without importing the checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from releng.core.promotion.base import PromotionError, slug
from releng.core.promotion.target import StateDir

PASSED, FAILED, SKIPPED, NOT_RUN, OVERRIDDEN = "passed", "failed", "skipped", "not run", "overridden"


def run_dir(state: StateDir, run_id: str) -> Path:
    return state.root / "vetting" / slug(run_id)


def verdict_file(state: StateDir, run_id: str) -> Path:
    return run_dir(state, run_id) / "verdict.json"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PromotionError(f"cannot read the vetting file {path} ({exc}); clear change_report to vet again") \
            from None


def load_verdict(state: StateDir, run_id: str, digest: str) -> dict | None:
    """The run's verdict for the report ``digest``, or None."""
    verdict = read_json(verdict_file(state, run_id))
    return verdict if verdict and verdict.get("digest") == digest else None


def summary(verdict: Mapping | None) -> dict | None:
    """The verdict in an audit entry: status, failed checks, override."""
    if verdict is None:
        return None
    return {"status": verdict["status"], "failed": list(verdict["failed"]), "override": verdict["override"],
            "checks": verdict["checks"]}
