"""Sync a finished compose into its staging release directory without ever showing a half-published repo.

Staging is web-served (``/stg``), so the order is the production one: payload
(everything but repodata), then repodata data files, then ``repomd.xml`` and
its signature (each rename atomic; the old data files are still there, so the
old repomd stays valid until it is replaced). Nothing is deleted: the release
directory also holds the packages ``general_updates`` published after earlier
composes, which must stay installable (sync.md §2.3 stages without delete too).
The flags are ``releng.core.rsync.TREE_FLAGS``; the old scripts' "delete
staging metadata first" window (sync.md §2.1 step 4) does not exist here.
"""

from __future__ import annotations

import os
from pathlib import Path

from releng.core.layout import ReleaseTrees
from releng.core.rsync import OUT_FORMAT, TREE_FLAGS, RsyncError

STEPS = ("payload", "repodata", "repomd")
_FILTERS: dict[str, tuple[str, ...]] = {
    "payload": ("--exclude=repodata/",),
    "repodata": ("--include=*/", "--exclude=repodata/repomd.xml*", "--include=repodata/***", "--exclude=*",
                 "--prune-empty-dirs"),
    "repomd": ("--include=*/", "--include=repodata/repomd.xml*", "--exclude=*", "--prune-empty-dirs"),
}


def _root(path: Path, what: str) -> str:
    path = Path(path)
    if not path.is_absolute() or path == Path("/") or not path.name:
        raise RsyncError(f"{what} {str(path)!r} must be an absolute directory other than /; refusing to run rsync")
    return f"{path}/"


def staging_argv(step: str, source: Path, dest: Path) -> list[str]:
    """One step of the staging sync of ``source/`` onto ``dest/``."""
    if step not in _FILTERS:
        raise RsyncError(f"unknown staging step {step!r}; steps: {', '.join(STEPS)}")
    return ["rsync", "--recursive", *TREE_FLAGS, "--stats", OUT_FORMAT, *_FILTERS[step],
            _root(source, "compose directory"), _root(dest, "staging directory")]


def point_links(trees: ReleaseTrees, rc: bool) -> dict[str, str]:
    """Replace ``latest-<major>`` and ``<revision>`` in the staging category atomically (relative links).

    The old script deleted the real release directory instead of the link and, on a rerun, put a new
    link inside the release directory (sync.md §2.3 step 6); a rename over the old link does neither.
    """
    category = trees.staging_category()
    made = {}
    for name, target in trees.staging_links(rc).items():
        link = category / name
        if link.exists() and not link.is_symlink():
            raise RsyncError(f"{link} is a real directory, not a link; move it away before staging {target}")
        tmp = category / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)
        made[name] = target
    return made
