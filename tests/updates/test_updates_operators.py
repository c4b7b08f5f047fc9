"""general_updates tasks without a DAG run: prepare's checks, the planned work lists, the asset event."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from releng.assets import STAGING_ASSET
from releng.core.settings import settings
from releng.core.updates.prepare_updates import UpdatesSummary, work_list
from releng.core.updates.update_repodata import TreeUpdate
from releng.operators.updates import EmitStagingAssetOperator, PrepareUpdatesOperator

RUN_AFTER = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture
def roots(tmp_path, monkeypatch):
    for name in ("COMPOSE", "STAGING", "PRODUCTION"):
        monkeypatch.setenv(f"RELENG_{name}_ROOT", str(tmp_path / name.lower()))
    settings.cache_clear()
    staging_dir = tmp_path / "staging" / "mirror" / "pub" / "rocky" / "9.7"
    return SimpleNamespace(compose=tmp_path / "compose", staging_dir=staging_dir, monkeypatch=monkeypatch)


def _prepare(params: dict) -> dict:
    context = {"params": params, "dag_run": SimpleNamespace(run_after=RUN_AFTER)}
    return PrepareUpdatesOperator(task_id="prepare_updates").execute(context)


def _stage(staging_dir: Path, repo: str, trees=(("x86_64", "os"), ("aarch64", "os"), ("ppc64le", "os"),
                                                ("s390x", "os")), signed: bool = False) -> None:
    for arch, kind in trees:
        below = {"os": f"{arch}/os", "debug": f"{arch}/debug/tree", "source": "source/tree"}[kind]
        tree = staging_dir / repo / below
        (tree / "repodata").mkdir(parents=True)
        (tree / "repodata" / "repomd.xml").write_text("<repomd/>")
        if signed:
            (tree / "repodata" / "repomd.xml.asc").write_text("-----BEGIN PGP SIGNATURE-----")


def _stage_baseos(staging_dir: Path) -> None:
    _stage(staging_dir, "BaseOS")


def test_a_missing_staging_directory_stops_the_run(roots):
    with pytest.raises(AirflowFailException, match=r"9\.7 does not exist; stage el9 with full_compose first"):
        _prepare({"release": "el9", "repos": ["BaseOS"], "rc": False})
    assert not roots.compose.exists()


def test_a_staging_without_any_tree_of_the_repos_stops_the_run(roots):
    """Nothing of AppStream was ever composed into staging: an update run does not create it."""
    _stage_baseos(roots.staging_dir)
    with pytest.raises(AirflowFailException, match=r"9\.7 has none of the trees of AppStream; an update run only "
                                                   r"updates trees a compose staged"):
        _prepare({"release": "el9", "repos": ["AppStream"], "rc": False})
    assert not roots.compose.exists()


def test_a_signed_staging_without_a_signing_key_stops_the_run(roots):
    """The metadata an update changes could only be published unsigned: refused before any work."""
    _stage(roots.staging_dir, "BaseOS", (("x86_64", "os"), ("x86_64", "debug")), signed=True)
    with pytest.raises(AirflowFailException, match=r"signed in 2 of the 2 trees this run updates \(BaseOS x86_64 "
                                                   r"os, BaseOS x86_64 debug\).*RELENG_REPO_SIGNING_KEY"):
        _prepare({"release": "el9", "repos": ["BaseOS"], "rc": False})
    assert not roots.compose.exists()


def test_a_closure_dependency_neither_updated_nor_staged_stops_the_run(roots):
    _stage(roots.staging_dir, "AppStream", (("aarch64", "os"),))
    with pytest.raises(AirflowFailException, match=r"needs repos .*BaseOS aarch64"):
        _prepare({"release": "el9", "repos": ["AppStream"], "rc": False})
    assert not roots.compose.exists()


def test_a_signing_key_missing_from_the_keyring_stops_the_run(roots, tmp_path):
    roots.staging_dir.mkdir(parents=True)
    (tmp_path / "gnupg").mkdir(mode=0o700)
    roots.monkeypatch.setenv("RELENG_REPO_SIGNING_KEY", "0000DEADBEEF0000")
    roots.monkeypatch.setenv("RELENG_GNUPGHOME", str(tmp_path / "gnupg"))
    settings.cache_clear()
    with pytest.raises(AirflowFailException, match="has no secret key"):
        _prepare({"release": "el9", "repos": ["BaseOS"], "rc": False})


def plan_items(summary: dict, kind: str, profile) -> list[dict]:
    return work_list(UpdatesSummary.from_xcom(summary), profile, kind)


def test_summary_and_work_lists(roots, el9):
    """Only the trees staging has are planned: x86_64 and aarch64 were composed, ppc64le and s390x never were."""
    _stage_baseos(roots.staging_dir)
    _stage(roots.staging_dir, "AppStream", (("x86_64", "os"), ("x86_64", "debug"), ("aarch64", "os"),
                                            ("src", "source")))
    summary = _prepare({"release": "el9", "repos": ["AppStream"], "rc": False})
    top = roots.compose / "9" / "Rocky-9.7-updates-20250304.050607"
    staged = [["AppStream", "aarch64", "os"], ["AppStream", "src", "source"], ["AppStream", "x86_64", "debug"],
              ["AppStream", "x86_64", "os"]]
    skipped = [["AppStream", a, k] for a in ("x86_64", "aarch64", "ppc64le", "s390x") for k in ("os", "debug")
               if ["AppStream", a, k] not in staged]
    assert summary == {"release": "el9", "repos": ["AppStream"], "rc": False, "staging_dir": str(roots.staging_dir),
                       "compose_root": str(roots.compose), "updates_id": top.name, "top": str(top),
                       "closure_dir": str(top / "work" / "closure"), "trees": staged, "skipped": summary["skipped"]}
    assert sorted(summary["skipped"]) == sorted(skipped)
    assert (top / "work" / "closure" / "BaseOS" / "x86_64" / "os").resolve() == \
        roots.staging_dir / "BaseOS" / "x86_64" / "os"

    syncs = {(i["arch"], i["kind"]): i for i in plan_items(summary, "reposync", el9)}
    assert sorted(syncs) == [("aarch64", "os"), ("src", "source"), ("x86_64", "debug"), ("x86_64", "os")]
    assert all(i["hashed"] and i["repo"] == "AppStream" for i in syncs.values())
    assert syncs[("x86_64", "os")]["dest"] == str(top / "compose" / "AppStream" / "x86_64" / "os")
    assert syncs[("x86_64", "os")]["previous"] == str(roots.staging_dir / "AppStream" / "x86_64" / "os")
    assert syncs[("src", "source")]["dest"] == str(top / "compose" / "AppStream" / "source" / "tree")
    closure = plan_items(summary, "repoclosure", el9)
    assert [(i["repo"], i["arch"], i["compose_dir"]) for i in closure] == [
        ("AppStream", a, summary["closure_dir"]) for a in ("x86_64", "aarch64")]
    repodata = {(i["arch"], i["kind"]): i for i in plan_items(summary, "repodata", el9)}
    assert sorted(repodata) == sorted(syncs)
    assert repodata[("x86_64", "debug")]["tree"] == str(roots.staging_dir / "AppStream" / "x86_64" / "debug" / "tree")
    assert repodata[("x86_64", "debug")]["synced"] == str(top / "compose" / "AppStream" / "x86_64" / "debug" / "tree")


class _Events(dict):
    def __missing__(self, key):
        self[key] = SimpleNamespace(extra=None)
        return self[key]


def _result(changed: bool, added: int) -> dict:
    return TreeUpdate("AppStream", "x86_64", "os", "/s/9.7/AppStream/x86_64/os", 3, added, [], changed, False,
                      ["primary"]).to_xcom()


def _emit(results: list[dict]):
    summary = {"release": "el9", "rc": False, "staging_dir": "/s/9.7", "repos": ["AppStream"],
               "compose_root": "/c", "updates_id": "Rocky-9.7-updates-1", "top": "/c/9/Rocky-9.7-updates-1",
               "closure_dir": "/c/9/Rocky-9.7-updates-1/work/closure", "trees": [["AppStream", "x86_64", "os"]]}
    events = _Events()
    with DAG("general_updates", schedule=None):
        op = EmitStagingAssetOperator(task_id="emit_staging_asset", summary=summary, results=results,
                                      outlets=[STAGING_ASSET])
    return op.execute({"outlet_events": events}), events


def test_the_staging_event_names_what_changed():
    extra, events = _emit([_result(True, 3), _result(False, 0)])
    assert extra == events[STAGING_ASSET].extra == {
        "release": "el9", "rc": False, "staging_dir": "/s/9.7", "source": "general_updates", "repos": ["AppStream"],
        "packages_added": 3}


def test_an_unchanged_staging_sends_no_event():
    with pytest.raises(AirflowSkipException, match="unchanged"):
        _emit([_result(False, 0)])
