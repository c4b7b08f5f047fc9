"""sync_to_staging of both DAGs: one rsync step runner into a staging release directory, never deleting
(except a SIG's: see :func:`stage_compose`).

Staging is web-served (``/stg``), so a full compose goes in the production
order: payload (everything but repodata), then repodata data files, then
``repomd.xml`` and its signature (each rename atomic; the old data files are
still there, so the old repomd stays valid until it is replaced).
``general_updates`` stages the payload step only: it regenerates the repodata
itself afterwards (``releng.core.updates.update_repodata``). Nothing is ever
deleted: the release directory holds every package published for the point
release, so older builds stay installable. The flags are
``releng.core.rsync.TREE_FLAGS``.

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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from releng.core import rsync
from releng.core.compose.status import FINISHED_STATUSES, read_status
from releng.core.fs import fsync_dir, human_bytes, swap_symlink
from releng.core.layout import ComposeLayout, ReleaseTrees
from releng.core.modes import FILE_MODE, public_dirs
from releng.core.staging.signing import gpg_session, require_key, sign_repomd, signed_by

STEPS = ("payload", "repodata", "repomd")
_FILTERS: dict[str, tuple[str, ...]] = {
    "payload": ("--exclude=repodata/",),
    "repodata": ("--include=*/", "--exclude=repodata/repomd.xml*", "--include=repodata/***", "--exclude=*",
                 "--prune-empty-dirs"),
    "repomd": ("--include=*/", "--include=repodata/repomd.xml*", "--exclude=*", "--prune-empty-dirs"),
}

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


class StagingError(ValueError):
    """What was asked cannot be staged (an unfinished compose, a real directory where a link goes)."""


def deletions_argv(source: Path, dest: Path) -> list[str]:
    """Delete from ``dest/`` what ``source/`` no longer has, copying nothing (``--existing --ignore-existing``):
    the last step of a SIG's staging, whose staging directory is an exact copy of its compose."""
    return ["rsync", "--recursive", *rsync.TREE_FLAGS, "--delete", "--existing", "--ignore-existing", "--stats",
            rsync.OUT_FORMAT, rsync._tree_root(source, "compose directory"), rsync._tree_root(dest, "SIG directory")]


def staging_argv(step: str, source: Path, dest: Path) -> list[str]:
    """One step of the staging sync of ``source/`` onto ``dest/``."""
    if step not in _FILTERS:
        raise rsync.RsyncError(f"unknown staging step {step!r}; steps: {', '.join(STEPS)}")
    return ["rsync", "--recursive", *rsync.TREE_FLAGS, "--stats", rsync.OUT_FORMAT, *_FILTERS[step],
            rsync._tree_root(source, "compose directory"), rsync._tree_root(dest, "staging directory")]


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
    if dest.is_file() and dest.read_bytes() == source.read_bytes() and signed_by(dest, fingerprints, gnupghome):
        return False
    directory = public_dirs(dest.parent)
    tmp = directory / f".{dest.name}.tmp"
    tmp_asc = Path(f"{tmp}.asc")
    try:
        for leftover in (tmp, tmp_asc):
            leftover.unlink(missing_ok=True)
        shutil.copy2(source, tmp)
        os.chmod(tmp, FILE_MODE)
        sign_repomd(tmp, key, gnupghome, fingerprints, label=str(dest.parent.parent))
        os.chmod(tmp_asc, FILE_MODE)
        for path in (tmp, tmp_asc):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
        os.replace(tmp_asc, asc)
        fsync_dir(directory)
    finally:
        for leftover in (tmp, tmp_asc):
            leftover.unlink(missing_ok=True)
    return True


def rsync_step(step: str, source: Path, dest: Path, *, log: Log = _quiet) -> rsync.RunResult:
    """Run one staging step (``dest`` is created 0755 when missing); RsyncError when rsync fails (a rerun
    converges)."""
    public_dirs(dest)
    return rsync.run(staging_argv(step, source, dest), source_root=source, log=log, what=f"staging {step}")


def sync_steps(source: Path, dest: Path, *, signing_key: str = "", gnupghome: Path | None = None,
               log: Log = _quiet) -> dict[str, int]:
    """Stage ``source/`` into ``dest/`` in the order of :data:`STEPS`; the number of changes of each step.

    With ``signing_key`` the repomd step signs with it (see the module doc); a key the keyring lacks raises
    SigningError before anything is copied.
    """
    fingerprints = require_key(signing_key, gnupghome) if signing_key else set()
    totals = {}
    for step in STEPS:
        if step == "repomd" and signing_key:
            started = time.monotonic()
            with gpg_session(gnupghome):  # one agent for every signature, stopped when the step ends
                totals[step] = sum(publish_signed_repomd(source / rel, dest / rel, signing_key, gnupghome,
                                                         fingerprints) for rel in repomd_files(source))
            log(f"staging {step}: {totals[step]} repomd.xml signed with {signing_key} in "
                f"{time.monotonic() - started:.1f} s")
            continue
        totals[step] = len(rsync_step(step, source, dest, log=log).changes)
    return totals


