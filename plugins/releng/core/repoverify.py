"""Yum repository metadata: read ``repomd.xml`` and primary, compare package sets, verify a published tree.

* :func:`read_repomd` and :func:`read_packages` read what createrepo_c wrote
  (stdlib only; primary is streamed with ``iterparse`` so a 100 MB primary
  costs little memory).
* :func:`package_changes` compares two package sets by NEVRA.
* :func:`verify_tree` checks that every ``repomd.xml`` under a tree names files
  that exist with the size and checksum it states, and that ``repomd.xml.asc``
  verifies against the signing key when one is configured. Checksums already
  verified for the same inode, size, mtime and ctime are remembered in a cache
  file, so re-verifying an unchanged tree does not re-read gigabytes.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"
SKIP_DIRS = frozenset({"Packages", ".~tmp~"})
_HASHES = {"sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256", "sha384": "sha384",
           "sha512": "sha512", "md5": "md5"}


class RepoError(ValueError):
    """Repository metadata is missing, unreadable or inconsistent."""


# --- NEVRA -------------------------------------------------------------------------------------

_ALNUM = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset("0123456789")


def rpmvercmp(a: str, b: str) -> int:
    """rpm's version comparison: -1, 0 or 1 (``~`` sorts before anything, ``^`` after the base version)."""
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        while i < len(a) and a[i] not in _ALNUM and a[i] not in "~^":
            i += 1
        while j < len(b) and b[j] not in _ALNUM and b[j] not in "~^":
            j += 1
        ca, cb = a[i:i + 1], b[j:j + 1]
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not ca or not cb:
            break
        kind = _DIGITS if ca in _DIGITS else _ALNUM - _DIGITS
        i2, j2 = i, j
        while i2 < len(a) and a[i2] in kind:
            i2 += 1
        while j2 < len(b) and b[j2] in kind:
            j2 += 1
        x, y = a[i:i2], b[j:j2]
        if not y:
            return 1 if kind is _DIGITS else -1  # a numeric segment is newer than an alphabetic one
        if kind is _DIGITS:
            x, y = x.lstrip("0"), y.lstrip("0")
            if len(x) != len(y):
                return 1 if len(x) > len(y) else -1
        if x != y:
            return 1 if x > y else -1
        i, j = i2, j2
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


@dataclass(frozen=True, order=True)
class Nevra:
    name: str
    arch: str
    epoch: int
    version: str
    release: str

    @property
    def evr(self) -> str:
        return f"{self.epoch}:{self.version}-{self.release}" if self.epoch else f"{self.version}-{self.release}"

    def __str__(self) -> str:
        return f"{self.name}-{self.evr}.{self.arch}"

    def newer_than(self, other: Nevra) -> bool:
        if self.epoch != other.epoch:
            return self.epoch > other.epoch
        return (rpmvercmp(self.version, other.version) or rpmvercmp(self.release, other.release)) > 0


@dataclass
class PackageChanges:
    added: list[Nevra] = field(default_factory=list)
    updated: list[tuple[Nevra, Nevra]] = field(default_factory=list)  # (newest before, new)
    removed: list[Nevra] = field(default_factory=list)


def package_changes(before: Iterable[Nevra], after: Iterable[Nevra]) -> PackageChanges:
    """Added (name.arch new), updated (a new NEVRA of a name.arch already there) and removed NEVRAs."""
    before, after = set(before), set(after)
    by_key: dict[tuple[str, str], list[Nevra]] = {}
    for n in before:
        by_key.setdefault((n.name, n.arch), []).append(n)
    out = PackageChanges()
    for n in sorted(after - before):
        old = by_key.get((n.name, n.arch))
        if not old:
            out.added.append(n)
            continue
        newest = old[0]
        for o in old[1:]:
            if o.newer_than(newest):
                newest = o
        out.updated.append((newest, n))
    out.removed = sorted(before - after)
    return out


# --- reading metadata --------------------------------------------------------------------------


@dataclass(frozen=True)
class RepomdEntry:
    type: str
    href: str
    checksum_type: str
    checksum: str
    size: int | None


