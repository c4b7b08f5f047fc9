"""The staging lease in the DAGs (releng.core.staging.lease): wait_for_staging takes it, release_staging
(a teardown) gives it back, and every task that writes or promotes staging checks its run holds it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator, BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from releng.operators.common import site_settings

if TYPE_CHECKING:
    from releng.core.staging import lease

RUNNING_STATES = {"queued", "running"}


def run_of(context: Context) -> tuple[str, str]:
    """(dag_id, run_id) of the task's run."""
    return context["dag"].dag_id, context["run_id"]


def run_still_running(log: Callable[..., None]) -> Callable[[lease.Holder], bool]:
    """Asks Airflow whether a lease holder's run is still queued or running. A run Airflow no longer has is
    not; when Airflow cannot answer, the holder is assumed to be running (its lease is never taken)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    def still_running(holder: lease.Holder) -> bool:
        try:
            state = RuntimeTaskInstance.get_dagrun_state(holder.dag_id, holder.run_id)
        except Exception as exc:  # the API client raises different types by cause; the text says which
            if "not found" in str(exc).lower() or "404" in str(exc):
                return False
            log("cannot ask Airflow for the state of %s run %s (%s); treating it as running", holder.dag_id,
                holder.run_id, exc)
            return True
        return str(getattr(state, "value", state)) in RUNNING_STATES  # an enum, whose str() is "DagRunState.X"

    return still_running


def acquire(context: Context, purpose: str, log, staging_root: Path | None = None) -> lease.Attempt:
    """One try at the lease for this task's run; logs a take-over of a lease left by an ended run."""
    from releng.core.staging import lease
    dag_id, run_id = run_of(context)
    root = staging_root or site_settings().staging_root
    attempt = lease.try_acquire(root, lease.Holder(dag_id, run_id, purpose), run_still_running(log.warning))
    if attempt.took_over:
        log.warning("took over the staging lease from %s: that run is no longer running and did not release it",
                    attempt.took_over.describe())
    return attempt


def require_lease(context: Context, what: str, staging_root: Path | None = None) -> None:
    """Fail the task unless its run holds the staging lease (a task cleared by itself after the lease went)."""
    from releng.core.staging import lease
    dag_id, run_id = run_of(context)
    try:
        lease.require(staging_root or site_settings().staging_root, dag_id, run_id, what)
    except lease.LeaseError as exc:
        raise AirflowFailException(str(exc)) from None


def give_back(context: Context, log, staging_root: Path | None = None) -> None:
    """Release the staging lease if this task's run holds it, and log who holds it afterwards."""
    from releng.core.staging import lease
    dag_id, run_id = run_of(context)
    after = lease.release(staging_root or site_settings().staging_root, dag_id, run_id)
    if after is None:
        log.info("staging lease released; staging is free")
    else:
        log.info("this run did not hold the staging lease; %s holds it", after.describe())


class WaitForStagingSensor(BaseSensorOperator):
    """wait_for_staging: take the staging lease for this run, waiting while another run holds it (a promotion
    waiting for its approval, another run's staging steps). In ``reschedule`` mode the wait holds no worker
    slot; each poke logs who holds the lease. Fails after ``timeout`` (default 24 hours).

    :param purpose: what the run does with staging, shown to the runs that wait for it
    """

    template_fields = ("purpose",)
    ui_color = "#fff3d6"

    def __init__(self, *, purpose: str, **kwargs):
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 30)
        kwargs.setdefault("timeout", timedelta(hours=24))
        super().__init__(**kwargs)
        self.purpose = purpose

    def poke(self, context: Context) -> bool:
        attempt = acquire(context, self.purpose, self.log)
        if attempt.acquired:
            self.log.info("staging lease held by this run (%s)", attempt.holder.describe())
            return True
        self.log.info("staging is leased to %s; waiting", attempt.holder.describe())
        return False


class ReleaseStagingOperator(BaseOperator):
    """release_staging: give the staging lease back (a teardown: it runs when the run failed too)."""

    ui_color = "#fff3d6"

    def execute(self, context: Context) -> None:
        give_back(context, self.log)
