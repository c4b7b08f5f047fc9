"""scheduled_updates for real: a scheduled run starts one general_updates run per listed release, each a run of
its own, so a release that fails stops no other, and the others' updates reach staging.

The scheduled run runs with dag.test() in a process of its own (tests/updates/schedule_runner.py): its
trigger_updates instances start general_updates runs and wait, in the trigger, for their end. This process runs
those runs as Airflow's scheduler would, from the metadata database the two share, with real dnf, createrepo_c,
rsync and gpg against the updates_site fixture's build system and staging.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pendulum
import pytest

from dev import buildsystem
from releng.core.repo.primary import iter_packages
from releng.core.settings import settings
from tests.dagrun import parse_dag, resume_run
from tests.updates.test_general_updates_dag import ARCHES, _asset_events, updates_site  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.stack]
# A run that never ends must not hang the suite: the test fails after this, saying what it waited for.
GIVE_UP_SECONDS = 900


def _sync_dags() -> None:
    """Write every DAG of the checkout to the metadata database, as dag.test() and the dag-processor do."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    settings.cache_clear()
    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        assert bag.import_errors == {}
        sync_bag_to_db(bag, bundle.name, bundle.version)


def _set_paused(dag_id: str, paused: bool) -> None:
    """The UI's pause toggle."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        assert session.query(DagModel).filter(DagModel.dag_id == dag_id).update({"is_paused": paused}) == 1


def _runs(dag_id: str, prefix: str = "") -> dict[str, tuple]:
    """{run id: (conf, state, run type)} of the DAG's runs whose id starts with ``prefix``."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return {r.run_id: (dict(r.conf or {}), str(r.state), str(r.run_type))
                for r in session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id.startswith(prefix))}


