"""Verification of repositories against their own metadata, the same checks while syncing and on production.

:func:`verify_repo` checks one repository: every file ``repomd.xml`` names
(exists, size, checksum) and, with ``packages``, every package primary names
plus the files in ``Packages/`` that primary does not list. :func:`verify_tree`
runs it (metadata only) on every repository under a directory and checks each
``repomd.xml.asc`` against the signing key when one is configured. Both return
a :class:`TreeReport`. A :class:`VerifyCache` remembers checksums already
verified for the same inode, size, mtime and ctime, so re-verifying an
unchanged tree does not re-read gigabytes.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from releng.core.checksums import file_digest
from releng.core.fs import atomic_write, human_bytes
from releng.core.repo.primary import PackageEntry, iter_packages
from releng.core.repo.repomd import REPOMD, RepoError, find_repos, hash_name, read_repomd, tree_path
from releng.core.repo.signatures import SignatureChecker


def _fingerprint(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class VerifyCache:
    """Facts verified about a file, valid while its inode, size, mtime and ctime are unchanged."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.seen: dict[str, list] = {}
        self.old: dict[str, list] = {}
        if path is not None and path.exists():
            try:
                self.old = json.loads(path.read_text())
            except (OSError, ValueError):
                self.old = {}

    def known(self, file: Path, st: os.stat_result, fact: str) -> bool:
        entry = self.old.get(str(file))
        return entry is not None and entry[0] == _fingerprint(st) and fact in entry[1]

    def remember(self, file: Path, st: os.stat_result, fact: str) -> None:
        entry = self.seen.setdefault(str(file), [_fingerprint(st), []])
        if entry[0] == _fingerprint(st) and fact not in entry[1]:
            entry[1].append(fact)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self.seen, sort_keys=True))


@dataclass
class TreeReport:
    """What a verification found. ``ok`` ignores ``extra`` (the caller decides whether extras matter).

    ``metadata`` holds problems with ``repomd.xml``, the files it names and their signatures; ``missing``,
    ``corrupt`` and ``extra`` the packages (checked only when asked for).
    """

    tree: Path
    repos: int = 0
    packages: int = 0
    bytes: int = 0
    bytes_hashed: int = 0
    signatures: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.metadata)

    def problems(self, limit: int | None = 20, *, include_extra: bool = False) -> list[str]:
        """One line per problem, at most ``limit`` per kind (None: all), with a count of the rest."""
        kinds = [("metadata", self.metadata), ("missing", self.missing), ("corrupt", self.corrupt)]
        if include_extra:
            kinds.append(("not in repodata", self.extra))
        lines = []
        for kind, items in kinds:
            shown = items if limit is None else items[:limit]
            lines += [f"{kind}: {item}" for item in shown]
            if len(items) > len(shown):
                lines.append(f"{kind}: ... and {len(items) - len(shown)} more")
        return lines

    def summary(self) -> str:
        return (f"{self.tree}: {self.repos} repositories, {self.packages} packages, {self.bytes} bytes; "
                f"{len(self.missing)} missing, {len(self.corrupt)} corrupt, {len(self.extra)} not in repodata, "
                f"{len(self.metadata)} metadata problems, {human_bytes(self.bytes_hashed)} hashed, "
                f"{self.signatures} signatures")


INODE_FACTS_XATTR = "user.releng.verified"


class InodeFacts(VerifyCache):
    """Facts verified about a file's content, kept in an extended attribute of its inode (``user.releng.verified``).

    They travel with the inode: a package hard-linked from the previous compose carries what that compose's
    sync verified (its checksum, its signature against a set of keys), so a no-op resync neither hashes nor
    signature-checks it again. A fact holds while the file's size and mtime are the recorded ones (writing
    the file changes its mtime; ctime cannot be used, linking changes it). rsync does not copy extended
    attributes without ``-X`` (never used here), so nothing of it is staged or published. On a file system
    without user extended attributes nothing is remembered and every check runs.
    """

    def __init__(self) -> None:
        super().__init__(None)

    @staticmethod
    def _read(file: Path, st: os.stat_result) -> list[str]:
        try:
            size, mtime, facts = json.loads(os.getxattr(file, INODE_FACTS_XATTR))
        except (OSError, ValueError, TypeError):
            return []
        return list(facts) if [size, mtime] == [st.st_size, st.st_mtime_ns] else []

    def known(self, file: Path, st: os.stat_result, fact: str) -> bool:
        return fact in self._read(file, st)

    def remember(self, file: Path, st: os.stat_result, fact: str) -> None:
        facts = self._read(file, st)
        if fact in facts:
            return
        try:
            os.setxattr(file, INODE_FACTS_XATTR, json.dumps([st.st_size, st.st_mtime_ns, [*facts, fact]]).encode())
        except OSError:
            pass  # no user xattrs here (or a read-only tree): the fact is checked again next time


def _check_file(path: Path, size: int | None, checksum_type: str, checksum: str, checksums: bool,
                cache: VerifyCache) -> tuple[str | None, int]:
    """None when the file matches, else why not, and the bytes hashed; FileNotFoundError when it is absent."""
    st = os.stat(path)
    if size is not None and st.st_size != size:
        return f"size {st.st_size}, repodata says {size}", 0
    if not checksums:
        return None, 0
    algo = hash_name(checksum_type)
    fact = f"{algo}:{checksum.lower()}"
    if cache.known(path, st, fact):
        cache.remember(path, st, fact)
        return None, 0
    digest = file_digest(path, algo)
    if digest != checksum.lower():
        return f"{checksum_type} {digest}, repodata says {checksum}", st.st_size
    cache.remember(path, st, fact)
    return None, st.st_size


