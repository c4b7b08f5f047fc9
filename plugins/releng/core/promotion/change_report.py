"""``change_report``: compare a release's staging tree with production and describe the promotion.

One ``rsync --dry-run --itemize-changes`` over the two trees gives every path
to copy and to delete; primary metadata of the repositories whose repodata
changed gives the packages added, updated and removed. The staging metadata of
those repositories is verified, and the delete bound checked, before anyone is
asked to approve. The report is stored as a promotion record with its digest
(:mod:`releng.core.promotion.record`) and rendered for the approver
(:mod:`releng.core.promotion.render`); neither tree is written.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from releng.core import rsync
from releng.core.checksums import file_digest
from releng.core.fs import human_bytes
from releng.core.layout import SIG_CATEGORY
from releng.core.promotion import approval
from releng.core.promotion.base import Log, PromotionError, quiet, utc_now
from releng.core.promotion.lock import production_lock
from releng.core.promotion.record import RECORD_VERSION, ReportSummary, phase_of, record_digest, write_record
from releng.core.promotion.render import markdown, package_lines, subject
from releng.core.promotion.target import (
    PromotionTarget,
    check_event_staging_dir,
    choose_release,
    resolve_target,
    state_dir,
)
from releng.core.promotion.update_file_lists import lists_stale
from releng.core.repo.primary import PackageChanges, package_changes, read_packages
from releng.core.repo.repomd import RepoError
from releng.core.repo.signatures import SignatureChecker
from releng.core.repo.verify import VerifyCache, verify_repo
from releng.core.settings import Settings

REPORT_ATTEMPTS = 3
REPORT_RETRY_SECONDS = 2.0
LOGGED_ITEMS = 200


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def _repo_label(rel: str, sig: bool = False) -> dict:
    parts = rel.split("/") if rel != "." else []
    if sig and len(parts) >= 2:  # a SIG's trees are <arch>/<Repo>[-debug] and source/<Repo>
        return {"path": rel, "repo": parts[1], "arch": parts[0], "tree": "/".join(parts[2:])}
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



class _StagingChanged(Exception):
    """Staging changed under the report: a path the dry run listed vanished, or a repomd.xml was replaced."""


def make_report(target: PromotionTarget, *, run_id: str, dry_run: bool, allow_large_delete: bool,
                max_delete: float, signing_key: str = "", gnupghome: Path | None = None,
                extra: Mapping | None = None, log: Log = quiet) -> dict:
    """Compare staging with production and describe the promotion; neither tree is written.

    The staging repositories whose metadata changed are verified first (named
    files, checksums, and the signature when ``signing_key`` is set): broken or
    unsigned metadata is refused before anyone is asked to approve it.

    Staging can change while the report is taken (``general_updates`` swaps a
    repository's metadata: temporary names appear and vanish, the superseded
    files are deleted, ``repomd.xml`` is replaced). Then the whole report is
    taken again, up to ``REPORT_ATTEMPTS`` times; a PromotionError says so when
    staging never holds still. ``extra`` keys (a point release's plan, its
    ``actions`` and ``extra_steps``) go into the record, under its digest.
    """
    for attempt in range(1, REPORT_ATTEMPTS + 1):
        try:
            return _report_once(target, run_id=run_id, dry_run=dry_run, allow_large_delete=allow_large_delete,
                                max_delete=max_delete, signing_key=signing_key, gnupghome=gnupghome,
                                extra=extra or {}, log=log)
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
            if (st.st_mtime_ns, st.st_size) == (i["mtime_ns"], i["size"]) and file_sha256(staging / i["path"]) == \
                    i["sha256"]:
                continue
        except FileNotFoundError:
            pass
        return i["path"]
    return None


def _report_once(target: PromotionTarget, *, run_id: str, dry_run: bool, allow_large_delete: bool,
                 max_delete: float, signing_key: str, gnupghome: Path | None, extra: Mapping, log: Log) -> dict:
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
                    item["sha256"] = file_sha256(staging / c.path)
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
        "delete_bound": bound, "repos": repos["repos"], "other": repos["other"], "items": items, **extra,
    }
    record["totals"]["packages"] = {k: sum(r[k + "_count"] for r in record["repos"])
                                    for k in ("added", "updated", "removed")}
    record["digest"] = record_digest(record)
    t = record["totals"]
    log(f"report: {t['payload']['files'] + t['metadata']['files']} files "
        f"({human_bytes(t['payload']['bytes'] + t['metadata']['bytes'])}) to copy, "
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
    cache = VerifyCache()
    checker = SignatureChecker(signing_key, gnupghome) if signing_key else None
    try:
        for rel in present:
            problems += verify_repo(target.staging_dir / rel, packages=False, cache=cache,
                                    prefix=f"{rel}/".removeprefix("./")).problems(None)
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
        sig = target.category == SIG_CATEGORY
        bucket = other if rel is None else repos.setdefault(rel, {**_repo_label(rel, sig), "files": 0, "bytes": 0,
                                                                  "deletes": 0})
        if i["phase"] == "deletions":
            bucket["deletes"] += i["type"] != "d"
        elif i["type"] != "d":
            bucket["files"] += 1
            bucket["bytes"] += i["size"] if i["code"].startswith(">f") else 0
    changed_metadata = _changed_repos(items)
    for rel, info in sorted(repos.items()):
        diff = PackageChanges()
        if rel in changed_metadata:
            try:
                before = read_packages(target.production_dir / rel)
                after = read_packages(target.staging_dir / rel)
            except RepoError as exc:
                raise PromotionError(f"{exc}; fix the repository in staging before promoting") from None
            diff = package_changes(before, after)
        info["added"] = [str(n) for n in diff.added]
        info["updated"] = [[str(a), str(b)] for a, b in diff.updated]
        info["removed"] = [str(n) for n in diff.removed]
        for k in ("added", "updated", "removed"):
            info[k + "_count"] = len(info[k])
    if changed_metadata:
        log(f"compared primary metadata of {len(changed_metadata)} repositories")
    return {"repos": [repos[k] for k in sorted(repos)], "other": other}



def change_report(cfg: Settings, *, run_id: str, dag_id: str, release: str | None, rc: bool | None,
                  params: Mapping, event_extras: Sequence[Mapping], dry_run: bool, allow_large_delete: bool,
                  plan: Callable[[PromotionTarget], Mapping] | None = None, log: Log = quiet,
                  warn: Log | None = None) -> ReportSummary:
    """The ``change_report`` step: resolve the release, report, store the record and open the run at the gate.

    The release and rc are ``release``/``rc`` when a release is given, else
    those of the triggering staging Asset events (``event_extras``, oldest
    first), else the run's ``params``. Earlier runs that ended without an audit
    entry get one now. A non-dry run whose deletions exceed the bound is
    refused (PromotionError) after its record is written, before anyone is
    asked; one with changes (or stale file lists) gets a pending marker, so
    the approval asks and the audit teardown records it. ``plan(target)``, when
    given, returns more keys for the record (a point release's plan) before
    the report is taken; its PromotionError stops the run before anyone is asked.
    """
    warn = warn or log
    release, rc, extras = choose_release(release, rc, params, event_extras)
    target = resolve_target(release, rc, cfg)
    check_event_staging_dir(target, extras)
    log(f"promoting {release}: {target.staging_dir} -> {target.production_dir}{' (dry run)' if dry_run else ''}")
    extra = dict(plan(target)) if plan else {}
    for action in extra.get("actions", ()):
        log(f"planned: {action}")
    record = make_report(target, run_id=run_id, dry_run=dry_run, allow_large_delete=allow_large_delete,
                         max_delete=cfg.promotion_max_delete, signing_key=cfg.repo_signing_key,
                         gnupghome=cfg.gnupghome, extra=extra, log=log)
    state = state_dir(cfg)
    for entry in approval.close_abandoned(state, run_id, dag_id):
        warn(f"audit: run {entry['run_id']} {entry['outcome']}")
    approval.revoke(state, run_id)
    path = write_record(target, record)
    log(f"promotion record {path} ({record['digest']})")
    for item in record["items"][:LOGGED_ITEMS]:
        log(f"{item['code']} {item['path']}")
    if len(record["items"]) > LOGGED_ITEMS:
        log(f"... {len(record['items']) - LOGGED_ITEMS} more changes in the record")
    for title, names in package_lines(record):  # the full lists the approval body cuts short
        log(f"{title}: {len(names)} package changes")
        for name in names:
            log(f"  {title.lower()} {name}")
    stale = lists_stale(target)
    if not dry_run:
        check_delete_bound(record)
        if approval.needs_approval(record, stale):
            approval.open_run(state, record)
    return ReportSummary(record=str(path), digest=record["digest"], target=target.as_dict(), dry_run=dry_run,
                         changes=len(record["items"]), lists_stale=stale, totals=record["totals"],
                         delete_bound=record["delete_bound"], subject=subject(record), markdown=markdown(record))
