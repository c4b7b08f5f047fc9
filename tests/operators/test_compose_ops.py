"""prepare_compose, finalize_compose, sync_to_staging and the reopen hook without a DAG run."""

from __future__ import annotations

import json
import subprocess
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import productmd.rpms
import pytest
from airflow.sdk.exceptions import AirflowFailException

from releng.core.compose import finalize_compose
from releng.core.compose import status as compose_status
from releng.core.layout import ComposeLayout
from releng.operators.compose import (
    FinalizeComposeOperator,
    PrepareComposeOperator,
    SyncToStagingOperator,
    layout_of,
)
from tests.leases import holding_staging
from tests.notifytargets import smtp_server, webhook  # noqa: F401  (fixtures)

RUN_AFTER = datetime(2026, 11, 28, 4, 15, 0, tzinfo=UTC)
WATCHED = ("prepare_compose", "sync_repos", "repoclosure", "build_dvd_iso", "pull_cloud_images")
QUICK = {"release": "el9", "arches": ["x86_64"], "full_run": False, "extra_isos": []}


class _TI:
    """The two calls the compose operators make on their task instance."""

    def __init__(self, summary: dict | None, states: dict | None = None):
        self.summary, self.states = summary, states or {}

    def xcom_pull(self, task_ids):
        assert task_ids == "prepare_compose"
        return self.summary

    def get_task_states(self, dag_id, run_ids, task_ids):
        return {run_ids[0]: dict(self.states)}


@pytest.fixture
def roots(tmp_path, monkeypatch):
    for name in ("COMPOSE", "STAGING", "PRODUCTION"):
        monkeypatch.setenv(f"RELENG_{name}_ROOT", str(tmp_path / name.lower()))
    return tmp_path


def _prepare(run_id: str, params: dict = QUICK) -> dict:
    context = {"params": params, "dag_run": SimpleNamespace(run_after=RUN_AFTER, run_id=run_id)}
    return PrepareComposeOperator(task_id="prepare_compose").execute(context)


def _finalize(summary: dict, states: dict, run_id: str = "run-1") -> dict:
    op = FinalizeComposeOperator(task_id="finalize_compose", summary=summary, watched=WATCHED,
                                 deliverables={"pull_cloud_images": "cloud", "build_dvd_iso": "dvd"})
    return op.execute({"ti": _TI(summary, states), "dag_run": SimpleNamespace(run_id=run_id)})


# --- compose ids: unique per run, a rerun keeps its own directory (finding 6) --------------------------------


def test_two_runs_started_in_the_same_second_get_distinct_composes(roots):
    first = _prepare("manual__first")
    second = _prepare("manual__second")
    assert first["compose_id"] == "Rocky-9.7-20261128.041500.0"
    assert second["compose_id"] == "Rocky-9.7-20261128.041500.1"
    assert first["top"] != second["top"]
    assert (Path(first["top"]) / "RUN_ID").read_text().strip() == "manual__first"
    assert (Path(second["top"]) / "RUN_ID").read_text().strip() == "manual__second"


def test_a_rerun_of_a_run_reuses_its_own_compose(roots):
    first = _prepare("manual__first")
    _prepare("manual__second")
    again = _prepare("manual__first")
    assert again["compose_id"] == first["compose_id"] and again["top"] == first["top"]
    assert sorted(p.name for p in (roots / "compose" / "9").iterdir()) == [
        "Rocky-9.7-20261128.041500.0", "Rocky-9.7-20261128.041500.1"]


def test_a_finished_compose_is_never_rewritten_by_another_run(roots):
    first = _prepare("manual__first")
    layout = layout_of(first)
    compose_status.write_status(layout, "FINISHED")
    finalize_compose.move_latest_link(layout)
    marker = layout.compose / "BaseOS" / "x86_64" / "os" / "marker"
    marker.parent.mkdir(parents=True)
    marker.write_text("first")
    second = _prepare("manual__second")
    assert second["top"] != first["top"] and second["previous"] == first["top"]
    assert compose_status.read_status(layout) == "FINISHED"
    assert layout.latest_link.resolve() == layout.top
    assert marker.read_text() == "first"


# --- finalize only on ended work (finding 2) -------------------------------------------------------------------