def read_repomd(path: Path) -> list[RepomdEntry]:
    """The ``<data>`` records of a repomd.xml."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise RepoError(f"{path}: cannot read repomd.xml ({exc}); the repository metadata is broken") from None
    entries = []
    for data in root.iter(f"{REPO_NS}data"):
        loc = data.find(f"{REPO_NS}location")
        csum = data.find(f"{REPO_NS}checksum")
        size = data.find(f"{REPO_NS}size")
        if loc is None or csum is None or not loc.get("href") or not (csum.text or "").strip():
            raise RepoError(f"{path}: <data type={data.get('type')!r}> lacks a location href or a checksum")
        entries.append(RepomdEntry(data.get("type", ""), loc.get("href", ""), csum.get("type", "sha256"),
                                   (csum.text or "").strip(),
                                   int(size.text) if size is not None and (size.text or "").strip() else None))
    return entries


def metadata_path(repo_dir: Path, href: str) -> Path:
    """The file a repomd href names, refusing hrefs that leave the repository."""
    rel = PurePosixPath(href)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise RepoError(f"{repo_dir}/repodata/repomd.xml: href {href!r} points outside the repository")
    return Path(repo_dir, *rel.parts)


def open_metadata(path: Path):
    """A binary stream of a metadata file, decompressed by its suffix (gz, xz, bz2 or plain)."""
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith((".zst", ".zck")):
        raise RepoError(f"{path}: zstd/zchunk metadata cannot be read here; regenerate it with "
                        "createrepo_c --compress-type=xz (or gz)")
    return open(path, "rb")


def read_packages(repo_dir: Path) -> set[Nevra]:
    """Every package's NEVRA from the repository's primary metadata (empty when there is no repomd.xml)."""
    repomd = Path(repo_dir) / "repodata" / "repomd.xml"
    if not repomd.exists():
        return set()
    primary = [e for e in read_repomd(repomd) if e.type == "primary"]
    if not primary:
        raise RepoError(f"{repomd}: names no primary metadata")
    path = metadata_path(Path(repo_dir), primary[0].href)
    out: set[Nevra] = set()
    tag_pkg, tag_name, tag_arch, tag_ver = (f"{COMMON_NS}{t}" for t in ("package", "name", "arch", "version"))
    try:
        with open_metadata(path) as stream:
            context = ET.iterparse(stream, events=("start", "end"))
            _, root = next(context)
            for event, elem in context:
                if event != "end" or elem.tag != tag_pkg:
                    continue
                ver = elem.find(tag_ver)
                name, arch = elem.findtext(tag_name), elem.findtext(tag_arch)
                if ver is None or not name or not arch:
                    raise RepoError(f"{path}: a <package> lacks name, arch or version")
                out.add(Nevra(name, arch, int(ver.get("epoch") or 0), ver.get("ver", ""), ver.get("rel", "")))
                root.clear()
    except (OSError, EOFError, lzma.LZMAError, ET.ParseError) as exc:
        raise RepoError(f"{path}: cannot read primary metadata ({exc})") from None
    return out


def find_repos(root: Path) -> list[Path]:
    """Repository directories (those holding ``repodata/``) under ``root``, relative, sorted.

    Does not descend into ``Packages`` or into a repository, so it lists
    directories, not the hundreds of thousands of packages below them.
    """
    root = Path(root)
    found: list[Path] = []
    stack = [root]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as it:
                subdirs = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            continue
        if "repodata" in subdirs:
            found.append(here.relative_to(root))
            continue
        stack.extend(here / d for d in reversed(subdirs) if d not in SKIP_DIRS)
    return sorted(found)


# --- verification ------------------------------------------------------------------------------


def _fingerprint(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class VerifyCache:
    """Facts verified about a file, valid while its inode, size, mtime and ctime are unchanged."""

    def __init__(self, path: Path | None):
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
        return bool(entry) and entry[0] == _fingerprint(st) and fact in entry[1]

    def remember(self, file: Path, st: os.stat_result, fact: str) -> None:
        entry = self.seen.setdefault(str(file), [_fingerprint(st), []])
        if entry[0] == _fingerprint(st) and fact not in entry[1]:
            entry[1].append(fact)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.seen, sort_keys=True))
        os.replace(tmp, self.path)


def file_hexdigest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def verify_repo(repo_dir: Path, cache: VerifyCache) -> tuple[list[str], int]:
    """Problems with one repository's metadata files, and the bytes read to check them."""
    repomd = Path(repo_dir) / "repodata" / "repomd.xml"
    if not repomd.is_file():
        return [f"{repomd}: missing (the repodata directory has no repomd.xml)"], 0
    problems, hashed = [], 0
    try:
        entries = read_repomd(repomd)
    except RepoError as exc:
        return [str(exc)], 0
    for e in entries:
        try:
            path = metadata_path(Path(repo_dir), e.href)
        except RepoError as exc:
            problems.append(str(exc))
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            problems.append(f"{repomd}: names {e.href} ({e.type}), which does not exist")
            continue
        if e.size is not None and st.st_size != e.size:
            problems.append(f"{repomd}: {e.href} is {st.st_size} bytes, repomd.xml says {e.size}")
            continue
        algo = _HASHES.get(e.checksum_type.lower())
        if algo is None:
            problems.append(f"{repomd}: {e.href} has an unknown checksum type {e.checksum_type!r}")
            continue
        fact = f"{algo}:{e.checksum}"
        if cache.known(path, st, fact):
            cache.remember(path, st, fact)
            continue
        digest = file_hexdigest(path, algo)
        hashed += st.st_size
        if digest != e.checksum.lower():
            problems.append(f"{repomd}: {e.href} has {algo} {digest}, repomd.xml says {e.checksum}")
        else:
            cache.remember(path, st, fact)
    return problems, hashed


