"""One scheduled_updates run with dag.test(), in a process of its own: ``python -m tests.updates.schedule_runner
<scheduled time>``.

dag.test() runs trigger_updates' deferral in this process: each instance starts its general_updates run, then
waits in the trigger until that run ends. Someone else runs those runs: the test process, as Airflow's
scheduler would, against the same metadata database (settings come from the environment).
"""

from __future__ import annotations

import sys

import pendulum

from tests.dagrun import parse_dag

# The triggerer looks at the started run's state this often (seconds); production polls less often.
POKE_SECONDS = 1


def main(scheduled_at: str) -> int:
    dag = parse_dag("scheduled_updates")
    dag.task_dict["trigger_updates"].partial_kwargs["poke_interval"] = POKE_SECONDS
    when = pendulum.parse(scheduled_at)
    dr = dag.test(logical_date=when, run_after=when)
    print(f"scheduled_updates run {dr.run_id} ended {dr.state}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
