"""Task contexts of a run that holds the staging lease, for tests that call a staging task's execute()
directly (outside a DAG run, where wait_for_staging or change_report would have taken it)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from releng.core.staging import lease


def holding_staging(staging_root: Path, dag_id: str = "full_compose", run_id: str = "test-run", **context) -> dict:
    """Take the staging lease for ``dag_id`` run ``run_id`` and return a task context of that run."""
    attempt = lease.try_acquire(Path(staging_root), lease.Holder(dag_id, run_id, "test"), lambda _holder: True)
    assert attempt.acquired, f"staging is leased to {attempt.holder.describe()}"
    return {"dag": SimpleNamespace(dag_id=dag_id), "run_id": run_id, **context}


def end_run(staging_root: Path, dag_id: str, run_id: str) -> None:
    """What the run's last task does: give the staging lease back."""
    lease.release(Path(staging_root), dag_id, run_id)
