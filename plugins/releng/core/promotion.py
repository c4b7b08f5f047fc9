"""Promotion of one release from staging to production (what sync-to-prod.sh did, safely).

The steps, each a function the ``promote_to_production`` tasks call:

1. :func:`resolve_target`: the release's staging and production directories
   (``ReleaseTrees``: ``9.7-RC1`` in staging is ``9.7`` in production), refused
   before anything runs when the release is unknown or a path is unsafe.
2. :func:`make_report`: one ``rsync --dry-run --itemize-changes`` over the two
   trees gives every path to copy and to delete; primary metadata of the
   repositories whose repodata changed gives the packages added, updated and
   removed. The report is stored as JSON in a promotion record with its sha256
   digest, and rendered as Markdown for the approver.
3. :func:`promote_phase`: what the approver saw, and only that, is applied:
   ``payload`` (everything but metadata, no deletes), ``metadata`` (repodata
   files, ``.treeinfo`` and ``CHECKSUM`` files, then ``repomd.xml`` and its
   signature last, each with ``--delay-updates``), ``deletions`` (the approved
   list, bounded by ``RELENG_PROMOTION_MAX_DELETE``). Before copying, each phase
   checks that staging still holds what was approved. A phase rerun after a
   crash converges; a new promotion's report picks up whatever is left.
4. :func:`verify_production` and :func:`update_file_lists`.
5. :func:`append_audit`: one fsync'd JSON line per promotion.

Promotion state lives beside production, outside every published category, in
``<production_root>/.releng/``: the lock file, ``promotions/<run>.json``
records, ``promotion-log.jsonl``, the verification cache and the marker that
says the file lists are stale. Writers hold an exclusive ``flock`` on the lock
file (readers a shared one); the kernel drops it when the holder dies, and the
rsync child inherits it, so a killed task's orphaned rsync still excludes a
rerun until it exits.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from releng.core import filelist, repoverify, rsync
from releng.core.layout import LayoutError, ReleaseTrees
from releng.core.modes import public_dirs
from releng.core.profile import find_profile, profile_names
from releng.core.settings import Settings

RECORD_VERSION = 1
STATE_DIR = ".releng"
METADATA_NAMES = frozenset({".treeinfo", ".discinfo", "CHECKSUM", "media.repo"})
MARKDOWN_ROWS = 40
MARKDOWN_PACKAGES = 25
Log = Callable[[str], None]


class PromotionError(RuntimeError):
    """A promotion cannot go on; the message says what is wrong and what to do."""


def _quiet(_msg: str) -> None:
    pass


def _slug(value: str) -> str:
    """A file name for any run id or path: safe characters plus a short hash, so distinct values stay distinct."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._") or "x"
    return f"{safe[:80]}-{hashlib.sha1(value.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class StateDir:
    """``<production_root>/.releng``: promotion state that mirrors never see."""

    root: Path

    @property
    def lock_file(self) -> Path:
        return self.root / "promotion.lock"

    @property
    def log_file(self) -> Path:
        return self.root / "promotion-log.jsonl"

    def record_file(self, run_id: str) -> Path:
        return self.root / "promotions" / f"{_slug(run_id)}.json"

    def verify_cache(self, production_dir: Path) -> Path:
        return self.root / "verify-cache" / f"{_slug(str(production_dir))}.json"

    def lists_stale_marker(self, category_dir: Path) -> Path:
        return self.root / f"lists-stale-{_slug(str(category_dir))}"


# --- target ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionTarget:
    """One release's staging directory and the production directory it becomes."""

    release: str
    rc: bool
    revision: str
    staging_dir: Path
    production_dir: Path
    production_category: Path
    category: str
    state: StateDir

    @classmethod
    def from_dict(cls, data: Mapping) -> PromotionTarget:
        """The target a report or record names (what the later tasks of a promotion act on)."""
        production_dir, category = Path(data["production_dir"]), Path(data["production_category"])
        if category not in production_dir.parents:
            raise PromotionError(f"production {production_dir} is outside its category {category}; the promotion "
                                 "record is damaged: run the promotion again")
        return cls(data["release"], data["rc"], data["revision"], Path(data["staging_dir"]), production_dir,
                   category, data["category"], StateDir(Path(data["state_dir"])))

    def as_dict(self) -> dict:
        return {"release": self.release, "rc": self.rc, "revision": self.revision,
                "staging_dir": str(self.staging_dir), "production_dir": str(self.production_dir),
                "production_category": str(self.production_category), "category": self.category,
                "state_dir": str(self.state.root)}