def point_links(trees: ReleaseTrees, rc: bool) -> dict[str, str]:
    """Point ``latest-<major>`` and ``<revision>`` in the staging category at the release dir (relative links,
    each renamed over the old link, never into or over a real directory)."""
    category = trees.staging_category()
    made = {}
    for name, target in trees.staging_links(rc).items():
        link = category / name
        if link.exists() and not link.is_symlink():
            raise StagingError(f"{link} is a real directory, not a link; move it away before staging {target}")
        swap_symlink(target, link)
        made[name] = target
    return made


# --- full_compose --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeStaging:
    """What full_compose's sync_to_staging did: the changes per step and the links it pointed."""

    release: str
    rc: bool
    staging_dir: str
    compose_id: str
    changes: dict[str, int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def event_extra(self, source: str) -> dict:
        """The staging asset event's extra, which promote_to_production reads."""
        return {"release": self.release, "rc": self.rc, "staging_dir": self.staging_dir, "source": source,
                "compose_id": self.compose_id}

    def to_xcom(self, source: str) -> dict:
        return {**self.event_extra(source), "changes": dict(self.changes), "links": dict(self.links)}


def stage_compose(layout: ComposeLayout, trees: ReleaseTrees, rc: bool, *, signing_key: str = "",
                  gnupghome: Path | None = None, log: Log = _quiet) -> ComposeStaging:
    """Stage a finalized compose (every step of :data:`STEPS`) and point the staging links at it.

    The links depend on the channel (``latest-<major>`` and ``<X.Y>``; ``<major>-BETA``; ``<major>-LookAhead``).
    A SIG (``mirror/pub/sig/<major>/<sig>``) is an exact copy of its compose: after the three steps, what the
    compose no longer has is deleted from that directory only (the old sync-to-staging-sig.sh never deleted a
    directory gone from the compose).

    StagingError when the compose's STATUS is not FINISHED(_INCOMPLETE), SigningError when ``signing_key`` is
    not in the keyring (both before anything is copied), RsyncError when rsync fails.
    """
    status = read_status(layout)
    if status not in FINISHED_STATUSES:
        raise StagingError(f"compose {layout.compose_id} STATUS is {status or 'missing'}, not FINISHED: only a "
                           "finalized compose is staged; let finalize_compose run (clear it) and then this task")
    dest = trees.staging_dir(rc)
    changes = sync_steps(layout.published, dest, signing_key=signing_key, gnupghome=gnupghome, log=log)
    if layout.profile.sig:
        # rsync --delete scoped to this SIG's directory, after the new repodata is in place
        result = rsync.run(deletions_argv(layout.published, dest), source_root=layout.published, log=log,
                           what="staging deletions")
        deleted = [c.path for c in result.changes if c.is_delete]
        changes["deletions"] = len(deleted)
        log(f"staging deletions: {len(deleted)} paths gone from the compose removed from {dest}"
            f"{': ' + ', '.join(deleted[:20]) if deleted else ''}")
    links = point_links(trees, rc)
    return ComposeStaging(layout.profile.name, bool(rc), str(dest), layout.compose_id, changes, links)


# --- general_updates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedPackages:
    """What general_updates' sync_to_staging added to the staging release directory."""

    staging_dir: str
    new_files: int
    bytes: int

    def to_xcom(self) -> dict:
        return {"staging_dir": self.staging_dir, "new_files": self.new_files, "bytes": self.bytes}

    @classmethod
    def from_xcom(cls, data: Mapping) -> StagedPackages:
        return cls(str(data["staging_dir"]), int(data["new_files"]), int(data["bytes"]))


def stage_packages(source: Path, dest: Path, *, log: Log = _quiet) -> StagedPackages:
    """Stage the payload step only (packages, no repodata), keeping everything staging already has."""
    result = rsync_step("payload", source, dest, log=log)
    new = [c for c in result.changes if c.is_new and c.file_type == "f"]
    log(f"staged {len(new)} new files ({human_bytes(sum(c.size for c in new))}) into {dest}; "
        f"{result.stats.files.get('reg', 0) - len(new)} files were already there")
    return StagedPackages(str(dest), len(new), result.bytes)
