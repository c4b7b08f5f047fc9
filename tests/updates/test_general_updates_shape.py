"""general_updates as parsed: no schedule of its own, one run at a time, params, order, pools, outlet."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest

from releng.assets import STAGING_ASSET
from releng.core.settings import settings

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["prepare_updates", "sync_repos", "repoclosure", "wait_for_staging", "sync_to_staging", "update_repodata",
         "emit_staging_asset", "remove_work_area"]


@pytest.fixture
def dag(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RELENG_UPDATES_SCHEDULE", "30 4 * * 1")
    settings.cache_clear()
    bag = DagBag(dag_folder=str(ROOT / "dags" / "general_updates.py"))
    assert bag.import_errors == {}
    return bag.dags["general_updates"]  # get_dag() would ask the metadata database


def test_no_schedule_of_its_own_one_run_at_a_time(dag):
    """scheduled_updates starts a run per release on RELENG_UPDATES_SCHEDULE; a schedule here would update only
    the release param's default."""
    from airflow.sdk.definitions.timetables.simple import NullTimetable

    assert isinstance(dag.timetable, NullTimetable)
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.owner == "release-eng" and dag.tags and "createrepo_c --update" in dag.doc_md


def test_params(dag):
    from airflow.sdk.exceptions import ParamValidationError

    params = dag.params
    assert params["repos"] is None and params["rc"] is False and params["release"] == "el10"  # None: all
    releases = set(params.get_param("release").schema["enum"])
    assert releases == {"el10", "el8", "el9-beta", "el9-sig-cloud", "el9", "el9lh"}
    for bad in ({"repos": ["../BaseOS"]}, {"repos": ["BaseOS", "BaseOS"]}, {"repos": ["NoSuchRepo"]},
                {"release": "el7"}, {"rc": "yes"}):
        trial = copy.deepcopy(params)
        with pytest.raises(ParamValidationError):
            trial.update(bad)
            trial.validate()
    ok = copy.deepcopy(params)
    ok.update({"release": "el9", "repos": ["BaseOS", "AppStream"], "rc": True})
    ok.validate()


def test_order_pools_and_outlet(dag):
    for before, after in itertools.pairwise(ORDER):
        assert before in dag.get_task(after).get_flat_relative_ids(upstream=True), (before, after)
    assert dag.get_task("sync_repos").pool == "reposync"
    assert dag.get_task("sync_to_staging").pool == "rsync" and dag.get_task("update_repodata").pool == "repodata"
    assert list(dag.get_task("emit_staging_asset").outlets) == [STAGING_ASSET]
    assert {t.task_id for t in dag.tasks} == {*ORDER, "plan.reposync", "plan.repoclosure", "plan.repodata",
                                              "release_staging"}
    # the staging lease: taken before the first staging write, given back by a teardown after the asset event
    release = dag.get_task("release_staging")
    assert release.is_teardown and dag.get_task("wait_for_staging").is_setup
    assert {"emit_staging_asset", "wait_for_staging"} <= release.upstream_task_ids
    assert dag.get_task("wait_for_staging").mode == "reschedule"
