"""The change report: repodata reading, NEVRA comparison, the delete bound, the record and its digest."""

from __future__ import annotations

import json
import shutil

import pytest

from releng.core import rsync
from releng.core.promotion.base import PromotionError
from releng.core.promotion.change_report import check_delete_bound, delete_bound, make_report
from releng.core.promotion.record import load_record, phase_of, record_digest, write_record
from releng.core.promotion.render import markdown, subject
from releng.core.promotion.target import release_from_run, resolve_target
from releng.core.settings import settings


@pytest.mark.parametrize("path,phase", [
    ("BaseOS/x86_64/os/Packages/b/bash.rpm", "payload"),
    ("BaseOS/x86_64/os/repodata", "metadata"),
    ("BaseOS/x86_64/os/repodata/abc-primary.xml.gz", "metadata"),
    ("BaseOS/x86_64/os/repodata/repomd.xml", "index"),
    ("BaseOS/x86_64/os/repodata/repomd.xml.asc", "index"),
    ("BaseOS/x86_64/os/.treeinfo", "metadata"),
    ("isos/x86_64/CHECKSUM", "metadata"),
    ("isos/x86_64/Rocky-9.7-x86_64-dvd.iso.CHECKSUM", "metadata"),
    ("isos/x86_64/Rocky-9.7-x86_64-dvd.iso", "payload"),
    ("BaseOS/x86_64/os/images/install.img", "payload"),
])
def test_phase_of(path, phase):
    assert phase_of(path) == phase


def _stats(files: int, created: int, deleted: int) -> rsync.Stats:
    return rsync.Stats(files={"reg": files, "dir": 9}, created={"reg": created}, deleted={"reg": deleted})


def test_delete_bound():
    b = delete_bound(_stats(90, 0, 10), 10, 0.1, False, production_exists=True)
    assert b["production_files"] == 100 and b["share"] == 0.1 and not b["exceeded"]
    b = delete_bound(_stats(89, 0, 11), 11, 0.1, False, production_exists=True)
    assert b["share"] == 0.11 and b["exceeded"] and not b["allowed"]
    b = delete_bound(_stats(50, 50, 0), 0, 0.0, False, production_exists=False)
    assert b["production_files"] == 0 and not b["exceeded"]
    b = delete_bound(_stats(0, 0, 120), 120, 0.1, True, production_exists=True)
    assert b["share"] == 1.0 and b["exceeded"] and b["allowed"]
    record = {"delete_bound": delete_bound(_stats(0, 0, 120), 120, 0.1, False, production_exists=True),
              "allow_large_delete": False, "production_dir": "/p/9.7", "staging_dir": "/s/9.7-RC1"}
    with pytest.raises(PromotionError, match=r"120 of 120 production files \(100.0%\) .* above "
                                                       r"RELENG_PROMOTION_MAX_DELETE=10%.*allow_large_delete=true"):
        check_delete_bound(record)
    check_delete_bound({**record, "allow_large_delete": True})


def test_release_from_run():
    assert release_from_run({"release": "el9", "rc": True}, []) == ("el9", True)
    events = [{"release": "el9", "rc": False}, {"release": "el9", "rc": True, "source": "general_updates"}]
    assert release_from_run({"release": None, "rc": False}, events) == ("el9", True)
    with pytest.raises(PromotionError, match="several releases \\(el8, el9\\)"):
        release_from_run({}, [{"release": "el9"}, {"release": "el8"}])
    with pytest.raises(PromotionError, match="rc is 'yes'"):
        release_from_run({}, [{"release": "el9", "rc": "yes"}])
    with pytest.raises(PromotionError, match="no release chosen"):
        release_from_run({"release": None}, [])


def test_first_report_lists_every_package_as_added(staged, el9):
    target = resolve_target("el9", True, settings())
    record = make_report(target, run_id="r1", dry_run=False, allow_large_delete=False, max_delete=0.1)
    assert not staged.production.exists()  # a report writes nothing to production
    repos = {r["path"]: r for r in record["repos"]}
    appstream = repos["AppStream/x86_64/os"]
    assert (appstream["repo"], appstream["arch"], appstream["tree"]) == ("AppStream", "x86_64", "os")
    assert {f"{n}.rpm" for n in appstream["added"]} == set(
        staged_listing(el9, "AppStream", "x86_64"))
    assert repos["BaseOS/source/tree"]["arch"] == "source"
    assert record["delete_bound"]["production_files"] == 0 and record["totals"]["deletions"]["files"] == 0
    assert record["other"]["files"] == 3  # the ISO, its CHECKSUM and the latest link
    assert record["totals"]["payload"]["bytes"] >= 131072
    ks = [i for i in record["items"] if i["path"].startswith("BaseOS/x86_64/kickstart/Packages/")
          and i["type"] == "f"]
    assert ks and all(i["code"].startswith("h") and i["link"].startswith("BaseOS/x86_64/") for i in ks)
    repomd = [i for i in record["items"] if i["path"].endswith("repodata/repomd.xml")]
    assert repomd and all(i["phase"] == "index" and len(i["sha256"]) == 64 for i in repomd)


def staged_listing(el9, repo, arch):
    from tests.conftest import ROOT

    return json.loads((ROOT / ".stack" / "test-cache" / "buildsystem" / "fixture.json").read_text())[
        "profiles"][el9.name]["repos"][repo][arch]


