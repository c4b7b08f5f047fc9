"""Issue 7 finding 9: sync_to_staging re-signs every staged repomd.xml with the release key
(RELENG_REPO_SIGNING_KEY) when one is set, so a compose whose repomd.xml.asc the build system signed with
another key is promotable; the signature lands right after its repomd.xml, by a rename."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from releng.assets import STAGING_ASSET
from releng.core.compose import prepare_compose
from releng.core.compose import status as compose_status
from releng.core.layout import ComposeLayout
from releng.core.promotion.change_report import make_report
from releng.core.promotion.target import resolve_target
from releng.core.repo.signatures import SignatureChecker
from releng.core.settings import settings
from releng.core.staging import sync_to_staging
from releng.operators.compose import SyncToStagingOperator
from tests.leases import holding_staging
from tests.promotion.conftest import new_release_key

REPOS = (("BaseOS", "x86_64"), ("AppStream", "x86_64"), ("BaseOS", "aarch64"))


@pytest.fixture
def release_key(tmp_path):
    """A release signing key of its own (not the build system's); its gpg-agent is stopped after the test."""
    home = tmp_path / "release-gnupg"
    yield home, new_release_key(home)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


@pytest.fixture
def finished(trees, tmp_path, fixture_buildsystem, el9) -> tuple[ComposeLayout, dict]:
    """A FINISHED RC compose holding the build system's repos as synced (its repomd.xml.asc signed by the
    build system's key), os and kickstart trees."""
    layout = ComposeLayout.new(el9, tmp_path / "compose", "20251123.143015")
    prepare_compose.start_compose(layout)
    for repo, arch in REPOS:
        upstream = fixture_buildsystem.repo_dir(el9.project_id, repo, arch, hashed=True)
        shutil.copytree(upstream, layout.repo_tree(repo, arch))
    os_tree, ks = layout.repo_tree("BaseOS", "x86_64"), layout.repo_tree("BaseOS", "x86_64", "kickstart")
    shutil.copytree(os_tree, ks, copy_function=os.link, ignore=shutil.ignore_patterns("repodata"))
    shutil.copytree(os_tree / "repodata", ks / "repodata")
    compose_status.write_status(layout, "FINISHED")
    return layout, {"release": "el9", "compose_id": layout.compose_id, "compose_root": str(layout.compose_root),
                    "rc": True}


def _stage(summary: dict) -> dict:
    events = {STAGING_ASSET: SimpleNamespace(extra=None)}
    context = holding_staging(settings().staging_root, outlet_events=events)  # as wait_for_staging took it
    return SyncToStagingOperator(task_id="sync_to_staging", summary=summary).execute(context)


def _report(key: str, home: Path) -> dict:
    target = resolve_target("el9", True, settings())
    return make_report(target, run_id="r", dry_run=True, allow_large_delete=False, max_delete=0.1,
                                 signing_key=key, gnupghome=home)


def _repomds(root: Path) -> list[Path]:
    return sorted(root.rglob("repodata/repomd.xml"))


def test_a_build_system_signed_compose_is_staged_signed_with_the_release_key(finished, trees, release_key,
                                                                              monkeypatch):
    layout, summary = finished
    home, fpr = release_key
    monkeypatch.setenv("RELENG_REPO_SIGNING_KEY", fpr)
    monkeypatch.setenv("RELENG_GNUPGHOME", str(home))
    settings.cache_clear()
    checker = SignatureChecker(fpr, home)
    try:
        assert all("does not verify" in checker.problem(r) for r in _repomds(layout.compose))  # the build system's
        _stage(summary)
        staged = _repomds(trees.staging)
        assert len(staged) == len(REPOS) + 1
        for repomd in staged:
            assert checker.problem(repomd) is None
            assert repomd.read_bytes() == (layout.compose / repomd.relative_to(trees.staging)).read_bytes()
            assert sorted(p.name for p in repomd.parent.iterdir() if p.name.startswith(("repomd", "."))) == \
                ["repomd.xml", "repomd.xml.asc"]  # no temp names left
            assert (repomd.parent / "repomd.xml.asc").stat().st_mode & 0o777 == 0o644
    finally:
        checker.close()
    record = _report(fpr, home)  # the change report's signature check passes
    assert record["totals"]["metadata"]["files"] > 0

    signatures = {r: (r.parent / "repomd.xml.asc").stat().st_mtime_ns for r in staged}
    _stage(summary)  # a rerun finds each repomd.xml signed by the key and leaves it
    assert {r: (r.parent / "repomd.xml.asc").stat().st_mtime_ns for r in staged} == signatures


def test_the_signature_lands_by_rename_right_after_its_repomd(finished, trees, release_key, monkeypatch):
    _layout, summary = finished
    home, fpr = release_key
    monkeypatch.setenv("RELENG_REPO_SIGNING_KEY", fpr)
    monkeypatch.setenv("RELENG_GNUPGHOME", str(home))
    settings.cache_clear()
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src, dst):
        src, dst = str(src), str(dst)
        if dst.endswith("/repodata/repomd.xml"):
            assert Path(f"{src}.asc").is_file()  # signed (and checked) before the repomd.xml lands
            assert subprocess.run(["gpg", "--homedir", str(home), "--batch", "--verify", f"{src}.asc", src],
                                  capture_output=True).returncode == 0
        renames.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(sync_to_staging.os, "replace", replace)
    _stage(summary)
    published = [dst for _src, dst in renames if "/repodata/repomd.xml" in dst]
    assert len(published) == 2 * (len(REPOS) + 1)
    for first, second in zip(published[::2], published[1::2], strict=True):
        assert first.endswith("/repomd.xml") and second == f"{first}.asc"  # consecutive renames, xml first


def test_without_a_signing_key_the_build_systems_signature_is_staged(finished, trees):
    layout, summary = finished
    _stage(summary)
    for repomd in _repomds(trees.staging):
        source = layout.compose / repomd.relative_to(trees.staging)
        assert (repomd.parent / "repomd.xml.asc").read_bytes() == (source.parent / "repomd.xml.asc").read_bytes()


def test_a_signing_key_missing_from_the_keyring_fails_before_anything_is_staged(finished, trees, tmp_path,
                                                                                monkeypatch):
    _layout, summary = finished
    home = tmp_path / "empty-gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("RELENG_REPO_SIGNING_KEY", "0123456789ABCDEF0123456789ABCDEF01234567")
    monkeypatch.setenv("RELENG_GNUPGHOME", str(home))
    settings.cache_clear()
    try:
        with pytest.raises(AirflowFailException, match=r"RELENG_REPO_SIGNING_KEY=0123.* has no secret key"):
            _stage(summary)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    assert not trees.staging.exists() or not any(trees.staging.iterdir())
