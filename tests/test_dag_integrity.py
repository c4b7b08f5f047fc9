"""DAG integrity: no import errors or cycles, pools exist, every DAG documented, tagged and owned, mapped tasks
name their instances, triggered DAGs exist, no DAG catches up.

The same checks run against a deliberately broken DAG folder, so each one is shown to catch its problem.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POOLS = json.loads((ROOT / "config" / "pools.json").read_text())


def integrity_problems(dag_folder: Path) -> list[str]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dag_folder))
    problems = [f"{Path(f).name}: import error: {err.strip().splitlines()[-1]}" for f, err in bag.import_errors.items()]
    known_pools = set(POOLS) | {"default_pool"}
    for dag_id, dag in sorted(bag.dags.items()):
        if not (dag.doc_md or "").strip():
            problems.append(f"{dag_id}: no doc_md")
        if not dag.tags:
            problems.append(f"{dag_id}: no tags")
        elif "releng" not in dag.tags:
            problems.append(f"{dag_id}: no releng tag (the list's tag filter finds every DAG of the project by it)")
        if not (dag.description or "").strip():
            problems.append(f"{dag_id}: no description (the DAG list shows it)")
        for task in dag.tasks:
            if task.owner in ("", "airflow"):
                problems.append(f"{dag_id}.{task.task_id}: no owner (set default_args['owner'])")
            if task.pool not in known_pools:
                problems.append(f"{dag_id}.{task.task_id}: pool {task.pool!r} is not in config/pools.json")
            kwargs = task.partial_kwargs if task.is_mapped else {}
            if task.is_mapped and not kwargs.get("map_index_template"):
                problems.append(f"{dag_id}.{task.task_id}: mapped without map_index_template (the UI would show "
                                "bare indexes, not what each instance works on)")
            target = kwargs.get("trigger_dag_id", kwargs.get("target_dag_id", getattr(task, "trigger_dag_id", None)))
            if target is not None and target not in bag.dags:
                problems.append(f"{dag_id}.{task.task_id}: triggers {target!r}, which is not a DAG of the folder")
        if dag.catchup:
            problems.append(f"{dag_id}: catchup on (a paused or new scheduled DAG would run every missed interval)")
    return problems


def test_project_dags_are_sound():
    assert integrity_problems(ROOT / "dags") == []


def test_pools_file_is_valid():
    for name, spec in POOLS.items():
        assert isinstance(spec["slots"], int) and spec["slots"] >= 1, name
        assert spec["description"] and spec["include_deferred"] is False


def test_checks_catch_each_problem(tmp_path):
    (tmp_path / "sloppy.py").write_text(textwrap.dedent('''
        import pendulum
        from airflow.sdk import DAG
        from airflow.providers.standard.operators.empty import EmptyOperator

        with DAG("sloppy", schedule=None, start_date=pendulum.datetime(2025, 1, 1)):
            EmptyOperator(task_id="a", pool="no_such_pool")
        '''))
    (tmp_path / "cycle.py").write_text(textwrap.dedent('''
        import pendulum
        from airflow.sdk import DAG
        from airflow.providers.standard.operators.empty import EmptyOperator

        with DAG("cycle", schedule=None, start_date=pendulum.datetime(2025, 1, 1), doc_md="x", tags=["t"],
                 default_args={"owner": "release-eng"}):
            a = EmptyOperator(task_id="a")
            b = EmptyOperator(task_id="b")
            a >> b >> a
        '''))
    (tmp_path / "fanout.py").write_text(textwrap.dedent('''
        import pendulum
        from airflow.sdk import DAG
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

        with DAG("fanout", schedule="0 3 * * *", catchup=True, start_date=pendulum.datetime(2025, 1, 1),
                 doc_md="x", tags=["t"], default_args={"owner": "release-eng"}):
            BashOperator.partial(task_id="each").expand(bash_command=["true", "false"])
            TriggerDagRunOperator(task_id="start", trigger_dag_id="no_such_dag")
        '''))
    (tmp_path / "broken.py").write_text("from airflow.sdk import DAG\nraise RuntimeError('boom')\n")
    problems = integrity_problems(tmp_path)
    assert "sloppy: no doc_md" in problems
    assert "sloppy: no tags" in problems and "sloppy: no description (the DAG list shows it)" in problems
    assert "fanout: no releng tag (the list's tag filter finds every DAG of the project by it)" in problems
    assert "sloppy.a: no owner (set default_args['owner'])" in problems
    assert "sloppy.a: pool 'no_such_pool' is not in config/pools.json" in problems
    assert any(p.startswith("cycle.py: import error:") and "Cycle" in p for p in problems)
    assert "broken.py: import error: RuntimeError: boom" in problems
    assert "fanout.each: mapped without map_index_template (the UI would show bare indexes, not what each " \
           "instance works on)" in problems
    assert "fanout.start: triggers 'no_such_dag', which is not a DAG of the folder" in problems
    assert "fanout: catchup on (a paused or new scheduled DAG would run every missed interval)" in problems


def test_plugin_manager_does_not_import_the_package_by_file_name():
    """Without plugins/.airflowignore Airflow imports releng/core/profile.py as the top-level module `profile`."""
    from airflow._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory

    plugins, errors = _load_plugins_from_plugin_directory(str(ROOT / "plugins"))
    assert plugins == [] and errors == {}
    hijacked = [name for name in ("profile", "dnf", "settings", "__main__", "arches")
                if str(ROOT / "plugins") in (getattr(sys.modules.get(name), "__file__", None) or "")]
    assert hijacked == []