def file_matches(path: Path, entry: PackageEntry) -> bool:
    """``path`` has the size and checksum primary gives ``entry`` (False when it is absent)."""
    try:
        return _check_file(path, entry.size, entry.checksum_type, entry.checksum, True, VerifyCache())[0] is None
    except FileNotFoundError:
        return False


def verify_repo(tree: Path, *, packages: bool = True, checksums: bool = True, workers: int = 2,
                cache: VerifyCache | None = None, prefix: str = "",
                entries: Iterable[PackageEntry] | None = None) -> TreeReport:
    """Check every file ``repomd.xml`` names and, with ``packages``, every package primary lists (exists, size,
    checksum) and the files in Packages/ it does not list.

    ``checksums=False`` checks existence and size only (for trees of hard links to a verified tree).
    ``prefix`` is put before every href in the report (the tree's path under a directory verified whole).
    ``entries``: the packages of this tree's primary when the caller has parsed it already (it is not read again).
    """
    tree = Path(tree)
    cache = VerifyCache() if cache is None else cache
    report = TreeReport(tree, repos=1)
    try:
        records = read_repomd(tree)
    except RepoError as exc:
        report.metadata.append(str(exc))
        return report
    for rec in records:
        try:
            reason, hashed = _check_file(tree_path(tree, rec.href), rec.size, rec.checksum_type, rec.checksum,
                                         True, cache)
            report.bytes_hashed += hashed
        except FileNotFoundError:
            reason = "missing"
        except RepoError as exc:
            reason = str(exc)
        if reason:
            report.metadata.append(f"{prefix}{rec.href} ({rec.type}): {reason}")
    if report.metadata or not packages:
        return report

    listed: set[str] = set()
    window: deque[tuple[PackageEntry, Future]] = deque()

    def settle(entry: PackageEntry, job: Future) -> None:
        try:
            reason, hashed = job.result()
        except FileNotFoundError:
            report.missing.append(f"{prefix}{entry.href}")
            return
        report.bytes_hashed += hashed
        if reason:
            report.corrupt.append(f"{prefix}{entry.href}: {reason}")

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for entry in iter_packages(tree) if entries is None else entries:
                listed.add(entry.href)
                report.packages += 1
                report.bytes += entry.size
                path = tree_path(tree, entry.href)
                window.append((entry, pool.submit(_check_file, path, entry.size, entry.checksum_type,
                                                  entry.checksum, checksums, cache)))
                if len(window) >= 4 * max(1, workers):  # bounded: flat memory however long primary is
                    settle(*window.popleft())
            while window:
                settle(*window.popleft())
    except RepoError as exc:
        report.metadata.append(str(exc))
        return report
    report.extra = sorted(f"{prefix}{rel}" for rel in files_under(tree, "Packages") if rel not in listed)
    return report


def files_under(tree: Path, top: str) -> Iterator[str]:
    """Relative POSIX paths of the regular files under ``tree/top``."""
    base = tree / top
    for dirpath, _dirs, files in os.walk(base):
        rel_dir = Path(dirpath).relative_to(tree).as_posix()
        for name in files:
            yield f"{rel_dir}/{name}"


def _merge(into: TreeReport, part: TreeReport) -> None:
    for name in ("repos", "packages", "bytes", "bytes_hashed", "signatures"):
        setattr(into, name, getattr(into, name) + getattr(part, name))
    for name in ("missing", "corrupt", "extra", "metadata"):
        getattr(into, name).extend(getattr(part, name))


def verify_tree(root: Path, *, packages: bool = False, signing_key: str = "", gnupghome: Path | None = None,
                cache_file: Path | None = None, workers: int = 2,
                log: Callable[[str], None] = lambda _m: None) -> TreeReport:
    """:func:`verify_repo` on every repository under ``root``, and each ``repomd.xml.asc`` when ``signing_key``
    is set; the report lists every problem found (none when good). The cache is saved only when all is good."""
    root = Path(root)
    cache = VerifyCache(cache_file)
    checker = SignatureChecker(signing_key, gnupghome) if signing_key else None
    report = TreeReport(root)
    try:
        for rel in find_repos(root):
            repo_dir = root / rel
            prefix = "" if rel == Path(".") else f"{rel.as_posix()}/"
            _merge(report, verify_repo(repo_dir, packages=packages, workers=workers, cache=cache, prefix=prefix))
            if checker is not None:
                repomd = repo_dir / REPOMD
                asc = repomd.with_name("repomd.xml.asc")
                try:
                    sts = (repomd.stat(), asc.stat())
                except FileNotFoundError:
                    sts = None
                fact = f"gpg:{','.join(sorted(checker.fingerprints))}"
                if sts and cache.known(repomd, sts[0], fact) and cache.known(asc, sts[1], fact):
                    cache.remember(repomd, sts[0], fact)
                    cache.remember(asc, sts[1], fact)
                else:
                    bad = checker.problem(repomd) if repomd.is_file() else None
                    if bad:
                        report.metadata.append(bad)
                    elif sts:
                        cache.remember(repomd, sts[0], fact)
                        cache.remember(asc, sts[1], fact)
                report.signatures += 1
    finally:
        if checker is not None:
            checker.close()
    if report.ok:
        cache.save()
    log(f"verified {report.repos} repositories under {root}: {len(report.problems(None))} problems, "
        f"{human_bytes(report.bytes_hashed)} hashed, {report.signatures} signatures")
    return report
