"""full_compose as parsed: finalize waits for every work task; tasks that rewrite compose content reopen it."""

from __future__ import annotations

from pathlib import Path

import pytest

from releng.core.settings import settings

ROOT = Path(__file__).resolve().parents[1]
# Every task that writes into the compose tree or into what finalize publishes from it.
REWRITERS = ("deploy_extra_files", "sync_repos", "make_kickstart_trees", "pull_unpack_tree", "build_dvd_iso",
             "pull_cloud_images")


@pytest.fixture
def dag(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RELENG_LORAX_BACKEND", "local")
    settings.cache_clear()
    bag = DagBag(dag_folder=str(ROOT / "dags" / "full_compose.py"))
    assert bag.import_errors == {}
    return bag.dags["full_compose"]


def test_finalize_is_directly_downstream_of_every_work_task(dag):
    finalize = dag.get_task("finalize_compose")
    assert finalize.trigger_rule == "all_done"
    work = set(dag.task_ids) - {"finalize_compose", "wait_for_staging", "sync_to_staging", "release_staging"}
    assert finalize.upstream_task_ids == work
    assert set(finalize.watched) == work  # the outcome check watches every work task
    # staging takes prepare_compose's summary as an input; it runs after finalize_compose, holding the lease
    assert dag.get_task("wait_for_staging").upstream_task_ids == {"finalize_compose"}
    assert dag.get_task("sync_to_staging").upstream_task_ids == {"wait_for_staging", "prepare_compose"}
    release = dag.get_task("release_staging")
    assert release.is_teardown and release.upstream_task_ids == {"sync_to_staging", "wait_for_staging"}


def test_tasks_that_rewrite_compose_content_reopen_a_finished_compose(dag):
    from releng.operators.compose import reopen_compose

    for task_id in REWRITERS:
        task = dag.get_task(task_id)
        hook = task.partial_kwargs.get("pre_execute") if hasattr(task, "partial_kwargs") else task._pre_execute_hook
        # bound to the compose prepare_compose claimed
        assert hook.func is reopen_compose and hook.keywords == {"prepare_task_id": "prepare_compose"}, task_id
    for task_id in ("prepare_compose", "repoclosure", "finalize_compose", "sync_to_staging"):
        task = dag.get_task(task_id)
        hook = task.partial_kwargs.get("pre_execute") if hasattr(task, "partial_kwargs") else task._pre_execute_hook
        assert hook is None, task_id