@pytest.fixture
def started(roots):
    """A STARTED compose whose BaseOS sync is half done: Packages but no repodata yet."""
    summary = _prepare("run-1")
    layout = layout_of(summary)
    (layout.repo_tree("BaseOS", "x86_64") / "Packages").mkdir(parents=True)
    return summary, layout


@pytest.mark.parametrize("state", ["up_for_retry", "running", "queued", "scheduled", "deferred", "up_for_reschedule",
                                   "restarting", None])
def test_finalize_refuses_while_a_watched_task_has_not_ended(started, state):
    summary, layout = started
    states = {"prepare_compose": "success", "sync_repos_0": "success", "sync_repos_1": state,
              "repoclosure": "skipped", "build_dvd_iso": "skipped", "pull_cloud_images": "skipped"}
    with pytest.raises(AirflowFailException) as err:
        _finalize(summary, states)
    message = str(err.value)
    assert "refusing to finalize" in message and f"sync_repos_1 ({state or 'not started'})" in message
    assert "repomd.xml" not in message  # not the misleading "was it synced?"
    assert compose_status.read_status(layout) == "STARTED"
    assert not layout.latest_link.exists() and not (layout.metadata / "rpms.json").exists()


def test_finalize_refuses_when_a_watched_task_has_no_instance(started):
    summary, layout = started
    states = {"prepare_compose": "success", "sync_repos_0": "success", "build_dvd_iso": "skipped",
              "pull_cloud_images": "skipped"}
    with pytest.raises(AirflowFailException, match=r"refusing to finalize.*repoclosure \(not started\)"):
        _finalize(summary, states)
    assert compose_status.read_status(layout) == "STARTED"


def test_finalize_refuses_an_unfinished_task_even_beside_a_failed_one(started):
    summary, layout = started
    with pytest.raises(AirflowFailException, match=r"refusing to finalize.*sync_repos_1 \(up_for_retry\)"):
        _finalize(summary, {"sync_repos_0": "failed", "sync_repos_1": "up_for_retry"})
    assert compose_status.read_status(layout) == "STARTED"


# --- rpms.json: a binary's source package takes the binary's epoch (finding 5) ---------------------------------


def _rpmbuild_with_epoch(workdir: Path) -> tuple[list[Path], Path]:
    """``epochpkg-2:1.4-1`` with a subpackage: the binaries and the source package, built with rpmbuild."""
    top = workdir / "rpmbuild"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS" / "epochpkg.spec"
    spec.write_text(textwrap.dedent("""\
        Name: epochpkg
        Epoch: 2
        Version: 1.4
        Release: 1
        Summary: a package with an epoch
        License: MIT
        BuildArch: noarch
        %description
        Epoch test.
        %package tools
        Summary: its subpackage
        %description tools
        Epoch test tools.
        %install
        mkdir -p %{buildroot}/usr/share/epochpkg
        echo 1.4 > %{buildroot}/usr/share/epochpkg/VERSION
        echo tools > %{buildroot}/usr/share/epochpkg/TOOLS
        %files
        /usr/share/epochpkg/VERSION
        %files tools
        /usr/share/epochpkg/TOOLS
        """))
    subprocess.run(["rpmbuild", "-ba", "--quiet", "--define", f"_topdir {top}", str(spec)], check=True,
                   capture_output=True)
    return sorted((top / "RPMS" / "noarch").glob("*.rpm")), next((top / "SRPMS").glob("*.src.rpm"))


def _repo(tree: Path, rpms: list[Path]) -> None:
    (tree / "Packages").mkdir(parents=True)
    for rpm in rpms:
        (tree / "Packages" / rpm.name).write_bytes(rpm.read_bytes())
    subprocess.run(["createrepo_c", "--quiet", "--no-database", str(tree)], check=True, capture_output=True)


def _full_run_with_baseos(tmp_path: Path) -> tuple[dict, ComposeLayout]:
    """A full-run compose whose BaseOS x86_64 and source trees hold epochpkg's real packages and repodata."""
    summary = _prepare("run-1", {**QUICK, "full_run": True})
    layout = layout_of(summary)
    binaries, source = _rpmbuild_with_epoch(tmp_path / "build")
    _repo(layout.repo_tree("BaseOS", "x86_64"), binaries)
    _repo(layout.repo_tree("BaseOS", "src", "source"), [source])
    return summary, layout


