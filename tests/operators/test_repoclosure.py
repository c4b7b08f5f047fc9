"""RepoclosureOperator: real dnf repoclosure on synced compose trees, foreign arches, unresolved dependencies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from releng.core.compose.repoclosure import format_unresolved
from releng.core.settings import settings
from releng.operators.repoclosure import RepoclosureOperator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose_dir(tmp_path_factory, fixture_buildsystem, el9) -> Path:
    """BaseOS and AppStream trees for x86_64 and aarch64 as reposync leaves them (the build system's repos,
    byte for byte: test_reposync checks that reposync's output is exactly that)."""
    compose = tmp_path_factory.mktemp("closure") / "compose"
    for repo in ("BaseOS", "AppStream"):
        for arch in ("x86_64", "aarch64"):
            shutil.copytree(fixture_buildsystem.repo_dir(el9.project_id, repo, arch, hashed=True),
                            compose / el9.repo(repo).dir / arch / "os")
    return compose


@pytest.fixture
def config_dir(monkeypatch, tmp_path):
    """Use a copy of the shipped profiles; tests may edit it. settings() is re-read for this test."""
    config = tmp_path / "releases"
    shutil.copytree(ROOT / "config" / "releases", config)
    monkeypatch.setenv("RELENG_CONFIG_DIR", str(config))
    settings.cache_clear()
    yield config
    settings.cache_clear()


def _closure(compose_dir: Path, tmp_path: Path, repo: str, arch: str) -> dict:
    op = RepoclosureOperator(task_id=f"repoclosure_{repo}_{arch}", release="el9", repo=repo, arch=arch,
                             compose_dir=compose_dir, work_dir=tmp_path / "work")
    return op.execute(context={})


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_appstream_closes_with_baseos(config_dir, compose_dir, tmp_path, arch):
    result = _closure(compose_dir, tmp_path, "AppStream", arch)
    assert result == {"repo": "AppStream", "arch": arch, "checked": 2, "ok": True}  # foo-app and foo-data


def test_baseos_closes_on_its_own(config_dir, compose_dir, tmp_path):
    assert _closure(compose_dir, tmp_path, "BaseOS", "aarch64")["checked"] == 3


def test_appstream_alone_fails_listing_the_unresolved_dependencies(config_dir, compose_dir, tmp_path, capsys):
    profile = config_dir / "el9.yaml"
    profile.write_text(profile.read_text().replace("  AppStream: [BaseOS]\n", "  AppStream: []\n"))
    with pytest.raises(AirflowFailException) as err:
        _closure(compose_dir, tmp_path, "AppStream", "x86_64")
    message = str(err.value)
    assert "AppStream x86_64 does not close against AppStream: 2 unresolved dependencies in 1 packages" in message
    assert "foo-app-2.1-3.el9.x86_64 from AppStream -> " in message
    assert "libfoo >= 1.0" in message and "/bin/sh" in message
    assert "foo-data" not in message.split("packages:")[1].split("Fix")[0]  # satisfied inside AppStream
    log = capsys.readouterr().out
    assert "2 unresolved dependencies in 1 packages" in log and "libfoo >= 1.0" in log


def test_a_repo_outside_the_repoclosure_map_is_refused(config_dir, compose_dir, tmp_path):
    with pytest.raises(AirflowFailException, match=r"repo 'extras' is not in the repoclosure map of .*el9\.yaml"):
        _closure(compose_dir, tmp_path, "extras", "x86_64")


def test_an_unsynced_dependency_tree_is_named(config_dir, compose_dir, tmp_path):
    with pytest.raises(AirflowFailException, match=r"CRB/x86_64/os.*sync them first"):
        _closure(compose_dir, tmp_path, "CRB", "x86_64")


def test_an_arch_the_repo_lacks_is_refused(config_dir, compose_dir, tmp_path):
    with pytest.raises(AirflowFailException, match=r"AppStream in el9 has no arch 'i686'"):
        _closure(compose_dir, tmp_path, "AppStream", "i686")


def test_long_lists_are_cut_politely():
    unresolved = {f"p{i}-1-1.el9.noarch from AppStream": [f"dep{i}"] for i in range(25)}
    text = format_unresolved(unresolved)
    lines = text.splitlines()
    assert len(lines) == 21 and lines[0] == "  p0-1-1.el9.noarch from AppStream -> dep0"
    assert lines[-1] == "  ... and 5 more packages (the task log lists all)"
    assert len(format_unresolved(unresolved, limit=25).splitlines()) == 25