def release_from_run(params: Mapping, event_extras: Sequence[Mapping]) -> tuple[str, bool]:
    """(release, rc) of a run: from the triggering staging Asset events, else from the params.

    Events for several releases are refused: one promotion is approved per release.
    """
    if event_extras:
        releases = sorted({str(e.get("release")) for e in event_extras})
        if len(releases) != 1:
            raise PromotionError(f"the staging Asset events name several releases ({', '.join(releases)}); "
                                 "trigger promote_to_production once per release with the release param")
        rc = event_extras[-1].get("rc", False)
        if not isinstance(rc, bool):
            raise PromotionError(f"the staging Asset event's rc is {rc!r}, not true/false; fix the DAG that emitted it")
        return releases[0], rc
    release = params.get("release")
    if not release:
        raise PromotionError("no release chosen: trigger promote_to_production with the release param "
                             "(e.g. el9), or let a staging Asset event trigger it")
    rc = params.get("rc", False)
    if not isinstance(rc, bool):
        raise PromotionError(f"param rc is {rc!r}; use true or false")
    return str(release), rc


def check_event_staging_dir(target: PromotionTarget, event_extras: Sequence[Mapping]) -> None:
    """The latest staging Asset event, when it names its staging directory, must name the one promoted."""
    named = event_extras[-1].get("staging_dir") if event_extras else None
    if named and os.path.realpath(named) != os.path.realpath(target.staging_dir):
        raise PromotionError(f"the staging Asset event says {named} was staged, but {target.release} "
                             f"(rc={target.rc}) promotes {target.staging_dir}; the DAG that staged it and this one "
                             "disagree on the RELENG_STAGING_ROOT setting or the release directory")


def resolve_target(release: str, rc: bool, cfg: Settings) -> PromotionTarget:
    """Check the release and both directories before anything touches a tree."""
    known = profile_names(cfg.config_dir)
    if not isinstance(release, str) or release not in known:
        raise PromotionError(f"unknown release {release!r}; known releases: {', '.join(known) or 'none'} "
                             f"(profiles in {cfg.config_dir})")
    profile = find_profile(release, cfg.config_dir)
    trees = ReleaseTrees(profile, Path(cfg.staging_root), Path(cfg.production_root))
    try:
        staging_dir, production_dir = trees.staging_dir(rc), trees.production_dir()
        staging_category, production_category = trees.staging_category(), trees.production_category()
    except LayoutError as exc:
        raise PromotionError(f"release {release}: {exc}; fix the profile or the RELENG_*_ROOT settings") from None
    if not staging_dir.is_dir():
        raise PromotionError(f"staging directory {staging_dir} does not exist; stage {release} first "
                             f"(full_compose or general_updates){'' if rc else ', or promote with rc=true'}")
    real_staging = Path(os.path.realpath(staging_dir))
    real_category = Path(os.path.realpath(staging_category))
    if real_category not in real_staging.parents:
        raise PromotionError(f"staging directory {staging_dir} resolves to {real_staging}, outside the staging "
                             f"category {real_category}; refusing to promote from there")
    if production_dir.is_symlink():
        raise PromotionError(f"production directory {production_dir} is a symlink; a release directory in "
                             "production must be a real directory: replace the link by hand, then promote")
    real_production = Path(os.path.realpath(production_dir))
    if (real_production == real_staging or real_staging in real_production.parents
            or real_production in real_staging.parents):
        raise PromotionError(f"staging {real_staging} and production {real_production} overlap; "
                             "RELENG_STAGING_ROOT and RELENG_PRODUCTION_ROOT must be separate trees")
    return PromotionTarget(release, rc, profile.revision, staging_dir, production_dir, production_category,
                           profile.shortname.lower(), StateDir(Path(cfg.production_root) / STATE_DIR))