def test_rpms_json_files_binaries_under_their_source_with_the_epoch(roots, tmp_path):
    summary, layout = _full_run_with_baseos(tmp_path)
    result = _finalize(summary, {"prepare_compose": "success", "sync_repos_0": "success", "repoclosure": "skipped",
                                 "build_dvd_iso": "skipped", "pull_cloud_images": "skipped"})
    assert result["status"] == "FINISHED"
    rpms = productmd.rpms.Rpms()
    rpms.load(str(layout.metadata / "rpms.json"))
    by_srpm = rpms.rpms["BaseOS"]["x86_64"]
    sources = {nevra for srpm in by_srpm.values() for nevra, info in srpm.items() if info["category"] == "source"}
    assert sources == {"epochpkg-2:1.4-1.src"}
    binaries_listed = {nevra: srpm for srpm, pkgs in by_srpm.items() for nevra, info in pkgs.items()
                       if info["category"] == "binary"}
    assert binaries_listed == {"epochpkg-2:1.4-1.noarch": "epochpkg-2:1.4-1.src",
                               "epochpkg-tools-2:1.4-1.noarch": "epochpkg-2:1.4-1.src"}
    assert set(binaries_listed.values()) <= sources  # every binary's source key is a listed source package
    assert list(json.loads((layout.metadata / "rpms.json").read_text())["payload"]["rpms"]["BaseOS"]["x86_64"]) == [
        "epochpkg-2:1.4-1.src"]


def test_a_compose_with_failed_cloud_images_ends_incomplete_and_release_engineering_hears_it(
        roots, tmp_path, monkeypatch, webhook, smtp_server):  # noqa: F811
    """finalize_compose itself sends FINISHED_INCOMPLETE to the configured targets (a real SMTP server and a
    webhook on loopback), naming the failed deliverable and where the compose is; the compose still finishes."""
    from releng.core.settings import settings

    monkeypatch.setenv("RELENG_NOTIFY_WEBHOOK", webhook.url)
    monkeypatch.setenv("RELENG_NOTIFY_EMAIL", "releng@example.org")
    monkeypatch.setenv("RELENG_AIRFLOW_URL", "https://airflow.example.org")
    settings.cache_clear()
    summary, layout = _full_run_with_baseos(tmp_path)
    result = _finalize(summary, {"prepare_compose": "success", "sync_repos_0": "success", "repoclosure": "success",
                                 "build_dvd_iso": "skipped", "pull_cloud_images_0": "failed"})
    assert result["status"] == "FINISHED_INCOMPLETE"
    assert compose_status.read_status(layout) == "FINISHED_INCOMPLETE"
    (posted,) = webhook.received
    assert posted[1]["event"] == "compose_finished_incomplete"
    data = posted[1]["data"]
    assert data["status"] == "FINISHED_INCOMPLETE" and data["top"] == str(layout.top)
    assert data["compose_id"] == layout.compose_id and data["release"] == "el9"
    assert data["url"].startswith("https://airflow.example.org/dags/") and data["url"].endswith("/runs/run-1")
    assert data["failed"] == ["pull_cloud_images_0 (cloud image Azure, x86_64)"]  # which image, not only an index
    assert "without the failed optional deliverables" in posted[1]["text"]
    (mail,) = smtp_server.messages
    assert mail.envelope_to == ["releng@example.org"] and mail["X-Releng-Event"] == "compose_finished_incomplete"
    assert "FINISHED_INCOMPLETE" in mail["Subject"] and str(layout.top) in smtp_server.text(mail)
    assert data["failed"] and all(name in smtp_server.text(mail) for name in data["failed"])


# --- a rewrite of a finished compose reopens it (finding 8b) ---------------------------------------------------


@pytest.mark.parametrize("status", ["FINISHED", "FINISHED_INCOMPLETE"])
def test_a_task_rewriting_a_finished_compose_sets_it_back_to_started(roots, status):
    from releng.operators.compose import reopen_compose

    summary = _prepare("run-1")
    layout = layout_of(summary)
    compose_status.write_status(layout, status)
    reopen_compose({"ti": _TI(summary)}, "prepare_compose")
    assert compose_status.read_status(layout) == "STARTED"


