"""deploy_extra_files: the profile's extra files (EULA, LICENSE, GPG keys...) from its git repository and branch.

Every listed file must exist; they land in ``work/global/extra-files`` (grafted onto the DVDs) and
``compose/metadata``, the work directory replaced as a whole. A failed clone fails the step: a DVD
never goes out without its EULA.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from releng.core.layout import ComposeLayout
from releng.core.modes import make_public_tree
from releng.core.run import ToolError, run, tool_env


class ExtraFilesError(ValueError):
    """The repository's branch lacks a listed file; retrying will not help."""


@dataclass(frozen=True)
class ExtraFiles:
    """What deploy_extra_files placed; ``files`` is 0 when the profile lists none."""

    files: int
    source: str | None = None
    branch: str | None = None

    def to_xcom(self) -> dict:
        return {"files": self.files} if self.source is None else \
            {"files": self.files, "source": self.source, "branch": self.branch}


def extra_files_dir(layout: ComposeLayout) -> Path:
    return layout.work / "global" / "extra-files"


def git_clone_argv(url: str, branch: str, dest: Path) -> list[str]:
    return ["git", "clone", "--quiet", "--depth", "1", "--branch", branch, "--", url, str(dest)]


def deploy_extra_files(layout: ComposeLayout, git_url: str | None = None) -> ExtraFiles:
    """Clone the profile's extra-files branch (from ``git_url`` when given, a mirror) and place its files."""
    extra = layout.profile.extra_files
    if extra is None:
        return ExtraFiles(0)
    url = git_url or extra.git_repo
    dest = extra_files_dir(layout)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extra-files-", dir=dest.parent) as tmp:
        clone = Path(tmp) / "clone"
        try:
            run(git_clone_argv(url, extra.branch, clone), env=tool_env({"GIT_TERMINAL_PROMPT": "0"}))
        except ToolError as exc:
            raise RuntimeError(f"git clone of {url} (branch {extra.branch}) failed: {exc.output}; "
                               "check extra_files in the profile or RELENG_EXTRA_FILES_GIT") from None
        missing = [rel for rel in extra.files if not (clone / rel).is_file()]
        if missing:
            raise ExtraFilesError(f"{url} branch {extra.branch} lacks {', '.join(missing)} "
                                  f"(listed under extra_files in {layout.profile.path})")
        staged = Path(tmp) / "files"
        staged.mkdir()
        for rel in extra.files:
            shutil.copyfile(clone / rel, staged / Path(rel).name)
        make_public_tree(staged)  # TemporaryDirectory and the umask would leave them private
        metadata_copy = Path(tmp) / "metadata"
        shutil.copytree(staged, metadata_copy)
        old = Path(tmp) / "old"
        if dest.exists():
            dest.rename(old)
        staged.rename(dest)
        for path in metadata_copy.iterdir():
            os.replace(path, layout.metadata / path.name)
    return ExtraFiles(len(extra.files), url, extra.branch)