# --- lock --------------------------------------------------------------------------------------


@contextmanager
def production_lock(state: StateDir, *, exclusive: bool, holder: str, wait_seconds: float = 3600,
                    log: Log = _quiet) -> Iterator[int]:
    """Hold the production tree's flock; yields the fd (pass it to children that write production)."""
    state.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(state.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline, next_note = time.monotonic() + wait_seconds, 0.0
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                owner = _lock_owner(state)
                if time.monotonic() >= deadline:
                    raise PromotionError(f"production tree is locked ({state.lock_file}) by {owner}; waited "
                                         f"{wait_seconds:.0f} s. Wait for that promotion to finish; a crashed "
                                         "holder releases the lock when its processes exit") from None
                if time.monotonic() >= next_note:
                    log(f"waiting for the production lock held by {owner}")
                    next_note = time.monotonic() + 60
                time.sleep(0.5)
        if exclusive:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"holder": holder, "pid": os.getpid(), "host": socket.gethostname(),
                                      "since": utc_now()}).encode(), 0)
        yield fd
    finally:
        os.close(fd)


def _lock_owner(state: StateDir) -> str:
    try:
        info = json.loads(state.lock_file.read_text() or "{}")
        return f"{info.get('holder')} (pid {info.get('pid')} on {info.get('host')} since {info.get('since')})"
    except (OSError, ValueError):
        return "another process"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- change report -----------------------------------------------------------------------------


def phase_of(path: str) -> str:
    """``payload``, ``metadata`` (repodata files, treeinfo, CHECKSUM) or ``index`` (repomd.xml and signature).

    Metadata names other files, so it lands after them; ``repomd.xml`` names
    the repodata files, so it lands last.
    """
    parts = path.split("/")
    name = parts[-1]
    if "repodata" in parts[:-1]:
        return "index" if name.startswith("repomd.xml") else "metadata"
    if name == "repodata":
        return "metadata"
    if name in METADATA_NAMES or name.startswith("CHECKSUM") or name.endswith(".CHECKSUM"):
        return "metadata"
    return "payload"


def _sha256(path: Path) -> str:
    return repoverify.file_hexdigest(path, "sha256")


def _repo_label(rel: str) -> dict:
    parts = rel.split("/") if rel != "." else []
    repo = parts[0] if parts else "."
    if len(parts) > 1 and parts[1] == "source":
        return {"path": rel, "repo": repo, "arch": "source", "tree": "/".join(parts[2:])}
    return {"path": rel, "repo": repo, "arch": parts[1] if len(parts) > 1 else "", "tree": "/".join(parts[2:])}


class _RepoIndex:
    """Which directory (staging or production) is a repository root; memoised per directory."""

    def __init__(self, *roots: Path):
        self.roots = roots
        self.memo: dict[str, bool] = {}

    def is_repo(self, rel: str) -> bool:
        if rel not in self.memo:
            self.memo[rel] = any((r / rel / "repodata").is_dir() for r in self.roots)
        return self.memo[rel]

    def repo_of(self, path: str) -> str | None:
        parts = path.split("/")
        if "repodata" in parts:
            i = parts.index("repodata")
            return "/".join(parts[:i]) or "."
        for i in range(len(parts) - 1, 0, -1):
            rel = "/".join(parts[:i])
            if self.is_repo(rel):
                return rel
        return None


REPORT_ATTEMPTS = 3
REPORT_RETRY_SECONDS = 2.0


class _StagingChanged(Exception):
    """Staging changed under the report: a path the dry run listed vanished, or a repomd.xml was replaced."""


