"""The delete bound counts what a promotion loses, not the repodata files an update replaces: a small
release's routine update (new repodata in every repository) passes it, an emptied or cut staging tree
does not."""

from __future__ import annotations

import subprocess

import pytest

from releng.core.promotion.base import PromotionError
from releng.core.promotion.change_report import check_delete_bound, make_report, superseded_metadata
from releng.core.promotion.render import markdown
from releng.core.promotion.target import resolve_target
from releng.core.settings import settings
from tests.promotion.conftest import build_rpm, fixture_signer, update_repo


def report(run_id: str, max_delete: float = 0.1) -> dict:
    target = resolve_target("el9", True, settings())
    return make_report(target, run_id=run_id, dry_run=False, allow_large_delete=False,
                                 max_delete=max_delete)


def repos(staging):
    return sorted(p.parent for p in staging.rglob("repodata") if p.is_dir())


@pytest.fixture
def released(staged):
    """Production holds what staging holds (a first promotion, done with rsync here)."""
    staged.production.mkdir(parents=True)
    subprocess.run(["rsync", "-aH", f"{staged.staging}/", f"{staged.production}/"], check=True)
    return staged


def test_a_routine_update_of_a_small_release_passes_the_bound(released, fixture_buildsystem, tmp_path):
    home, fpr = fixture_signer(fixture_buildsystem, tmp_path)
    rpm = build_rpm(tmp_path, "foo-data", "1.1", gnupghome=home, fpr=fpr)
    for repo in repos(released.staging):  # general_updates: a new build, then new repodata everywhere
        update_repo(repo, [rpm] if repo.name == "os" else [], gnupghome=home, fpr=fpr)
    record = report("update")
    b = record["delete_bound"]
    deleted = [i for i in record["items"] if i["phase"] == "deletions" and i["type"] != "d"]
    assert deleted and all("/repodata/" in i["path"] for i in deleted)
    assert b["delete_files"] / b["production_files"] > 0.1  # what tripped the old bound
    assert b["superseded_metadata"] == b["delete_files"] == len(deleted) and b["counted_files"] == 0
    assert b["share"] == 0.0 and not b["exceeded"]
    check_delete_bound(record)
    assert "not counted" in markdown(record)


def test_a_cut_or_emptied_staging_tree_still_trips_the_bound(released, fixture_buildsystem, tmp_path):
    home, fpr = fixture_signer(fixture_buildsystem, tmp_path)
    subprocess.run(["rm", "-rf", str(released.staging / "AppStream")], check=True)  # a repository gone
    b = report("cut")["delete_bound"]
    assert b["superseded_metadata"] == 0 and b["counted_files"] == b["delete_files"] and b["exceeded"]

    for repo in repos(released.staging):  # packages gone, metadata regenerated over what is left
        subprocess.run(["rm", "-rf", str(repo / "Packages")], check=True)
        update_repo(repo, [], gnupghome=home, fpr=fpr)
    record = report("emptied")
    b = record["delete_bound"]
    rpms = [i for i in record["items"] if i["phase"] == "deletions" and i["path"].endswith(".rpm")]
    assert b["superseded_metadata"] > 0 and b["counted_files"] >= len(rpms) > 0 and b["exceeded"]
    with pytest.raises(PromotionError, match=r"would be deleted from .* \(not counting \d+ superseded "
                                                       r"repodata files\), above RELENG_PROMOTION_MAX_DELETE=10%"):
        check_delete_bound(record)


def _item(path: str, phase: str, code: str = ">f+++++++++", kind: str = "f") -> dict:
    return {"path": path, "phase": phase, "code": code, "type": kind}


def test_only_files_beside_a_replaced_repomd_are_superseded():
    items = [
        _item("BaseOS/x86_64/os/repodata/repomd.xml", "index", ">f.st......"),
        _item("BaseOS/x86_64/os/repodata/aaa-primary.xml.gz", "deletions", "*deleting"),   # superseded
        _item("BaseOS/x86_64/os/repodata/repomd.xml.asc", "deletions", "*deleting"),       # the index counts
        _item("BaseOS/x86_64/os/repodata/.~tmp~/bbb-other.xml.gz", "deletions", "*deleting"),  # not beside it
        _item("BaseOS/x86_64/os/repodata/old", "deletions", "*deleting", "d"),
        _item("BaseOS/x86_64/os/Packages/b/bash.rpm", "deletions", "*deleting"),
        _item("AppStream/x86_64/os/repodata/repomd.xml", "index", ".f..t......"),         # only its time changed
        _item("AppStream/x86_64/os/repodata/ccc-primary.xml.gz", "deletions", "*deleting"),
        _item("AppStream/aarch64/os/repodata/repomd.xml", "deletions", "*deleting"),      # repository removed
        _item("AppStream/aarch64/os/repodata/ddd-primary.xml.gz", "deletions", "*deleting"),
        _item("repodata/repomd.xml", "index"),
        _item("repodata/eee-primary.xml.gz", "deletions", "*deleting"),                   # superseded
    ]
    assert superseded_metadata(items) == 2
