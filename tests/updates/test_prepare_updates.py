"""releng.core.updates.prepare_updates and remove_work_area: parameters, plan, the closure view, work areas."""

from __future__ import annotations

import os

import pytest

from releng.core.updates import UpdatesError
from releng.core.updates.prepare_updates import (
    UpdatesParams,
    closure_view,
    plan_updates,
    updates_layout,
    validate_params,
)
from releng.core.updates.remove_work_area import work_areas

# --- parameters and plan -------------------------------------------------------------------------


def test_no_repos_means_every_repo_in_profile_order(el9):
    assert validate_params(el9, {"repos": []}).repos == el9.repo_ids
    assert validate_params(el9, {"repos": ["AppStream", "BaseOS"], "rc": True}) == \
        UpdatesParams(("BaseOS", "AppStream"), True)


def test_unknown_and_repeated_repos_are_named(el9):
    with pytest.raises(UpdatesError) as err:
        validate_params(el9, {"repos": ["PowerTools", "BaseOS", "BaseOS"]})
    assert "'PowerTools' are not repos of el9" in str(err.value) and "twice" in str(err.value)


def test_plan_syncs_every_tree_and_checks_closure_against_the_right_trees(el9):
    plan = plan_updates(el9, UpdatesParams(("AppStream",), False))
    assert {(t["arch"], t["kind"]) for t in plan.trees} == \
        {(a, k) for a in el9.arches for k in ("os", "debug")} | {("src", "source")}
    assert plan.repoclosure == [{"repo": "AppStream", "arch": a} for a in el9.arches]
    assert plan.closure_repos == {**{("AppStream", a): True for a in el9.arches},
                                  **{("BaseOS", a): False for a in el9.arches}}
    extras = plan_updates(el9, UpdatesParams(("extras",), False))
    assert extras.repoclosure == [] and extras.closure_repos == {}


def test_plan_covers_only_the_trees_staging_has(el9):
    """A compose of x86_64 alone staged BaseOS and AppStream for x86_64: updates never add another arch."""
    staged = {(r, "x86_64", k) for r in ("BaseOS", "AppStream") for k in ("os", "debug")} | \
        {("BaseOS", "src", "source")}
    plan = plan_updates(el9, UpdatesParams(("BaseOS", "AppStream"), False), staged)
    assert {(t["repo"], t["arch"], t["kind"]) for t in plan.trees} == staged
    assert plan.repoclosure == [{"repo": r, "arch": "x86_64"} for r in ("BaseOS", "AppStream")]
    assert plan.closure_repos == {("BaseOS", "x86_64"): True, ("AppStream", "x86_64"): True}
    # AppStream alone: its closure reads staging's BaseOS, on the staged arch only
    alone = plan_updates(el9, UpdatesParams(("AppStream",), False), staged)
    assert alone.closure_repos == {("AppStream", "x86_64"): True, ("BaseOS", "x86_64"): False}


def test_closure_view_links_updated_repos_to_the_run_and_others_to_staging(el9, tmp_path):
    layout = updates_layout(el9, tmp_path / "compose", "20250101.030000")
    assert layout.top == tmp_path / "compose" / "9" / "Rocky-9.7-updates-20250101.030000"
    staging = tmp_path / "staging"
    plan = plan_updates(el9, UpdatesParams(("AppStream",), False))
    with pytest.raises(UpdatesError) as err:
        closure_view(layout, staging, plan)
    assert "BaseOS x86_64" in str(err.value) and "Add them to `repos`" in str(err.value)
    assert not layout.top.exists()  # nothing laid out for a run that cannot close
    for arch in el9.arches:
        (staging / "BaseOS" / arch / "os" / "repodata").mkdir(parents=True)
        (staging / "BaseOS" / arch / "os" / "repodata" / "repomd.xml").write_text("<repomd/>")
    view = closure_view(layout, staging, plan)
    assert (view / "BaseOS" / "aarch64" / "os").resolve() == staging / "BaseOS" / "aarch64" / "os"
    assert os.readlink(view / "AppStream" / "x86_64" / "os") == str(layout.repo_tree("AppStream", "x86_64"))


def test_work_areas_are_the_release_s_only(el9, tmp_path):
    for name in ("Rocky-9.7-updates-20250101.030000", "Rocky-9.7-updates-20250102.030000",
                 "Rocky-9.7-20250101.030000", "Rocky-9.6-updates-20250101.030000"):
        (tmp_path / "9" / name).mkdir(parents=True)
    assert [p.name for p in work_areas(el9, tmp_path)] == [
        "Rocky-9.7-updates-20250101.030000", "Rocky-9.7-updates-20250102.030000"]
