"""Issue 7 finding 8: a change report taken while general_updates swaps a staging repository's metadata.
Files the dry run listed may vanish (the swap's temporary names, superseded metadata) and repomd.xml may be
replaced under the report: the report is taken again, and a clear PromotionError says so when staging never
holds still; never a raw FileNotFoundError."""

from __future__ import annotations

import subprocess

import pytest

from releng.core import rsync
from releng.core.promotion import change_report
from releng.core.promotion.base import PromotionError
from releng.core.promotion.change_report import REPORT_ATTEMPTS, make_report
from releng.core.promotion.target import resolve_target
from releng.core.settings import settings
from tests.promotion.conftest import build_rpm, fixture_signer, update_repo

KW = {"run_id": "r", "dry_run": True, "allow_large_delete": False, "max_delete": 0.1}


@pytest.fixture
def no_wait(monkeypatch):
    monkeypatch.setattr(change_report, "REPORT_RETRY_SECONDS", 0, raising=False)


def _after_each_dry_run(monkeypatch, action) -> list:
    """Run ``action`` right after every dry run of the report (what a concurrent swap does)."""
    real_run, runs = rsync.run, []

    def run(argv, **kw):
        result = real_run(argv, **kw)
        runs.append(result)
        action(len(runs))
        return result

    monkeypatch.setattr(rsync, "run", run)
    return runs


def test_a_temp_file_that_vanishes_after_the_dry_run_is_retried(staged, monkeypatch, no_wait):
    repodata = staged.staging / "AppStream" / "x86_64" / "os" / "repodata"
    tmp = repodata / ".0123-primary.xml.gz.tmp"
    tmp.write_bytes(b"half a file")
    runs = _after_each_dry_run(monkeypatch, lambda _n: tmp.unlink(missing_ok=True))  # the swap renames it
    record = make_report(resolve_target("el9", True, settings()), **KW)
    assert len(runs) == 2
    assert not any(".tmp" in i["path"] for i in record["items"])


def test_staging_that_never_holds_still_is_a_clear_refusal(staged, monkeypatch, no_wait):
    repodata = staged.staging / "AppStream" / "x86_64" / "os" / "repodata"

    def swap(n: int) -> None:
        (repodata / f".{n}-primary.xml.gz.tmp").unlink(missing_ok=True)
        (repodata / f".{n + 1}-primary.xml.gz.tmp").write_bytes(b"next")

    swap(0)
    runs = _after_each_dry_run(monkeypatch, swap)
    with pytest.raises(PromotionError, match=r"staging changed while the report was being made .*; "
                                                       r"run the promotion again"):
        make_report(resolve_target("el9", True, settings()), **KW)
    assert len(runs) == REPORT_ATTEMPTS


def test_metadata_swapped_in_after_the_dry_run_is_reported_as_it_is_now(staged, monkeypatch, no_wait, tmp_path,
                                                                        fixture_buildsystem):
    home, fpr = fixture_signer(fixture_buildsystem, tmp_path)
    try:
        repo = staged.staging / "AppStream" / "x86_64" / "os"
        rpm = build_rpm(tmp_path, "foo-data", "1.1", gnupghome=home, fpr=fpr)
        target = resolve_target("el9", True, settings())
        kw = {**KW, "signing_key": fpr, "gnupghome": home}
        make_report(target, **kw)  # staging as it was is fine

        def swap(n: int) -> None:
            if n == 1:  # new repodata and signature, the old primary deleted, right after the first dry run
                update_repo(repo, [rpm], gnupghome=home, fpr=fpr)

        runs = _after_each_dry_run(monkeypatch, swap)
        record = make_report(target, **kw)
        assert len(runs) == 2
        appstream = {r["path"]: r for r in record["repos"]}["AppStream/x86_64/os"]
        assert "foo-data-1.1-1.el9.noarch" in appstream["added"]
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
