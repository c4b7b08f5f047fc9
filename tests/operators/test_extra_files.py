"""deploy_extra_files: the profile's files from its git branch, verified, replaced as a whole."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from dev import extrafiles
from releng.core.layout import ComposeLayout
from releng.operators.compose import DeployExtraFilesOperator
from tests.umask import not_public, private_umask


def _summary(layout: ComposeLayout) -> dict:
    return {"release": "el9", "compose_id": layout.compose_id, "compose_root": str(layout.compose_root)}


@pytest.fixture
def layout(site, el9):
    layout = ComposeLayout.new(el9, Path(site["RELENG_COMPOSE_ROOT"]), "20251123.143015")
    layout.metadata.mkdir(parents=True)
    return layout


def test_files_land_in_work_and_metadata(layout, el9):
    op = DeployExtraFilesOperator(task_id="deploy_extra_files", summary=_summary(layout))
    assert op.execute({})["files"] == len(el9.extra_files.files)
    dest = layout.work / "global" / "extra-files"
    assert sorted(p.name for p in dest.iterdir()) == sorted(Path(f).name for f in el9.extra_files.files)
    assert (layout.metadata / "EULA").read_text() == (dest / "EULA").read_text()
    (dest / "stale").write_text("x")
    op.execute({})  # a rerun replaces the directory as a whole
    assert not (dest / "stale").exists()
    assert not list(dest.parent.glob(".extra-files-*"))


def test_files_are_world_readable_under_umask_077(layout, el9):
    """Issue 7 finding 4: TemporaryDirectory makes 0700; the files and their directory are 0644/0755."""
    with private_umask():
        DeployExtraFilesOperator(task_id="deploy_extra_files", summary=_summary(layout)).execute({})
    names = [Path(f).name for f in el9.extra_files.files]
    assert not_public(layout.work / "global" / "extra-files", *(layout.metadata / n for n in names)) == []


def test_a_missing_file_or_branch_fails_clearly(layout, tmp_path, monkeypatch, el9):
    repo = Path(extrafiles.build(tmp_path / "broken", [el9]))
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "r9"], check=True)
    subprocess.run(["git", "-C", str(repo), "rm", "-q", "SOURCES/EULA"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-m", "rm"],
                   check=True)
    monkeypatch.setenv("RELENG_EXTRA_FILES_GIT", f"file://{repo}")
    op = DeployExtraFilesOperator(task_id="deploy_extra_files", summary=_summary(layout))
    with pytest.raises(AirflowFailException, match="branch r9 lacks SOURCES/EULA"):
        op.execute({})
    assert not (layout.work / "global" / "extra-files").exists()
    monkeypatch.setenv("RELENG_EXTRA_FILES_GIT", f"file://{tmp_path}/nowhere")
    from releng.core.settings import settings

    settings.cache_clear()
    with pytest.raises(RuntimeError, match=r"git clone of file://\S+/nowhere \(branch r9\) failed"):
        op.execute({})