def make_report(target: PromotionTarget, *, run_id: str, dry_run: bool, allow_large_delete: bool,
                max_delete: float, signing_key: str = "", gnupghome: Path | None = None,
                log: Log = _quiet) -> dict:
    """Compare staging with production and describe the promotion; neither tree is written.

    The staging repositories whose metadata changed are verified first (named
    files, checksums, and the signature when ``signing_key`` is set): broken or
    unsigned metadata is refused before anyone is asked to approve it.

    Staging can change while the report is taken (``general_updates`` swaps a
    repository's metadata: temporary names appear and vanish, the superseded
    files are deleted, ``repomd.xml`` is replaced). Then the whole report is
    taken again, up to ``REPORT_ATTEMPTS`` times; a PromotionError says so when
    staging never holds still.
    """
    for attempt in range(1, REPORT_ATTEMPTS + 1):
        try:
            return _report_once(target, run_id=run_id, dry_run=dry_run, allow_large_delete=allow_large_delete,
                                max_delete=max_delete, signing_key=signing_key, gnupghome=gnupghome, log=log)
        except _StagingChanged as exc:
            if attempt == REPORT_ATTEMPTS:
                raise PromotionError(f"staging changed while the report was being made ({exc}; tried "
                                     f"{REPORT_ATTEMPTS} times); run the promotion again") from None
            log(f"staging changed while the report was being made ({exc}); taking the report again")
            time.sleep(REPORT_RETRY_SECONDS * attempt)
    raise AssertionError("unreachable")


def _index_moved(staging: Path, items: Iterable[dict]) -> str | None:
    """The first repomd.xml (or signature) the report read that staging no longer holds as it was."""
    for i in items:
        if i["phase"] != "index" or "sha256" not in i:
            continue
        try:
            st = os.lstat(staging / i["path"])
            if (st.st_mtime_ns, st.st_size) == (i["mtime_ns"], i["size"]) and _sha256(staging / i["path"]) == \
                    i["sha256"]:
                continue
        except FileNotFoundError:
            pass
        return i["path"]
    return None


def _report_once(target: PromotionTarget, *, run_id: str, dry_run: bool, allow_large_delete: bool,
                 max_delete: float, signing_key: str, gnupghome: Path | None, log: Log) -> dict:
    """One attempt of :func:`make_report`; _StagingChanged when staging changed under it."""
    staging, production = target.staging_dir, target.production_dir
    with production_lock(target.state, exclusive=False, holder=run_id, log=log):
        try:
            result = rsync.run(rsync.dry_run_argv(staging, production), source_root=staging, log=log,
                               what="dry run")
        except rsync.RsyncError as exc:
            if exc.code == rsync.VANISHED:
                raise _StagingChanged("files vanished during the rsync dry run") from None
            raise
    items: list[dict] = []
    for c in result.changes:
        item = {"path": c.path, "code": c.code, "type": c.file_type, "size": c.size,
                "phase": "deletions" if c.is_delete else phase_of(c.path)}
        if c.link and c.code.startswith("h"):
            item["link"] = c.link
        if c.is_delete:
            try:
                st = os.lstat(production / c.path)
                item["type"] = "d" if stat.S_ISDIR(st.st_mode) else "L" if stat.S_ISLNK(st.st_mode) else "f"
                item["size"] = 0 if item["type"] == "d" else st.st_size
            except FileNotFoundError:
                pass
        else:
            try:
                st = os.lstat(staging / c.path)
                item["mtime_ns"] = st.st_mtime_ns
                item["size"] = st.st_size
                if item["phase"] == "index" and stat.S_ISREG(st.st_mode):
                    item["sha256"] = _sha256(staging / c.path)
            except FileNotFoundError:
                raise _StagingChanged(f"{c.path} vanished after the dry run listed it") from None
        items.append(item)
    items.sort(key=lambda i: i["path"])
    totals = _totals(items)
    bound = delete_bound(result.stats, totals["deletions"]["files"], max_delete, allow_large_delete,
                         production_exists=production.is_dir(), superseded=superseded_metadata(items))
    try:
        _verify_changed_staging(target, _changed_repos(items), signing_key, gnupghome, log)
        repos = _repo_changes(target, items, log)
    except (PromotionError, OSError) as exc:
        moved = _index_moved(staging, items)
        if moved:
            raise _StagingChanged(f"{moved} was replaced while the report read the metadata") from None
        if isinstance(exc, FileNotFoundError):
            raise _StagingChanged(f"{exc.filename} vanished while the report read the metadata") from None
        raise
    if moved := _index_moved(staging, items):
        raise _StagingChanged(f"{moved} was replaced while the report read the metadata")
    record = {
        "version": RECORD_VERSION, "run_id": run_id, "created_at": utc_now(), **target.as_dict(),
        "dry_run": dry_run, "allow_large_delete": allow_large_delete, "totals": totals,
        "delete_bound": bound, "repos": repos["repos"], "other": repos["other"], "items": items,
    }
    record["totals"]["packages"] = {k: sum(r[k + "_count"] for r in record["repos"])
                                    for k in ("added", "updated", "removed")}
    record["digest"] = record_digest(record)
    t = record["totals"]
    log(f"report: {t['payload']['files'] + t['metadata']['files']} files "
        f"({rsync.human_bytes(t['payload']['bytes'] + t['metadata']['bytes'])}) to copy, "
        f"{t['deletions']['files']} to delete, {len(record['repos'])} repositories changed; "
        f"digest {record['digest']}")
    return record


