"""Fixture git repository for the profiles' ``extra_files`` (EULA, LICENSE, keys...), one branch per profile.

Part of the local stack: the real repositories (git.resf.org) are out of reach, so the stack points
RELENG_EXTRA_FILES_GIT at this one. Every file says it is a fixture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from releng.core.profile import ReleaseProfile

_GIT_ENV = {"GIT_AUTHOR_NAME": "Fixture", "GIT_AUTHOR_EMAIL": "fixture@releng.invalid",
            "GIT_COMMITTER_NAME": "Fixture", "GIT_COMMITTER_EMAIL": "fixture@releng.invalid",
            "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z",
            "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={**os.environ, **_GIT_ENV})


def build(root: Path, profiles: Sequence[ReleaseProfile], key_dir: Path | None = None) -> Path:
    """A git repo with one branch per profile's ``extra_files.branch`` holding its listed files."""
    repo = Path(root).resolve() / "rocky-release.git"
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "fixture-base")
    (repo / "README").write_text("Fixture extra files of the local stack (not the distribution's).\n")
    _git(repo, "add", "README")
    _git(repo, "commit", "-q", "-m", "fixture base")
    for p in profiles:
        if p.extra_files is None:
            continue
        _git(repo, "checkout", "-q", "-B", p.extra_files.branch, "fixture-base")
        for rel in p.extra_files.files:
            path = repo / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            key = key_dir / Path(rel).name if key_dir else None
            path.write_text(key.read_text() if key and key.is_file() else
                            f"{Path(rel).name} of {p.fullname} (local stack fixture, not the real file)\n")
            _git(repo, "add", rel)
        _git(repo, "commit", "-q", "-m", f"extra files of {p.name}")
    _git(repo, "checkout", "-q", "fixture-base")
    return repo