def test_finalize_rerun_on_a_finished_compose_is_started_while_it_rewrites(roots, monkeypatch):
    summary = _prepare("run-1")
    layout = layout_of(summary)
    states = {task: "skipped" for task in WATCHED}
    assert _finalize(summary, states)["status"] == "FINISHED"
    seen = []
    publish = finalize_compose.publish
    monkeypatch.setattr(finalize_compose, "publish",
                        lambda *a: seen.append(compose_status.read_status(layout)) or publish(*a))
    assert _finalize(summary, states)["status"] == "FINISHED"
    assert seen == ["STARTED"] and compose_status.read_status(layout) == "FINISHED"


def test_reopen_leaves_started_and_doomed_composes_alone(roots):
    from releng.operators.compose import reopen_compose

    summary = _prepare("run-1")
    layout = layout_of(summary)
    reopen_compose({"ti": _TI(summary)}, "prepare_compose")
    assert compose_status.read_status(layout) == "STARTED"
    compose_status.write_status(layout, "DOOMED")
    reopen_compose({"ti": _TI(summary)}, "prepare_compose")
    assert compose_status.read_status(layout) == "DOOMED"
    reopen_compose({"ti": _TI(None)}, "prepare_compose")  # no compose yet: nothing to reopen


def test_staging_refuses_a_compose_that_is_not_finished(roots):
    summary = _prepare("run-1")
    layout: ComposeLayout = layout_of(summary)
    context = holding_staging(roots / "staging", outlet_events={})  # as wait_for_staging took it
    with pytest.raises(AirflowFailException, match=r"STATUS is STARTED.*finalize_compose"):
        SyncToStagingOperator(task_id="sync_to_staging", summary=summary).execute(context)
    assert [p.name for p in (roots / "staging").iterdir()] == [".releng"]  # the lease only
    assert compose_status.read_status(layout) == "STARTED"


# --- a refused form: the reason first, in one line (issue 13) --------------------------------------------------


def test_a_refused_form_fails_prepare_with_a_one_line_reason(roots):
    with pytest.raises(AirflowFailException) as err:
        _prepare("run-1", {**QUICK, "rc": True, "repoclosure": False})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("refused the el9 compose, nothing was started: a release candidate must be a full run")
    assert "a release candidate must pass repoclosure" in message and message.endswith("with these fixed")
    assert not (roots / "compose").exists() or not any((roots / "compose").rglob("STATUS"))


def test_finalize_without_a_prepared_compose_points_at_prepare(roots):
    with pytest.raises(AirflowFailException, match=r"^no compose to finalize: prepare_compose did not prepare one"):
        _finalize(None, {"prepare_compose": "failed"})


# --- the work lists stay small XComs at a real release's size (issue 14) ---------------------------------------


def test_work_lists_of_a_four_arch_compose_are_small_xcoms_and_map_to_the_same_kwargs(roots):
    """Each work list is one XCom row that every mapped instance loads. With the whole summary in every item,
    plan.reposync of el9 on four arches was 67 KB (bench/airflow_overhead.py), over the 64 KB target; the
    reposync and repoclosure items carry only what their .map() callables read, and map to the same kwargs."""
    from releng.operators.compose import plan_items, repoclosure_kwargs, reposync_kwargs

    summary = _prepare("run-4", {"release": "el9", "arches": ["x86_64", "aarch64", "ppc64le", "s390x"],
                                 "full_run": True})
    for kind, to_kwargs in (("reposync", reposync_kwargs), ("repoclosure", repoclosure_kwargs)):
        items = plan_items(summary, kind)
        assert len(items) >= (100 if kind == "reposync" else 40)
        for item in items:
            assert to_kwargs(item) == to_kwargs(item | {"summary": summary})
        size = len(json.dumps(items))
        assert size <= 48 * 1024, f"plan.{kind}: {size} bytes for {len(items)} items"
    for kind in ("kickstart", "dvd", "cloud", "lorax"):
        assert len(json.dumps(plan_items(summary, kind))) <= 64 * 1024, kind