def _task_states(dag_id: str, run_id: str) -> dict[str, str]:
    """{task id, or task id[rendered map index] for a mapped task: state} of one run."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index}]": str(ti.state)
                for ti in tis}


def _queued(dag_id: str, prefix: str) -> list[str]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.state == DagRunState.QUEUED,
                                            DagRun.run_id.startswith(prefix))
        return sorted(r.run_id for r in runs)


def _start(dag_id: str, run_id: str) -> None:
    """What the scheduler does to a queued run it starts: running, with a start date."""
    from airflow.models.dagrun import DagRun
    from airflow.sdk import timezone
    from airflow.utils.session import create_session

    with create_session() as session:
        dr = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).one()
        dr.start_date = timezone.utcnow()


def _run_started_runs(proc: subprocess.Popen, log: Path) -> list[str]:
    """Run every general_updates run the scheduled run starts, one at a time (the DAG's max_active_runs), until
    the scheduled run's process ends; the run ids in the order they ran. (Other tests' runs share the database.)"""
    dag = parse_dag("general_updates")
    ran: list[str] = []
    give_up = time.monotonic() + GIVE_UP_SECONDS
    while True:
        ended = proc.poll() is not None
        for run_id in _queued("general_updates", "scheduled_updates__"):
            _start("general_updates", run_id)
            resume_run(dag, run_id)
            ran.append(run_id)
        if ended:
            return ran
        if time.monotonic() > give_up:
            proc.kill()
            proc.wait()
            pytest.fail(f"the scheduled_updates run did not end within {GIVE_UP_SECONDS} s after running {ran}; "
                        f"its log:\n{log.read_text()}")
        time.sleep(0.5)


def test_a_paused_general_updates_fails_the_schedule_at_once_saying_what_to_do(airflow_db, capfd):
    """The runs would wait for ever: list_releases fails instead, and nothing is started."""
    _sync_dags()
    _set_paused("general_updates", True)
    when = pendulum.datetime(2026, 3, 1, 3, tz="UTC")
    dr = parse_dag("scheduled_updates").test(logical_date=when, run_after=when)
    assert dr.state == "failed"
    assert _task_states("scheduled_updates", dr.run_id) == {"list_releases": "failed",
                                                            "trigger_updates": "upstream_failed"}
    assert ("general_updates is paused, so the runs this task would start for el10, el9, el8 would never run; "
            "unpause general_updates (its toggle in the UI, or `airflow dags unpause general_updates`), then clear "
            "this task") in capfd.readouterr().out
    assert _runs("general_updates", f"scheduled_updates__el9__{when.isoformat()}") == {}


def test_a_scheduled_run_updates_every_listed_release_and_a_failing_one_stops_no_other(
        airflow_db, updates_site, el9, tmp_path, monkeypatch, capfd):  # noqa: F811 (the fixture imported above)
    """el10, el9 and el11 are listed (el8 is a profile too, but not listed). el10 has nothing in staging, so its
    run fails in prepare_updates; el11 has no profile, so its instance fails before starting a run; el9's run
    still runs and its new build reaches staging. The grid shows each release's instance and state."""
    site = updates_site
    for name in ("el8", "el10"):
        shutil.copy(ROOT / "config" / "releases" / f"{name}.yaml", site.config_dir)
    monkeypatch.setenv("RELENG_UPDATES_RELEASES", "el10,el9,el11")
    buildsystem.publish_update(site.buildsystem, el9, "AppStream", "foo-app", "2.1", "4")
    _sync_dags()
    _set_paused("general_updates", False)

    when = "2026-03-02T03:00:00+00:00"
    log = tmp_path / "scheduled_updates.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.updates.schedule_runner", when], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        ran = _run_started_runs(proc, log)
    runner = log.read_text()
    assert proc.returncode == 0, runner

    el10, el9_run = f"scheduled_updates__el10__{when}", f"scheduled_updates__el9__{when}"
    assert sorted(ran) == [el10, el9_run]  # one run per listed release that has a profile; none for el8
    assert _runs("general_updates", "scheduled_updates__") == {
        el10: ({"release": "el10"}, "failed", "operator_triggered"),
        el9_run: ({"release": "el9"}, "success", "operator_triggered")}
    el10_states = _task_states("general_updates", el10)
    assert el10_states["prepare_updates"] == "failed" and "success" not in el10_states.values()
    el9_states = _task_states("general_updates", el9_run)
    assert el9_states["emit_staging_asset"] == "success" and el9_states["remove_work_area"] == "success"

    # The scheduled run: one trigger_updates instance per release, named after it; it failed, for two releases.
    ((schedule_run, (_, schedule_state, _)),) = _runs("scheduled_updates", "manual__2026-03-02").items()
    assert schedule_state == "failed"
    assert _task_states("scheduled_updates", schedule_run) == {
        "list_releases": "success", "trigger_updates[el10]": "failed", "trigger_updates[el9]": "success",
        "trigger_updates[el11]": "failed"}
    assert ("RELENG_UPDATES_RELEASES names 'el11', which is not a release profile in RELENG_CONFIG_DIR="
            f"'{site.config_dir}' (profiles: el10, el8, el9); add el11.yaml there, or remove el11 from "
            "RELENG_UPDATES_RELEASES") in runner
    assert (f"general_updates run {el10} for el10 failed; its failed tasks' logs say why (the Triggered DAG link). "
            "Fix the cause, then clear this task to run el10's updates again") in runner
    assert "staging release directory" in capfd.readouterr().out  # el10's prepare_updates says why

    # el9's update reached staging, for every arch, and asked for its promotion.
    for arch in ARCHES:
        assert f"foo-app-0:2.1-4.el9.{arch}" in {p.nevra for p in iter_packages(site.tree("AppStream", arch))}
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        dr = session.query(DagRun).filter(DagRun.dag_id == "general_updates", DagRun.run_id == el9_run).one()
        # the runs list of general_updates says which release each run updates and who started it
        assert dr.note == f"el9: started by scheduled_updates run {schedule_run}"
        assert [e["release"] for e in _asset_events(dr)] == ["el9"]