def _totals(items: Iterable[dict]) -> dict:
    out = {p: {"files": 0, "dirs": 0, "bytes": 0} for p in ("payload", "metadata", "deletions")}
    for i in items:
        bucket = out["deletions" if i["phase"] == "deletions" else "payload" if i["phase"] == "payload"
                     else "metadata"]
        if i["type"] == "d":
            bucket["dirs"] += 1
        else:
            bucket["files"] += 1
            if i["phase"] == "deletions" or i["code"].startswith(">f"):
                bucket["bytes"] += i["size"]
    return out


def superseded_metadata(items: Iterable[Mapping]) -> int:
    """Files the promotion deletes from a ``repodata/`` directory whose ``repomd.xml`` it replaces.

    Every metadata refresh renames the repodata files (their names carry their
    checksums), so a routine update deletes the previous ones: they are
    replaced, not lost. A deleted or unchanged ``repomd.xml`` supersedes
    nothing, and ``repomd.xml`` files themselves always count.
    """
    items = list(items)
    replaced = {i["path"][:-len("repomd.xml")] for i in items
                if i["phase"] == "index" and i["code"].startswith(">f")
                and (i["path"] == "repodata/repomd.xml" or i["path"].endswith("/repodata/repomd.xml"))}
    return sum(1 for i in items if i["phase"] == "deletions" and i["type"] != "d"
               and i["path"][:i["path"].rfind("/") + 1] in replaced
               and not i["path"].rsplit("/", 1)[-1].startswith("repomd.xml"))


def delete_bound(stats: rsync.Stats, delete_files: int, max_delete: float, allowed: bool, *,
                 production_exists: bool, superseded: int = 0) -> dict:
    """The share of production's files (non-directories) the promotion deletes, against the limit.

    Production's file count comes from the dry run: staging's files, minus
    those it would create, plus those it would delete. ``superseded`` repodata
    files (:func:`superseded_metadata`) are deleted but not counted.
    """
    production_files = 0
    if production_exists:
        production_files = stats.non_dirs("files") - stats.non_dirs("created") + stats.non_dirs("deleted")
    counted = delete_files - superseded
    share = counted / production_files if production_files else 0.0
    return {"production_files": production_files, "delete_files": delete_files, "superseded_metadata": superseded,
            "counted_files": counted, "share": round(share, 6), "max_share": max_delete,
            "exceeded": share > max_delete, "allowed": allowed}


def check_delete_bound(record: Mapping) -> None:
    """Refuse a promotion whose deletions exceed the bound, unless the run allows large deletes."""
    b = record["delete_bound"]
    if b["exceeded"] and not record["allow_large_delete"]:
        superseded = b.get("superseded_metadata", 0)
        raise PromotionError(
            f"{b.get('counted_files', b['delete_files'])} of {b['production_files']} production files "
            f"({b['share']:.1%}) would be deleted from {record['production_dir']}"
            f"{f' (not counting {superseded} superseded repodata files)' if superseded else ''}, above "
            f"RELENG_PROMOTION_MAX_DELETE={b['max_share']:.0%}. Check that staging {record['staging_dir']} is "
            "complete; if the deletions are intended, trigger the promotion again with allow_large_delete=true")


