"""Sync a finished compose into its staging release directory without ever showing a half-published repo.

Staging is web-served (``/stg``), so the order is the production one: payload
(everything but repodata), then repodata data files, then ``repomd.xml`` and
its signature (each rename atomic; the old data files are still there, so the
old repomd stays valid until it is replaced). Nothing is deleted: the release
directory also holds the packages ``general_updates`` published after earlier
composes, which must stay installable (sync.md §2.3 stages without delete too).
The flags are ``releng.core.rsync.TREE_FLAGS``; the old scripts' "delete
staging metadata first" window (sync.md §2.1 step 4) does not exist here.

With a release signing key (``RELENG_REPO_SIGNING_KEY``), the repomd step does
not copy the build system's ``repomd.xml.asc`` (made with any key the profile
lists) but signs each ``repomd.xml`` with the release key, the key the
promotion checks: the compose's ``repomd.xml`` is copied under a temporary name
beside the published one, signed and the signature verified, then renamed into
place with its signature renamed right after it, so a client never sees a
signature that does not match its ``repomd.xml`` for longer than one rename.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from releng.core import updates
from releng.core.layout import ReleaseTrees
from releng.core.modes import FILE_MODE, public_dirs
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


def repomd_files(tree: Path) -> list[Path]:
    """Every ``<repo>/repodata/repomd.xml`` under ``tree`` (symlinks not followed), relative to it, sorted."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(tree):
        if Path(dirpath).name == "repodata" and "repomd.xml" in filenames:
            found.append(Path(dirpath, "repomd.xml").relative_to(tree))
    return sorted(found)


def publish_signed_repomd(source: Path, dest: Path, key: str, gnupghome: Path | None,
                          fingerprints: set[str]) -> bool:
    """Publish ``source`` (a repomd.xml) at ``dest`` with a ``repomd.xml.asc`` made with ``key``.

    Both are written under temporary names in dest's directory and the signature is verified first; then
    repomd.xml is renamed into place and its signature right after it. False (nothing written) when
    ``dest`` already has source's bytes and a signature by the key.
    """
    source, dest = Path(source), Path(dest)
    asc = dest.with_name("repomd.xml.asc")
    if (dest.is_file() and dest.read_bytes() == source.read_bytes()
            and updates.signed_by(dest, fingerprints, gnupghome)):
        return False
    directory = public_dirs(dest.parent)
    tmp = directory / f".{dest.name}.tmp"
    tmp_asc = Path(f"{tmp}.asc")
    try:
        for leftover in (tmp, tmp_asc):
            leftover.unlink(missing_ok=True)
        shutil.copy2(source, tmp)
        os.chmod(tmp, FILE_MODE)
        updates.sign_repomd(tmp, key, gnupghome, fingerprints, label=str(dest.parent.parent))
        os.chmod(tmp_asc, FILE_MODE)
        for path in (tmp, tmp_asc):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
        os.replace(tmp_asc, asc)
    finally:
        for leftover in (tmp, tmp_asc):
            leftover.unlink(missing_ok=True)
    return True


def sync_compose(compose: Path, dest: Path, *, signing_key: str = "", gnupghome: Path | None = None,
                 log: Callable[[str], None] = lambda _m: None) -> dict[str, int]:
    """Stage ``compose/`` into ``dest/`` in the order of :data:`STEPS`; the changes of each step.

    With ``signing_key`` the repomd step signs with it (see the module doc); a key the keyring lacks
    raises UpdatesError before anything is copied. An rsync failure raises RsyncError (a rerun converges).
    """
    fingerprints: set[str] = set()
    if signing_key:
        fingerprints = updates.key_fingerprints(signing_key, gnupghome)
        if not fingerprints:
            raise updates.UpdatesError(updates.signing_key_problem(signing_key, gnupghome))
    public_dirs(dest)
    totals = {}
    for step in STEPS:
        started = time.monotonic()
        if step == "repomd" and signing_key:
            totals[step] = sum(publish_signed_repomd(compose / rel, dest / rel, signing_key, gnupghome, fingerprints)
                               for rel in repomd_files(compose))
            log(f"staging {step}: {totals[step]} repomd.xml signed with {signing_key} in "
                f"{time.monotonic() - started:.1f} s")
            continue
        argv = staging_argv(step, compose, dest)
        result = subprocess.run(argv, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RsyncError(f"rsync {step} into {dest} failed (exit {result.returncode}): "
                             f"{result.stderr.strip()[-1500:]}; rerun the task, it converges")
        totals[step] = sum(1 for line in result.stdout.splitlines() if "\t" in line)
        log(f"staging {step}: {totals[step]} changes in {time.monotonic() - started:.1f} s")
    return totals


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
