"""
### Scheduled updates

Runs `general_updates` for every release on `RELENG_UPDATES_SCHEDULE` (cron, UTC; no catch-up, one run at a
time). Each release gets a run of its own, so one release failing stops nothing else.

1. **list_releases**: the releases in `RELENG_UPDATES_RELEASES` as listed, or (unset) every release profile in
   `RELENG_CONFIG_DIR`, newest first. It fails when `general_updates` is paused (the runs it starts would
   never run): unpause both DAGs for scheduled updates.
2. **trigger_updates**, one instance per release (the grid shows the release): starts `general_updates` with
   `{"release": <release>}` as run `scheduled_updates__<release>__<scheduled time>` and waits for its end in the
   triggerer, without holding a worker slot (the *Triggered DAG* link opens the run). The instance fails when
   that run fails, or when the release has no valid profile; the other releases' instances and runs go on,
   and this run ends failed. `general_updates` runs one run at a time, so the releases' runs queue.

A release's updates run again when its failed **trigger_updates** instance is cleared (the same
`general_updates` run, from the start). Triggering this DAG by hand runs the schedule's work now.
"""

from __future__ import annotations

from airflow.sdk import DAG, CronTriggerTimetable

from releng.core.releases import UPDATES_DAG
from releng.core.settings import settings
from releng.dagparams import default_args, scheduled_releases
from releng.notifiers import UpdatesFailedNotifier
from releng.operators.scheduled_updates import ListReleasesOperator, TriggerUpdatesOperator

SITE = settings()

with DAG(
    dag_id="scheduled_updates",
    description=f"general_updates of {', '.join(scheduled_releases())} at {SITE.updates_schedule} (cron, UTC)",
    # No start_date: with one, Airflow 3.3 schedules the latest past tick at once when the DAG is unpaused (a
    # second run beside a manual "unpause on trigger" one); without, the first run is the next tick.
    schedule=CronTriggerTimetable(SITE.updates_schedule, timezone="UTC", run_immediately=False),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["releng", "updates", "staging", "schedule"],
    # Release engineering hears of each failed instance (RELENG_NOTIFY_*); a failed notification fails nothing.
    default_args={**default_args(), "on_failure_callback": [UpdatesFailedNotifier()]},
):
    releases = ListReleasesOperator(task_id="list_releases", target_dag_id=UPDATES_DAG, retries=0)
    # A failed release's run is rerun by clearing its instance, not by a retry that reruns it unasked.
    TriggerUpdatesOperator.partial(
        task_id="trigger_updates", target_dag_id=UPDATES_DAG, map_index_template="{{ task.release }}", retries=0,
    ).expand_kwargs(releases.output)
