"""``promote_payload``, ``promote_metadata``, ``promote_deletions``: apply one phase of an approved record.

What the approver saw, and only that, is applied: ``payload`` (everything but
metadata, no deletes), ``metadata`` (repodata files, ``.treeinfo`` and
``CHECKSUM`` files, then ``repomd.xml`` and its signature last, each with
``--delay-updates``), ``deletions`` (the approved list, bounded by
``RELENG_PROMOTION_MAX_DELETE``). Before copying, each phase checks that
staging still holds what was approved. A phase rerun after a crash converges;
a new promotion's report picks up whatever is left.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from releng.core import rsync
from releng.core.fs import human_bytes
from releng.core.modes import public_dirs
from releng.core.promotion.base import Log, PromotionError, quiet
from releng.core.promotion.change_report import check_delete_bound, file_sha256
from releng.core.promotion.lock import production_lock
from releng.core.promotion.record import phase_of
from releng.core.promotion.target import PromotionTarget
from releng.core.promotion.update_file_lists import mark_lists_stale


def _phase_items(record: Mapping, phase: str) -> list[dict]:
    return [i for i in record["items"] if i["phase"] == phase]


def staging_drift(staging: Path, items: Iterable[dict]) -> list[str]:
    """Paths whose staging file is no longer what the report saw (size, mtime, or content for repomd)."""
    drift = []
    for i in items:
        if i["type"] == "d":
            continue
        try:
            st = os.lstat(staging / i["path"])
        except FileNotFoundError:
            drift.append(f"{i['path']} (gone)")
            continue
        if st.st_size != i["size"] or st.st_mtime_ns != i.get("mtime_ns"):
            drift.append(f"{i['path']} (size or mtime changed)")
        elif "sha256" in i and file_sha256(staging / i["path"]) != i["sha256"]:
            drift.append(f"{i['path']} (content changed)")
    return drift


def _files_from(tmpdir: Path, name: str, items: Iterable[dict]) -> Path:
    paths = set()
    for i in items:
        paths.add(i["path"])
        if "link" in i:
            paths.add(i["link"])  # a hard link's partner must be in the same transfer for -H to link them
    path = tmpdir / name
    path.write_bytes(b"".join(os.fsencode(p) + b"\0" for p in sorted(paths)))
    return path



def promote_phase(record: Mapping, phase: str, *, log: Log = quiet, bwlimit_kbps: int | None = None,
                  lock_wait: float = 3600) -> dict:
    """Apply one phase of an approved record to production; returns counts for XCom and the audit."""
    if phase not in rsync.PHASES:
        raise PromotionError(f"unknown phase {phase!r}; phases are {', '.join(rsync.PHASES)}")
    if record["dry_run"]:
        raise PromotionError("this record is a dry run; nothing may be promoted from it")
    target = PromotionTarget.from_dict(record)
    start = time.monotonic()
    groups = [["payload"]] if phase == "payload" else [["metadata"], ["index"]] if phase == "metadata" \
        else [["deletions"]]
    todo = [i for g in groups for p in g for i in _phase_items(record, p)]
    if phase == "deletions":
        check_delete_bound(record)
    if not todo:
        log(f"{phase}: nothing to do")
        return {"phase": phase, "files": 0, "dirs": 0, "bytes": 0, "seconds": 0.0}
    if phase != "deletions":
        drift = staging_drift(target.staging_dir, todo)
        if drift:
            raise PromotionError(
                f"staging changed since the approved report ({len(drift)} paths, e.g. {', '.join(drift[:5])}); "
                f"nothing was copied in the {phase} phase. Run promote_to_production again for a new report "
                "and approval")
    with production_lock(target.state, exclusive=True, holder=f"{record['run_id']} {phase}", wait_seconds=lock_wait,
                         log=log) as lock_fd:
        mark_lists_stale(target)
        if phase == "deletions":
            result = _delete(target, todo, log)
        else:
            public_dirs(target.production_dir)
            result = {"files": 0, "dirs": 0, "bytes": 0}
            work = target.state.phase_work_dir
            shutil.rmtree(work, ignore_errors=True)  # a phase killed before it could remove its lists
            work.mkdir(parents=True)
            try:
                for group in groups:
                    items = [i for p in group for i in _phase_items(record, p)]
                    if not items:
                        continue
                    lst = _files_from(work, group[0], items)
                    argv = rsync.phase_argv(phase, target.staging_dir, target.production_dir, lst,
                                            bwlimit_kbps=bwlimit_kbps)
                    run = _run_with_lock(argv, target.staging_dir, lock_fd, log, f"{phase} ({group[0]})")
                    result["files"] += run.files
                    result["dirs"] += sum(1 for c in run.changes if c.is_dir)
                    result["bytes"] += run.bytes
                    result["leftovers_removed"] = result.get("leftovers_removed", 0) + _remove_rsync_leftovers(
                        target, items)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    result.update(phase=phase, seconds=round(time.monotonic() - start, 3))
    log(f"{phase}: {result['files']} files, {result['dirs']} dirs, {human_bytes(result['bytes'])} "
        f"in {result['seconds']:.1f} s")
    return result


def _run_with_lock(argv: list[str], staging: Path, lock_fd: int, log: Log, what: str) -> rsync.RunResult:
    os.set_inheritable(lock_fd, True)
    try:
        return rsync.run(argv, source_root=staging, log=log, what=what, pass_fds=(lock_fd,))
    except rsync.RsyncError as exc:
        raise PromotionError(f"{exc}\nProduction holds part of this phase; rerun the task to finish it") from None
    finally:
        os.set_inheritable(lock_fd, False)


_RSYNC_TEMP = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9]{6}$")


def _remove_rsync_leftovers(target: PromotionTarget, items: list[dict]) -> int:
    """Remove what a killed rsync left for this phase's files; returns how many entries went.

    That is half-written temp files (``.<name>.XXXXXX``) named after a file of
    this phase that staging does not have, and ``.~tmp~`` directories
    (``--delay-updates``) left empty, so a rerun of the phase leaves production
    equal to staging. The directories' mtimes are given back staging's.
    """
    by_dir: dict[str, set[str]] = {}
    for i in items:
        if i["type"] == "f":
            parent, _, name = i["path"].rpartition("/")
            by_dir.setdefault(parent, set()).add(name)
    removed = 0
    touched: set[str] = set()
    for parent, names in by_dir.items():
        delayed = f"{parent}/.~tmp~" if parent else ".~tmp~"
        for base in (parent, delayed):
            directory = target.production_dir / base if base else target.production_dir
            try:
                entries = os.listdir(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                m = _RSYNC_TEMP.match(entry)
                if not m or m.group("name") not in names or os.path.lexists(target.staging_dir / parent / entry):
                    continue
                if stat.S_ISREG(os.lstat(directory / entry).st_mode):
                    os.unlink(directory / entry)
                    removed += 1
                    touched.add(base)
        leftover = target.production_dir / delayed
        if not os.path.lexists(target.staging_dir / delayed) and leftover.is_dir() and not any(leftover.iterdir()):
            leftover.rmdir()
            removed += 1
            touched.add(parent)
    _copy_dir_times(target, touched)
    return removed


def _deletion_order(item: dict) -> tuple:
    """repomd.xml (and its signature) first, so a repository being removed disappears before its files;
    then deepest first, so directories are empty when their turn comes."""
    return (phase_of(item["path"]) != "index", -item["path"].count("/"), item["path"])


def _delete(target: PromotionTarget, items: list[dict], log: Log) -> dict:
    """Delete exactly the approved paths, deepest first, keeping what staging has regained."""
    prod, staging = target.production_dir, target.staging_dir
    real_prod = os.path.realpath(prod)
    counts = {"files": 0, "dirs": 0, "bytes": 0, "kept": 0, "already_gone": 0}
    parents: set[str] = set()
    last = time.monotonic()
    for n, item in enumerate(sorted(items, key=_deletion_order), 1):
        rel = item["path"]
        if os.path.lexists(staging / rel):
            counts["kept"] += 1
            continue
        path = prod / rel
        parent_rel = os.path.dirname(rel)
        if os.path.realpath(path.parent) != os.path.normpath(os.path.join(real_prod, parent_rel)):
            raise PromotionError(f"{path}: a parent directory is a symlink; refusing to delete through it")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            counts["already_gone"] += 1
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(path)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise PromotionError(f"{path} holds entries the approved report did not list; run the "
                                         "promotion again for a new report") from None
                raise
            counts["dirs"] += 1
        else:
            os.unlink(path)
            counts["files"] += 1
            counts["bytes"] += st.st_size
        parents.add(parent_rel)
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            log(f"deletions: {n} of {len(items)} done")
    _copy_dir_times(target, parents)
    if counts["kept"]:
        log(f"deletions: kept {counts['kept']} paths that staging has again since the report")
    return counts


def _copy_dir_times(target: PromotionTarget, rels: Iterable[str]) -> None:
    """Give production directories staging's mtimes (to the nanosecond), deepest first.

    Creating, renaming and deleting entries moves a directory's mtime; rsync
    only restores it to the second for the directories it lists.
    """
    for rel in sorted({r or "." for r in rels}, key=lambda p: (-p.count("/"), p)):
        try:
            src = os.lstat(target.staging_dir / rel)
            dst = target.production_dir / rel
            if stat.S_ISDIR(src.st_mode) and os.path.isdir(dst) and not os.path.islink(dst):
                os.utime(dst, ns=(src.st_atime_ns, src.st_mtime_ns))
        except FileNotFoundError:
            continue
