"""Compose parameters, plan, STATUS and the latest link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from releng.core.compose import finalize_compose, prepare_compose
from releng.core.compose import status as compose_status
from releng.core.compose.finalize_compose import compose_outcome
from releng.core.compose.prepare_compose import ComposeParamsError, plan_compose, validate_params
from releng.core.layout import ComposeLayout, LayoutError


def test_defaults_take_every_arch_and_buildable_iso(el9):
    p = validate_params(el9, {})
    assert p.arches == el9.arches and p.images == ("dvd",) and p.hashed and p.repoclosure and p.full_run and not p.rc


@pytest.mark.parametrize("raw,message", [
    ({"arches": ["x86_64", "sparc"]}, "arches sparc are not arches of el9"),
    ({"arches": ["i686"]}, "arches i686 are not arches of el9"),
    ({"arches": ["x86_64", "x86_64"]}, "lists an arch twice"),
    ({"extra_isos": ["netinst"]}, "extra ISO 'netinst' is not in el9's iso.images"),
    ({"extra_isos": ["BaseOS"]}, "extra ISO 'BaseOS' is a tree, not a disc image"),
    ({"extra_isos": ["minimal"]}, "extra ISO 'minimal' is marked isoskip"),
    ({"rc": True, "full_run": False}, "a release candidate must be a full run"),
    ({"rc": True, "repoclosure": False}, "a release candidate must pass repoclosure"),
])
def test_bad_combinations_are_refused(el9, raw, message):
    with pytest.raises(ComposeParamsError, match=message):
        validate_params(el9, raw)


def test_all_problems_in_one_message(el9):
    with pytest.raises(ComposeParamsError) as err:
        validate_params(el9, {"arches": ["sparc"], "extra_isos": ["nope"], "rc": True, "repoclosure": False})
    assert len(err.value.problems) == 3
    assert str(err.value).startswith("the parameters do not make a valid el9 compose:\n- arches sparc")


def test_plan_for_two_arches(el9):
    plan = plan_compose(el9, validate_params(el9, {"arches": ["x86_64", "aarch64"]}))
    assert {"repo": "all", "arch": "i686", "kind": "os", "primary": False} in plan.reposync
    assert {"repo": "BaseOS", "arch": "x86_64", "kind": "os", "primary": True} in plan.reposync
    assert {"repo": "BaseOS", "arch": "src", "kind": "source"} in plan.reposync
    assert {"repo": "BaseOS", "arch": "aarch64", "kind": "debug"} in plan.reposync
    assert not any(i["arch"] in ("ppc64le", "s390x") for i in plan.reposync)
    # 12 repos x 2 arches x (os, debug) + i686 for `all` (os, debug) + 12 source trees
    assert len(plan.reposync) == 12 * 2 * 2 + 2 + 12
    assert len(plan.repoclosure) == len(el9.repoclosure) * 2
    assert plan.lorax == [{"arch": "x86_64"}, {"arch": "aarch64"}]
    assert plan.dvd == [{"arch": "x86_64", "image": "dvd"}, {"arch": "aarch64", "image": "dvd"}]
    assert {"arch": "aarch64", "image_type": "GenericCloud"} in plan.cloud


def test_quick_plan_without_closure_or_isos(el9):
    plan = plan_compose(el9, validate_params(el9, {"arches": ["aarch64"], "full_run": False, "repoclosure": False,
                                                   "extra_isos": []}))
    assert {i["kind"] for i in plan.reposync} == {"os"}
    assert plan.repoclosure == plan.lorax == plan.dvd == plan.cloud == []


def test_status_and_latest_link(el9, tmp_path):
    first = ComposeLayout.new(el9, tmp_path, "20251123.143015")
    assert prepare_compose.start_compose(first) is None
    assert compose_status.read_status(first) == "STARTED"
    assert (first.metadata / "COMPOSE_ID").read_text() == "Rocky-9.7-20251123.143015"
    compose_status.write_status(first, "FINISHED")
    finalize_compose.move_latest_link(first)
    assert os.readlink(first.latest_link) == "Rocky-9.7-20251123.143015"
    second = ComposeLayout.new(el9, tmp_path, "20251124.010203")
    assert prepare_compose.start_compose(second) == first.top
    finalize_compose.move_latest_link(second)
    assert first.latest_link.resolve() == second.top
    assert not list(first.major_dir.glob(".*.tmp"))
    compose_status.write_status(second, "DOOMED")
    prepare_compose.start_compose(second)  # a cleared and rerun compose starts over
    assert compose_status.read_status(second) == "STARTED"
    with pytest.raises(ValueError, match="unknown compose status"):
        compose_status.write_status(second, "DONE")


def test_latest_link_that_is_a_directory_is_refused(el9, tmp_path):
    layout = ComposeLayout.new(el9, tmp_path, "20251123.143015")
    layout.latest_link.mkdir(parents=True)  # what empanadas' pull-unpack-tree left behind
    with pytest.raises(LayoutError, match="is not a symlink"):
        prepare_compose.start_compose(layout)
    with pytest.raises(LayoutError, match="is not a symlink"):
        finalize_compose.move_latest_link(layout)
    assert Path(layout.latest_link).is_dir()


def test_outcome():
    tasks = ["prepare_compose", "sync_repos", "repoclosure", "build_dvd_iso", "pull_cloud_images", "pull_cloud"]
    ok = {"prepare_compose": "success", "sync_repos_0": "success", "pull_cloud_images_3": "skipped"}
    assert compose_outcome(ok, ["pull_cloud_images"], tasks).status == "FINISHED"
    optional = {**ok, "pull_cloud_images_1": "failed"}
    outcome = compose_outcome(optional, ["pull_cloud_images"], tasks)
    assert (outcome.status, outcome.failed_optional) == ("FINISHED_INCOMPLETE", ("pull_cloud_images_1",))
    # a task whose id is a prefix of another is not mistaken for it
    assert compose_outcome({"pull_cloud_2": "failed"}, ["pull_cloud_images"], tasks).status == "DOOMED"
    doomed = {**optional, "repoclosure_2": "failed", "build_dvd_iso_0": "upstream_failed"}
    outcome = compose_outcome(doomed, ["pull_cloud_images"], tasks)
    assert outcome.status == "DOOMED" and outcome.failed_required == ("build_dvd_iso_0", "repoclosure_2")


def test_failable_deliverables_come_from_the_profile(el9):
    import dataclasses

    plan = plan_compose(el9, validate_params(el9, {"arches": ["x86_64", "aarch64"]}))
    tasks = {"pull_cloud_images": "cloud", "build_dvd_iso": "dvd"}
    keys = finalize_compose.failable_keys(el9, plan, tasks)
    assert keys == {f"pull_cloud_images_{i}" for i in range(len(plan.cloud))}  # el9: every cloud image, no DVD
    strict = dataclasses.replace(el9, cloud_images={**el9.cloud_images, "EC2": dataclasses.replace(
        el9.cloud_images["EC2"], failable=False)}, iso_images={**el9.iso_images, "dvd": dataclasses.replace(
        el9.iso_images["dvd"], failable=True)})
    keys = finalize_compose.failable_keys(strict, plan, tasks)
    ec2 = [i for i, item in enumerate(plan.cloud) if item["image_type"] == "EC2"]
    assert ec2 and not any(f"pull_cloud_images_{i}" in keys for i in ec2)
    assert {"build_dvd_iso_0", "build_dvd_iso_1"} <= keys
    states = {f"pull_cloud_images_{ec2[0]}": "failed", "build_dvd_iso_1": "failed"}
    outcome = compose_outcome(states, keys, tasks)
    assert outcome.status == "DOOMED" and outcome.failed_required == (f"pull_cloud_images_{ec2[0]}",)
    assert compose_outcome({"build_dvd_iso_1": "failed"}, keys, tasks).status == "FINISHED_INCOMPLETE"


@pytest.mark.parametrize("state", ["running", "queued", "scheduled", "deferred", "up_for_retry", "up_for_reschedule",
                                   "restarting", None])
def test_outcome_refuses_while_a_task_has_not_ended(state):
    tasks = ["sync_repos", "repoclosure"]
    states = {"sync_repos_0": "failed", "sync_repos_1": state, "repoclosure": "success"}
    with pytest.raises(finalize_compose.ComposeNotEnded, match=r"refusing to finalize: 1 work tasks have not ended: "
                                                      rf"sync_repos_1 \({state or 'not started'}\)") as err:
        compose_outcome(states, [], tasks)
    assert err.value.unfinished == [("sync_repos_1", state)]
    assert finalize_compose.missing_tasks({"sync_repos_3": "success"}, ["sync_repos", "repoclosure"]) == ["repoclosure"]


def test_outcome_reads_airflow_state_enums():
    from airflow.utils.state import TaskInstanceState

    assert compose_outcome({"a": TaskInstanceState.SUCCESS, "b": TaskInstanceState.REMOVED}, [], ["a", "b"]).status \
        == "FINISHED"
    assert compose_outcome({"a": TaskInstanceState.FAILED}, [], ["a"]).status == "DOOMED"
    with pytest.raises(finalize_compose.ComposeNotEnded):
        compose_outcome({"a": TaskInstanceState.UP_FOR_RETRY}, [], ["a"])


def test_each_run_claims_its_own_compose_and_finds_it_again(el9, tmp_path):
    first = prepare_compose.claim_compose(el9, tmp_path, "20261128.041500", "manual__a")
    second = prepare_compose.claim_compose(el9, tmp_path, "20261128.041500", "manual__b")
    assert (first.compose_id, second.compose_id) == ("Rocky-9.7-20261128.041500.0", "Rocky-9.7-20261128.041500.1")
    assert (first.respin, second.respin) == (0, 1)
    assert prepare_compose.compose_owner(first.top) == "manual__a"
    assert prepare_compose.compose_owner(second.top) == "manual__b"
    assert prepare_compose.claim_compose(el9, tmp_path, "20261128.041500", "manual__b") == second  # a rerun
    # a directory someone else made (or a claim whose owner was never written) is never taken
    (first.major_dir / "Rocky-9.7-20261128.041500.2").mkdir()
    third = prepare_compose.claim_compose(el9, tmp_path, "20261128.041500", "manual__c")
    assert third.compose_id == "Rocky-9.7-20261128.041500.3"
    other_second = prepare_compose.claim_compose(el9, tmp_path, "20261128.041501", "manual__a")
    assert other_second.compose_id == "Rocky-9.7-20261128.041501.0"  # another second starts over
    with pytest.raises(ValueError, match="cannot own a compose"):
        prepare_compose.claim_compose(el9, tmp_path, "20261128.041500", "")


def test_claims_racing_for_one_second_never_share_a_directory(el9, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        layouts = list(pool.map(lambda i: prepare_compose.claim_compose(el9, tmp_path, "20261128.041500", f"run-{i}"),
                                range(16)))
    assert len({layout.top for layout in layouts}) == 16
    assert all(prepare_compose.compose_owner(layout.top) == f"run-{i}" for i, layout in enumerate(layouts))


def test_reopen_only_a_finished_compose(el9, tmp_path):
    layout = prepare_compose.claim_compose(el9, tmp_path, "20261128.041500", "run")
    prepare_compose.start_compose(layout)
    assert compose_status.reopen(layout) is None and compose_status.read_status(layout) == "STARTED"
    compose_status.write_status(layout, "FINISHED_INCOMPLETE")
    assert compose_status.reopen(layout) == "FINISHED_INCOMPLETE" and compose_status.read_status(layout) == "STARTED"
    compose_status.write_status(layout, "DOOMED")
    assert compose_status.reopen(layout) is None and compose_status.read_status(layout) == "DOOMED"