def _changed_repos(items: Iterable[dict]) -> set[str]:
    """Repositories whose repomd.xml the promotion copies or deletes."""
    return {p.rsplit("/repodata/", 1)[0] if "/repodata/" in p else "."
            for p in (i["path"] for i in items) if p.endswith("repodata/repomd.xml")}


def _verify_changed_staging(target: PromotionTarget, repos: set[str], signing_key: str, gnupghome: Path | None,
                            log: Log) -> None:
    present = sorted(r for r in repos if (target.staging_dir / r / "repodata" / "repomd.xml").is_file())
    if not present:
        return
    problems: list[str] = []
    cache = repoverify.VerifyCache(None)
    checker = repoverify.SignatureChecker(signing_key, gnupghome) if signing_key else None
    try:
        for rel in present:
            problems += repoverify.verify_repo(target.staging_dir / rel, cache)[0]
            if checker is not None and (bad := checker.problem(target.staging_dir / rel / "repodata" / "repomd.xml")):
                problems.append(bad)
    finally:
        if checker is not None:
            checker.close()
    if problems:
        shown = "\n".join(problems[:30])
        raise PromotionError(f"staging metadata is not fit to promote ({len(problems)} problems); regenerate or "
                             f"re-sign it in staging, then trigger the promotion again:\n{shown}")
    log(f"verified the metadata of {len(present)} changed staging repositories"
        f"{' and their signatures' if checker else ''}")


def _repo_changes(target: PromotionTarget, items: list[dict], log: Log) -> dict:
    index = _RepoIndex(target.staging_dir, target.production_dir)
    repos: dict[str, dict] = {}
    other = {"files": 0, "bytes": 0, "deletes": 0}
    for i in items:
        rel = index.repo_of(i["path"])
        bucket = other if rel is None else repos.setdefault(rel, {**_repo_label(rel), "files": 0, "bytes": 0,
                                                                  "deletes": 0})
        if i["phase"] == "deletions":
            bucket["deletes"] += i["type"] != "d"
        elif i["type"] != "d":
            bucket["files"] += 1
            bucket["bytes"] += i["size"] if i["code"].startswith(">f") else 0
    changed_metadata = _changed_repos(items)
    for rel, info in sorted(repos.items()):
        diff = repoverify.PackageChanges()
        if rel in changed_metadata:
            try:
                before = repoverify.read_packages(target.production_dir / rel)
                after = repoverify.read_packages(target.staging_dir / rel)
            except repoverify.RepoError as exc:
                raise PromotionError(f"{exc}; fix the repository in staging before promoting") from None
            diff = repoverify.package_changes(before, after)
        info["added"] = [str(n) for n in diff.added]
        info["updated"] = [[str(a), str(b)] for a, b in diff.updated]
        info["removed"] = [str(n) for n in diff.removed]
        for k in ("added", "updated", "removed"):
            info[k + "_count"] = len(info[k])
    if changed_metadata:
        log(f"compared primary metadata of {len(changed_metadata)} repositories")
    return {"repos": [repos[k] for k in sorted(repos)], "other": other}