def test_record_digest_and_tamper_check(staged):
    target = resolve_target("el9", True, settings())
    record = make_report(target, run_id="manual__2026-01-01T00:00:00+00:00", dry_run=True,
                                   allow_large_delete=False, max_delete=0.1)
    assert record["digest"] == record_digest(record) and record["digest"].startswith("sha256:")
    path = write_record(target, record)
    assert path.parent == staged.production_root / ".releng" / "promotions" and ":" not in path.name
    assert load_record(path, record["digest"]) == record
    tampered = json.loads(path.read_text())
    tampered["items"][0]["path"] = "../../etc"
    path.write_text(json.dumps(tampered))
    with pytest.raises(PromotionError, match="does not match the approved digest"):
        load_record(path, record["digest"])
    tampered["digest"] = record_digest(tampered)
    path.write_text(json.dumps(tampered))
    with pytest.raises(PromotionError, match="does not match the approved digest"):
        load_record(path, record["digest"])  # a self-consistent record that is not the approved one


def test_markdown_is_compact_and_truncated():
    repos = [{"path": f"R{i}/x86_64/os", "repo": f"R{i:02d}", "arch": "x86_64", "tree": "os", "files": 2,
              "bytes": 2048, "deletes": 1, "added": [f"p{i}-1-1.noarch"], "updated": [["a-1-1.x", "a-2-1.x"]],
              "removed": [], "added_count": 1, "updated_count": 1, "removed_count": 0} for i in range(50)]
    record = {"release": "el9", "staging_dir": "/s/9.7-RC1", "production_dir": "/p/9.7", "digest": "sha256:ab",
              "production_category": "/p",
              "run_id": "r", "dry_run": False, "repos": repos, "other": {"files": 1, "bytes": 5, "deletes": 0},
              "delete_bound": {"delete_files": 50, "production_files": 100, "share": 0.5, "max_share": 0.1,
                               "exceeded": True, "allowed": True},
              "totals": {"payload": {"files": 100, "dirs": 0, "bytes": 1 << 30},
                         "metadata": {"files": 3, "dirs": 1, "bytes": 10},
                         "deletions": {"files": 50, "dirs": 0, "bytes": 7},
                         "packages": {"added": 50, "updated": 50, "removed": 0}}}
    md = markdown(record)
    assert "`sha256:ab`" in md and "| copy payload | 100 | 0 | 1.0 GiB |" in md
    assert "**ABOVE THE BOUND** (allowed by allow_large_delete)" in md
    assert md.count("\n| R") == 15 and "| … 35 more trees | | | 35 | 35 | 0 | 70 | 70.0 KiB | 35 |" in md
    assert "… and 35 more (every change is listed in change_report's log)" in md and len(md) < 8000
    # issue 13: the counts say trees, each package names its tree, and the summary comes first
    assert md.startswith("**50 added, 50 updated, 0 removed packages** in 50 trees (repository, arch and kind)")
    assert "`p0-1-1.noarch (R00 x86_64 os)`" in md and "see the record" not in md
    assert "Only **approver** may answer" in markdown(record, approvers=["approver"])
    assert subject(record) == ("Promote el9 9.7-RC1 to production 9.7: 50 added, 50 updated, 0 removed "
                                         "packages, 50 files deleted")


def test_report_refuses_broken_or_unsigned_staging_metadata(staged, fixture_buildsystem, tmp_path):
    from tests.promotion.conftest import fixture_signer

    home, fpr = fixture_signer(fixture_buildsystem, tmp_path)
    target = resolve_target("el9", True, settings())
    kw = {"run_id": "r", "dry_run": False, "allow_large_delete": False, "max_delete": 0.1}
    make_report(target, signing_key=fpr, gnupghome=home, **kw)  # the fixture's repos are good
    (staged.staging / "BaseOS" / "aarch64" / "os" / "repodata" / "repomd.xml.asc").unlink()
    primary = next((staged.staging / "BaseOS" / "x86_64" / "os" / "repodata").glob("*-primary.xml.gz"))
    primary.write_bytes(b"garbage")
    with pytest.raises(PromotionError, match=r"not fit to promote \(2 problems\); regenerate or re-sign "
                                                       r"it in staging") as refused:
        make_report(target, signing_key=fpr, gnupghome=home, **kw)
    assert "BaseOS/aarch64/os/repodata/repomd.xml.asc: missing; signing is on" in str(refused.value)
    assert f"BaseOS/x86_64/os/repodata/{primary.name} (primary): size 7, repodata says" in str(refused.value)
    with pytest.raises(PromotionError, match=r"\(1 problems\)"):
        make_report(target, **kw)  # without a signing key only the broken primary counts


def test_profile_without_a_revision_is_refused(trees, tmp_path, monkeypatch):
    from tests.conftest import ROOT

    config = tmp_path / "releases"
    shutil.copytree(ROOT / "config" / "releases", config)
    text = (config / "el9.yaml").read_text().replace('revision: "9.7"', 'revision: ""')
    (config / "el9.yaml").write_text(text)
    monkeypatch.setenv("RELENG_CONFIG_DIR", str(config))
    settings.cache_clear()
    from releng.core.profile import ProfileError

    with pytest.raises(ProfileError, match="revision"):
        resolve_target("el9", True, settings())