class SignatureChecker:
    """Verifies detached ``repomd.xml.asc`` signatures against exactly one public key.

    The public part of ``key`` is exported from ``gnupghome`` (the signer's
    keyring) into a private keyring, so no other key in either keyring counts.
    """

    def __init__(self, key: str, gnupghome: Path | None):
        self.key = key
        self._tmp = tempfile.TemporaryDirectory(prefix="releng-verify-gpg-")
        self.home = Path(self._tmp.name)
        os.chmod(self.home, 0o700)
        export = ["gpg", "--batch", "--armor", "--export", key]
        if gnupghome is not None:
            export[1:1] = ["--homedir", str(gnupghome)]
        pub = subprocess.run(export, capture_output=True, check=False)
        if pub.returncode != 0 or not pub.stdout.strip():
            where = gnupghome or "~/.gnupg"
            raise RepoError(f"signing key {key!r} is not in the keyring {where} (RELENG_REPO_SIGNING_KEY / "
                            f"RELENG_GNUPGHOME); import its public key there or unset RELENG_REPO_SIGNING_KEY")
        self._gpg(["--import"], input=pub.stdout)
        listing = self._gpg(["--with-colons", "--list-keys"]).stdout.decode()
        self.fingerprints = {line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")}

    def _gpg(self, args: list[str], input: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--no-tty", *args], input=input,
                              capture_output=True, check=True)

    def problem(self, repomd: Path) -> str | None:
        asc = repomd.with_name("repomd.xml.asc")
        if not asc.is_file():
            return f"{asc}: missing; signing is on (RELENG_REPO_SIGNING_KEY={self.key}), so every repomd.xml needs it"
        result = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--no-tty", "--status-fd", "1",
                                 "--verify", str(asc), str(repomd)], capture_output=True, check=False)
        status = result.stdout.decode(errors="replace")
        valid = [line.split() for line in status.splitlines() if line.startswith("[GNUPG:] VALIDSIG")]
        if result.returncode != 0 or not any(set(v[2:3] + v[-1:]) & self.fingerprints for v in valid):
            detail = (result.stderr.decode(errors="replace").strip().splitlines() or ["no detail"])[-1]
            return f"{asc}: does not verify {repomd.name} with key {self.key} ({detail})"
        return None

    def close(self) -> None:
        self._tmp.cleanup()


@dataclass
class VerifyResult:
    repos: int
    files_checked: int
    bytes_hashed: int
    signatures: int
    problems: list[str]


def verify_tree(root: Path, *, signing_key: str = "", gnupghome: Path | None = None,
                cache_file: Path | None = None, log: Callable[[str], None] = lambda _m: None) -> VerifyResult:
    """Check every repository under ``root``; the result lists every problem found (none when good)."""
    cache = VerifyCache(cache_file)
    checker = SignatureChecker(signing_key, gnupghome) if signing_key else None
    problems: list[str] = []
    files = hashed = signatures = 0
    try:
        repos = find_repos(root)
        for rel in repos:
            repo_dir = Path(root) / rel
            found, read = verify_repo(repo_dir, cache)
            problems += found
            hashed += read
            files += 1
            if checker is not None:
                repomd = repo_dir / "repodata" / "repomd.xml"
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
                        problems.append(bad)
                    elif sts:
                        cache.remember(repomd, sts[0], fact)
                        cache.remember(asc, sts[1], fact)
                signatures += 1
    finally:
        if checker is not None:
            checker.close()
    if not problems:
        cache.save()
    log(f"verified {len(repos)} repositories under {root}: {len(problems)} problems, "
        f"{hashed / 1048576:.1f} MiB hashed, {signatures} signatures")
    return VerifyResult(len(repos), files, hashed, signatures, problems)