def record_digest(record: Mapping) -> str:
    """sha256 of the record's canonical JSON (sorted keys, no spaces), without its own digest."""
    body = {k: v for k, v in record.items() if k != "digest"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()


def write_record(target: PromotionTarget, record: Mapping) -> Path:
    path = target.state.record_file(record["run_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(record, sort_keys=True, indent=1, ensure_ascii=False))
    return path


def load_record(path: str | Path, digest: str) -> dict:
    """The promotion record, refused when it is not the one that was approved."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8", errors="surrogateescape"))
    except (OSError, ValueError) as exc:
        raise PromotionError(f"cannot read the promotion record {path} ({exc}); run the promotion again") from None
    if record.get("digest") != digest or record_digest(record) != digest:
        raise PromotionError(f"promotion record {path} does not match the approved digest {digest}; it was "
                             "changed after the report. Run the promotion again for a new report and approval")
    return record


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def subject(record: Mapping) -> str:
    t = record["totals"]
    src = Path(record["staging_dir"]).name
    return (f"Promote {record['release']} {src} to production {Path(record['production_dir']).name}: "
            f"{t['packages']['added']} added, {t['packages']['updated']} updated, {t['packages']['removed']} "
            f"removed packages, {t['deletions']['files']} files deleted")


def markdown(record: Mapping, *, rows: int = MARKDOWN_ROWS, packages: int = MARKDOWN_PACKAGES) -> str:
    """The approval request body: totals, the delete bound, a per repository table, the first package changes."""
    t, b = record["totals"], record["delete_bound"]
    h = rsync.human_bytes
    lines = [
        f"**Release** `{record['release']}` · **staging** `{record['staging_dir']}` → "
        f"**production** `{record['production_dir']}`",
        "",
        f"**Report digest** `{record['digest']}` (record `{record['run_id']}`)",
        "",
        "| phase | files | dirs | bytes |",
        "|---|---:|---:|---:|",
        f"| copy payload | {t['payload']['files']} | {t['payload']['dirs']} | {h(t['payload']['bytes'])} |",
        f"| copy metadata | {t['metadata']['files']} | {t['metadata']['dirs']} | {h(t['metadata']['bytes'])} |",
        f"| delete | {t['deletions']['files']} | {t['deletions']['dirs']} | {h(t['deletions']['bytes'])} |",
        "",
    ]
    verdict = ("**ABOVE THE BOUND**" + (" (allowed by allow_large_delete)" if b["allowed"] else " (will be refused)")
               if b["exceeded"] else "within the bound")
    superseded = b.get("superseded_metadata", 0)
    not_counted = (f", {superseded} of them superseded repodata files of repositories whose repomd.xml is "
                   "replaced, not counted" if superseded else "")
    lines += [f"Deletes {b['delete_files']} of {b['production_files']} production files{not_counted} "
              f"({b['share']:.1%}; bound {b['max_share']:.0%}): {verdict}.", ""]
    p = t["packages"]
    lines += [f"**Packages**: {p['added']} added, {p['updated']} updated, {p['removed']} removed "
              f"in {len(record['repos'])} repositories.", ""]
    repos = record["repos"]
    if repos:
        lines += ["| repository | arch | tree | added | updated | removed | files | bytes | deletes |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in repos[:rows]:
            lines.append(f"| {r['repo']} | {r['arch']} | {r['tree']} | {r['added_count']} | {r['updated_count']} "
                         f"| {r['removed_count']} | {r['files']} | {h(r['bytes'])} | {r['deletes']} |")
        if len(repos) > rows:
            rest = repos[rows:]
            lines.append(f"| … {len(rest)} more | | | {sum(r['added_count'] for r in rest)} "
                         f"| {sum(r['updated_count'] for r in rest)} | {sum(r['removed_count'] for r in rest)} "
                         f"| {sum(r['files'] for r in rest)} | {h(sum(r['bytes'] for r in rest))} "
                         f"| {sum(r['deletes'] for r in rest)} |")
        o = record["other"]
        if o["files"] or o["deletes"]:
            lines.append(f"| (outside repositories) | | | | | | {o['files']} | {h(o['bytes'])} | {o['deletes']} |")
        lines.append("")
    for key, title in (("updated", "Updated"), ("added", "Added"), ("removed", "Removed")):
        names = []
        for r in repos:
            where = f"{r['repo']} {r['arch']}".strip()
            for entry in r[key]:
                names.append(f"{entry[0]} → {entry[1]} ({where})" if key == "updated" else f"{entry} ({where})")
        if names:
            shown = ", ".join(f"`{n}`" for n in names[:packages])
            more = f" … and {len(names) - packages} more (see the record)" if len(names) > packages else ""
            lines += [f"**{title}**: {shown}{more}", ""]
    if record["dry_run"]:
        lines += ["_Dry run: nothing will be promoted._", ""]
    return "\n".join(lines)


# --- phases ------------------------------------------------------------------------------------


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
        elif "sha256" in i and _sha256(staging / i["path"]) != i["sha256"]:
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


def _mark_lists_stale(target: PromotionTarget) -> None:
    marker = target.state.lists_stale_marker(target.production_category)
    if not marker.exists():
        _atomic_write(marker, utc_now() + "\n")


def promote_phase(record: Mapping, phase: str, *, log: Log = _quiet, bwlimit_kbps: int | None = None,
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
        _mark_lists_stale(target)
        if phase == "deletions":
            result = _delete(target, todo, log)
        else:
            public_dirs(target.production_dir)
            result = {"files": 0, "dirs": 0, "bytes": 0}
            with tempfile.TemporaryDirectory(prefix="releng-promote-") as tmp:
                for group in groups:
                    items = [i for p in group for i in _phase_items(record, p)]
                    if not items:
                        continue
                    lst = _files_from(Path(tmp), group[0], items)
                    argv = rsync.phase_argv(phase, target.staging_dir, target.production_dir, lst,
                                            bwlimit_kbps=bwlimit_kbps)
                    run = _run_with_lock(argv, target.staging_dir, lock_fd, log, f"{phase} ({group[0]})")
                    result["files"] += run.files
                    result["dirs"] += sum(1 for c in run.changes if c.is_dir)
                    result["bytes"] += run.bytes
                    result["leftovers_removed"] = result.get("leftovers_removed", 0) + _remove_rsync_leftovers(
                        target, items)
    result.update(phase=phase, seconds=round(time.monotonic() - start, 3))
    log(f"{phase}: {result['files']} files, {result['dirs']} dirs, {rsync.human_bytes(result['bytes'])} "
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


# --- after the copy ----------------------------------------------------------------------------


def verify_production(target: PromotionTarget, cfg: Settings, *, log: Log = _quiet) -> dict:
    """Every repomd.xml under the production release directory is complete, and signed when signing is on."""
    with production_lock(target.state, exclusive=False, holder="verify_production", log=log):
        result = repoverify.verify_tree(target.production_dir, signing_key=cfg.repo_signing_key,
                                        gnupghome=cfg.gnupghome,
                                        cache_file=target.state.verify_cache(target.production_dir), log=log)
    if result.problems:
        shown = "\n".join(result.problems[:30])
        raise PromotionError(f"production {target.production_dir} failed verification ({len(result.problems)} "
                             f"problems); the file lists were not updated, so mirrors are not told:\n{shown}")
    return {"repos": result.repos, "bytes_hashed": result.bytes_hashed, "signatures": result.signatures}


def lists_stale(target: PromotionTarget) -> bool:
    """True when a promotion changed production since the file lists were made, or they are missing."""
    category = target.production_category
    lists = [category / filelist.FILELIST, category / filelist.timelist_name(target.category)]
    return target.state.lists_stale_marker(category).exists() or not all(p.exists() for p in lists)


def update_file_lists(target: PromotionTarget, *, log: Log = _quiet, force: bool = False) -> dict:
    """Regenerate the category's mirror lists when a promotion changed production (or they are missing)."""
    category = target.production_category
    marker = target.state.lists_stale_marker(category)
    if not force and not lists_stale(target):
        log(f"file lists in {category} are current (no promotion changed production since); left in place")
        return {"directory": str(category), "changed": [], "skipped": True}
    with production_lock(target.state, exclusive=True, holder="update_file_lists", log=log):
        result = filelist.publish(category, target.category, log=log)
        marker.unlink(missing_ok=True)
    return {**result.summary(), "skipped": False}


def append_audit(state: StateDir, entry: Mapping) -> bool:
    """Append one JSON line to the promotion log, fsync'd; False when the same entry (run, digest, event,
    task and outcome) is already there, so a rerun teardown does not log twice."""
    state.root.mkdir(parents=True, exist_ok=True)

    def key_of(e: Mapping) -> tuple:
        return tuple(e.get(k) for k in ("run_id", "digest", "event", "task_id", "outcome"))

    key = key_of(entry)
    if state.log_file.exists():
        with open(state.log_file, encoding="utf-8") as f:
            for line in f:
                try:
                    old = json.loads(line)
                except ValueError:
                    continue
                if key_of(old) == key:
                    return False
    line = json.dumps(entry, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    fd = os.open(state.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(state.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True
