"""Yum repositories on disk: read ``repomd.xml`` and primary, verify a synced tree, link unchanged packages.

A synced tree is ``<tree>/repodata/`` (as the build system served it) plus the
files its primary lists, normally under ``<tree>/Packages/``. Primary is read
with ``ElementTree.iterparse`` and each ``<package>`` is dropped once read, so
memory stays flat for repos of any size. Compression is chosen by file name:
gzip, xz and bzip2 come from the standard library; zstd needs Python 3.14's
``compression.zstd`` or the ``zstd`` command (Debian's and EL's ``zstd``
package); without either, a ``.zst`` primary is refused with a message saying so.

Hard links and dnf: librepo (under ``dnf reposync``) rewrites a file whose
checksum does not match *in place*, so a hard link shared with another tree
would change that tree too. :func:`link_unchanged` therefore links only
packages whose href and checksum are identical in both repodata, and
:func:`break_shared_links` removes any other shared file dnf could rewrite.
"""

from __future__ import annotations

import base64
import bz2
import errno
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from releng.core.checksums import file_digest

NS_REPO = "{http://linux.duke.edu/metadata/repo}"
NS_COMMON = "{http://linux.duke.edu/metadata/common}"
NS_RPM = "{http://linux.duke.edu/metadata/rpm}"
REPOMD = "repodata/repomd.xml"
# Files in repodata/ that repomd.xml does not (and cannot) list.
REPOMD_COMPANIONS = ("repomd.xml", "repomd.xml.asc", "repomd.xml.key")
# Old repos write "sha" for SHA-1.
_HASH_NAMES = {"sha": "sha1"}


class RepodataError(ValueError):
    """A tree's metadata is missing, unreadable, or names a path outside the tree."""


@dataclass(frozen=True)
class MetadataRecord:
    """One ``<data>`` record of ``repomd.xml``: primary, filelists, other, group, modules, updateinfo..."""

    type: str
    href: str
    checksum_type: str
    checksum: str
    size: int | None


@dataclass(frozen=True)
class PackageEntry:
    """One ``<package>`` of primary."""

    name: str
    epoch: str
    version: str
    release: str
    arch: str
    href: str
    checksum_type: str
    checksum: str
    size: int
    sourcerpm: str | None = None

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.epoch}:{self.version}-{self.release}.{self.arch}"

    @property
    def filename(self) -> str:
        return PurePosixPath(self.href).name


def tree_path(tree: Path, href: str) -> Path:
    """``tree/href``, refusing absolute hrefs and any that climb out of the tree."""
    rel = PurePosixPath(href)
    if not href or rel.is_absolute() or ".." in rel.parts:
        raise RepodataError(f"{tree}: metadata names {href!r}, which is not a path inside the tree")
    return Path(tree, *rel.parts)


def hash_name(checksum_type: str) -> str:
    """The hashlib name of a repodata checksum type; RepodataError for one hashlib lacks."""
    name = _HASH_NAMES.get(checksum_type, checksum_type)
    if name not in hashlib.algorithms_available:
        raise RepodataError(f"checksum type {checksum_type!r} is not supported by this Python's hashlib")
    return name


# --- reading ---------------------------------------------------------------------------------


def read_repomd(tree: Path) -> list[MetadataRecord]:
    """The ``<data>`` records of ``tree/repodata/repomd.xml``."""
    path = Path(tree) / REPOMD
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise RepodataError(f"{path} does not exist; the tree has no repodata (was it synced?)") from None
    except (ET.ParseError, OSError) as exc:
        raise RepodataError(f"{path} cannot be read: {exc}") from None
    records = []
    for data in root.iter(f"{NS_REPO}data"):
        location = data.find(f"{NS_REPO}location")
        checksum = data.find(f"{NS_REPO}checksum")
        size = data.findtext(f"{NS_REPO}size")
        if location is None or checksum is None or not location.get("href"):
            raise RepodataError(f"{path}: record {data.get('type')!r} has no location or checksum")
        records.append(MetadataRecord(
            type=data.get("type", ""), href=location.get("href", ""), checksum_type=checksum.get("type", "sha256"),
            checksum=(checksum.text or "").strip(), size=int(size) if size else None,
        ))
    return records


def _zstd_reader(path: Path) -> BinaryIO:
    try:
        from compression import zstd  # Python 3.14+
    except ImportError:
        zstd = None
    if zstd is not None:
        return zstd.open(path, "rb")
    if shutil.which("zstd") is None:
        raise RepodataError(
            f"{path} is zstd-compressed; reading it needs Python 3.14 or the zstd command "
            "(install the zstd package), or have the repo written with createrepo_c --general-compress-type=xz"
        )
    return _ZstdPipe(path)


class _ZstdPipe(io.RawIOBase):
    """``zstd -dc FILE`` as a readable stream (streams, so memory stays flat)."""

    def __init__(self, path: Path):
        self._proc = subprocess.Popen(["zstd", "-q", "-d", "-c", str(path)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self._path = path

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._proc.stdout.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        self._proc.stdout.close()
        err = self._proc.stderr.read().decode(errors="replace").strip()
        self._proc.stderr.close()
        rc = self._proc.wait()
        super().close()
        if rc != 0:
            raise RepodataError(f"zstd could not decompress {self._path}: {err or f'exit {rc}'}")


@contextmanager
def open_metadata(path: Path) -> Iterator[BinaryIO]:
    """A metadata file opened for reading, decompressed by its suffix (.gz, .xz, .bz2, .zst or none)."""
    path = Path(path)
    suffix = path.suffix
    try:
        if suffix == ".gz":
            f = gzip.open(path, "rb")
        elif suffix == ".xz":
            f = lzma.open(path, "rb")
        elif suffix == ".bz2":
            f = bz2.open(path, "rb")
        elif suffix == ".zst":
            f = _zstd_reader(path)
        else:
            f = open(path, "rb")
    except FileNotFoundError:
        raise RepodataError(f"{path} does not exist") from None
    try:
        yield f
    finally:
        f.close()


def iter_packages(tree: Path) -> Iterator[PackageEntry]:
    """Stream the packages of ``tree``'s primary, one at a time."""
    tree = Path(tree)
    primary = next((r for r in read_repomd(tree) if r.type == "primary"), None)
    if primary is None:
        raise RepodataError(f"{tree / REPOMD} lists no primary metadata")
    path = tree_path(tree, primary.href)
    with open_metadata(path) as f:
        try:
            context = ET.iterparse(f, events=("start", "end"))
            _, root = next(context)
            for event, elem in context:
                if event != "end" or elem.tag != f"{NS_COMMON}package":
                    continue
                yield _package(elem, path)
                root.clear()  # drop what was read: flat memory for any primary size
        except (ET.ParseError, EOFError, lzma.LZMAError, OSError) as exc:
            raise RepodataError(f"{path} cannot be parsed: {exc}") from None


def _package(elem: ET.Element, path: Path) -> PackageEntry:
    version = elem.find(f"{NS_COMMON}version")
    location = elem.find(f"{NS_COMMON}location")
    checksum = elem.find(f"{NS_COMMON}checksum")
    size = elem.find(f"{NS_COMMON}size")
    name = elem.findtext(f"{NS_COMMON}name", "")
    if version is None or location is None or checksum is None or size is None:
        raise RepodataError(f"{path}: package {name!r} lacks version, location, checksum or size")
    return PackageEntry(
        name=name, epoch=version.get("epoch", "0"), version=version.get("ver", ""), release=version.get("rel", ""),
        arch=elem.findtext(f"{NS_COMMON}arch", ""), href=location.get("href", ""),
        checksum_type=checksum.get("type", "sha256"), checksum=(checksum.text or "").strip(),
        size=int(size.get("package", "0")),
        sourcerpm=elem.findtext(f"{NS_COMMON}format/{NS_RPM}sourcerpm") or None,
    )


def package_index(tree: Path) -> dict[str, PackageEntry]:
    """The packages of ``tree`` by href."""
    return {p.href: p for p in iter_packages(tree)}


# --- verification ----------------------------------------------------------------------------


@dataclass
class TreeReport:
    """What :func:`verify_tree` found. ``ok`` ignores ``extra`` (the caller decides whether extras matter)."""

    tree: Path
    packages: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.metadata)

    def problems(self, limit: int = 20, *, include_extra: bool = False) -> list[str]:
        """One line per problem, at most ``limit`` per kind, with a count of the rest."""
        kinds = [("metadata", self.metadata), ("missing", self.missing), ("corrupt", self.corrupt)]
        if include_extra:
            kinds.append(("not in repodata", self.extra))
        lines = []
        for kind, items in kinds:
            lines += [f"{kind}: {item}" for item in items[:limit]]
            if len(items) > limit:
                lines.append(f"{kind}: ... and {len(items) - limit} more")
        return lines

    def summary(self) -> str:
        return (f"{self.tree}: {self.packages} packages, {self.bytes} bytes; {len(self.missing)} missing, "
                f"{len(self.corrupt)} corrupt, {len(self.extra)} not in repodata, "
                f"{len(self.metadata)} metadata problems")


def _check_file(path: Path, size: int | None, checksum_type: str, checksum: str, checksums: bool) -> str | None:
    """None when the file matches, else why not; FileNotFoundError when it is absent."""
    actual = os.stat(path).st_size
    if size is not None and actual != size:
        return f"size {actual}, repodata says {size}"
    if checksums:
        digest = file_digest(path, hash_name(checksum_type))
        if digest != checksum:
            return f"{checksum_type} {digest}, repodata says {checksum}"
    return None


def verify_tree(tree: Path, *, checksums: bool = True, workers: int = 2) -> TreeReport:
    """Check every file ``repomd.xml`` and primary list (exists, size, checksum) and find unlisted files in Packages/.

    ``checksums=False`` checks existence and size only (for trees of hard links to a verified tree).
    """
    tree = Path(tree)
    report = TreeReport(tree)
    try:
        records = read_repomd(tree)
    except RepodataError as exc:
        report.metadata.append(str(exc))
        return report
    for rec in records:
        try:
            reason = _check_file(tree_path(tree, rec.href), rec.size, rec.checksum_type, rec.checksum, True)
        except FileNotFoundError:
            reason = "missing"
        except RepodataError as exc:
            reason = str(exc)
        if reason:
            report.metadata.append(f"{rec.href} ({rec.type}): {reason}")
    if report.metadata:
        return report

    listed: set[str] = set()
    window: deque[tuple[PackageEntry, Future]] = deque()

    def settle(entry: PackageEntry, job: Future) -> None:
        try:
            reason = job.result()
        except FileNotFoundError:
            report.missing.append(entry.href)
            return
        if reason:
            report.corrupt.append(f"{entry.href}: {reason}")

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for entry in iter_packages(tree):
                listed.add(entry.href)
                report.packages += 1
                report.bytes += entry.size
                path = tree_path(tree, entry.href)
                window.append((entry, pool.submit(_check_file, path, entry.size, entry.checksum_type,
                                                  entry.checksum, checksums)))
                if len(window) >= 4 * max(1, workers):  # bounded: flat memory however long primary is
                    settle(*window.popleft())
            while window:
                settle(*window.popleft())
    except RepodataError as exc:
        report.metadata.append(str(exc))
        return report
    report.extra = sorted(rel for rel in _files_under(tree, "Packages") if rel not in listed)
    return report


def _files_under(tree: Path, top: str) -> Iterator[str]:
    """Relative POSIX paths of the regular files under ``tree/top``."""
    base = tree / top
    for dirpath, _dirs, files in os.walk(base):
        rel_dir = Path(dirpath).relative_to(tree).as_posix()
        for name in files:
            yield f"{rel_dir}/{name}"


def stale_metadata(tree: Path) -> list[Path]:
    """Files in ``tree/repodata`` that ``repomd.xml`` no longer names (left by an older sync)."""
    keep = {PurePosixPath(r.href).name for r in read_repomd(tree)} | set(REPOMD_COMPANIONS)
    base = Path(tree) / "repodata"
    return sorted(p for p in base.iterdir() if p.is_file() and p.name not in keep)


# --- hard links --------------------------------------------------------------------------------


def _link_into(src: Path, dest: Path) -> None:
    """Make ``dest`` a hard link of ``src``, replacing whatever is there in one rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.link")
    tmp.unlink(missing_ok=True)
    os.link(src, tmp)
    os.replace(tmp, dest)


def link_unchanged(dest: Path, previous: Path, wanted: Iterable[PackageEntry],
                   previous_index: Mapping[str, PackageEntry] | None = None) -> list[str]:
    """Hard-link into ``dest`` each wanted package that ``previous`` has unchanged; return the hrefs linked.

    Unchanged means the previous tree's repodata (``previous_index`` when the caller has read it
    already) lists the same href with the same checksum and the file there has the listed size.
    Raises RepodataError when ``previous`` has no readable repodata or is on another file system.
    """
    dest, previous = Path(dest), Path(previous)
    before = package_index(previous) if previous_index is None else previous_index
    linked = []
    for entry in wanted:
        old = before.get(entry.href)
        if old is None or (old.checksum_type, old.checksum, old.size) != (entry.checksum_type, entry.checksum,
                                                                           entry.size):
            continue
        src = tree_path(previous, entry.href)
        target = tree_path(dest, entry.href)
        try:
            if os.stat(src).st_size != entry.size:
                continue
            if target.exists() and os.path.samefile(src, target):
                linked.append(entry.href)
                continue
            _link_into(src, target)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise RepodataError(f"cannot hard-link {previous} into {dest}: they are on different file systems; "
                                    "keep composes on one file system") from None
            raise
        linked.append(entry.href)
    return linked


def break_shared_links(dest: Path, wanted: Mapping[str, PackageEntry], keep: Iterable[str] = ()) -> list[str]:
    """Remove files in ``dest/Packages`` that share their inode with another tree and that dnf could rewrite.

    A shared file stays when its href is in ``keep`` (just linked from an identical package) or when its
    size and checksum match what ``wanted`` (the metadata dnf will use) says: dnf then skips it. Every
    other shared file is unlinked, so dnf downloads a fresh copy instead of writing through the link.
    """
    dest = Path(dest)
    kept = set(keep)
    removed = []
    for rel in _files_under(dest, "Packages"):
        path = dest / rel
        st = os.lstat(path)
        if st.st_nlink < 2 or rel in kept:
            continue
        entry = wanted.get(rel)
        if entry is not None and _check_file(path, entry.size, entry.checksum_type, entry.checksum, True) is None:
            continue
        path.unlink()
        removed.append(rel)
    return removed


def samefile_count(dest: Path, other: Path, hrefs: Iterable[str]) -> int:
    """How many of ``hrefs`` are the same file (inode) in ``dest`` and ``other``."""
    count = 0
    for href in hrefs:
        try:
            if os.path.samefile(tree_path(dest, href), tree_path(other, href)):
                count += 1
        except FileNotFoundError:
            continue
    return count


def _replace_dir(src: Path, target: Path, *, link: bool) -> None:
    """Make ``target`` a copy (``link``: a tree of hard links) of ``src``: built beside it, then renamed in."""
    partial, old = target.with_name(f".{target.name}.partial"), target.with_name(f".{target.name}.old")
    for leftover in (partial, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, partial, copy_function=os.link if link else shutil.copy2)
    if target.exists():
        os.rename(target, old)
    os.rename(partial, target)
    if old.exists():
        shutil.rmtree(old)


def copy_repodata(source_tree: Path, dest_tree: Path) -> None:
    """Replace ``dest_tree/repodata`` with a copy of ``source_tree/repodata`` (a copy: dest may be rewritten later)."""
    _replace_dir(Path(source_tree) / "repodata", Path(dest_tree) / "repodata", link=False)


def make_kickstart_tree(os_tree: Path, kickstart_tree: Path) -> TreeReport:
    """Make the kickstart tree from a synced ``os`` tree: Packages/ as hard links, repodata/ copied.

    Empanadas downloaded every repo a second time for ``kickstart``; the content is the same, so links
    cost no space or bandwidth. Only ``Packages/`` and ``repodata/`` are replaced (each built beside
    the target and renamed in), so anything else already in the kickstart tree (the lorax installer
    tree merged later) stays. Returns the kickstart tree's verification (sizes; the bytes are the
    os tree's, verified by its sync).
    """
    os_tree, ks = Path(os_tree), Path(kickstart_tree)
    source = verify_tree(os_tree, checksums=False)
    if not source.ok:
        raise RepodataError(f"{os_tree} is not a complete tree, so no kickstart tree is made from it: "
                            + "; ".join(source.problems(5)))
    _replace_dir(os_tree / "Packages", ks / "Packages", link=True)
    copy_repodata(os_tree, ks)
    return verify_tree(ks, checksums=False)


# --- signatures --------------------------------------------------------------------------------


def checksig_argv(installroot: Path, files: Iterable[Path]) -> list[str]:
    """``rpm -K`` of packages against the keys in ``installroot``'s rpm database (and no other keys)."""
    return ["rpm", "--root", str(installroot), "--checksig", *map(str, files)]


class SignatureToolError(RuntimeError):
    """``rpm -K`` itself failed (its exit code contradicts its verdicts); retrying may help."""


def unverified_signatures(files: Iterable[Path | str], stdout: str) -> list[str]:
    """The packages of ``files`` whose ``rpm -K`` verdict is not ``signatures OK``, in order.

    rpm prints one ``<path>: <verdict>`` line per package on stdout: ``digests signatures OK``,
    ``digests OK`` (unsigned, exit 0), ``digests SIGNATURES NOT OK`` (wrong or missing key). A package
    is good only by its own verdict line; other lines (stderr, warnings, messages about other paths) are
    not verdicts, and a package without one (not an rpm, unreadable, missing) is bad.
    """
    verdicts: dict[str, str] = {}
    for line in stdout.splitlines():
        path, sep, verdict = line.rstrip().rpartition(": ")
        if sep and path not in verdicts:
            verdicts[path] = verdict
    bad = []
    for name in map(str, files):
        verdict = verdicts.get(name)
        if verdict is None:
            bad.append(f"{name}: no verdict from rpm -K (not a readable rpm package?)")
        elif not verdict.endswith("signatures OK"):
            bad.append(f"{name}: {verdict}")
    return bad


def check_signatures(installroot: Path, files: Iterable[Path], *, env: Mapping[str, str] | None = None,
                     batch: int = 500) -> list[str]:
    """Run ``rpm -K`` over ``files`` in batches; the :func:`unverified_signatures` lines of every batch.

    Raises SignatureToolError when rpm exits non-zero although every package of a batch has an OK verdict.
    """
    files = list(files)
    bad: list[str] = []
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        done = subprocess.run(checksig_argv(installroot, chunk), capture_output=True, text=True, errors="replace",
                              env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL)
        found = unverified_signatures(chunk, done.stdout)
        if done.returncode != 0 and not found:
            detail = "\n".join(done.stderr.strip().splitlines()[-10:]) or "no message"
            raise SignatureToolError(f"rpm -K exited {done.returncode} although every package it was given "
                                     f"verified: {detail}")
        bad += found
    return bad


def dearmor(armored: str) -> bytes:
    """The binary OpenPGP packets of ASCII-armored key blocks (what ``gpgv --keyring`` reads)."""
    out = bytearray()
    body: list[str] | None = None
    for line in armored.splitlines():
        line = line.strip()
        if line.startswith("-----BEGIN PGP"):
            body = []
        elif line.startswith("-----END PGP"):
            if body is None:
                raise ValueError("END line without BEGIN in armored key")
            out += base64.b64decode("".join(body))
            body = None
        elif body is not None and line and ":" not in line and not (line.startswith("=") and len(line) == 5):
            body.append(line)
    if not out:
        raise ValueError("no armored OpenPGP block found")
    return bytes(out)


def gpgv_argv(keyring: Path, signature: Path, data: Path) -> list[str]:
    return ["gpgv", "--quiet", "--keyring", str(Path(keyring).resolve()), str(signature), str(data)]


# --- what dnf printed --------------------------------------------------------------------------

_GPG_PATTERNS = re.compile(
    r"Public key for .* is not installed|GPG signature verification error|Bad GPG signature|"
    r"GPG check FAILED|GPG signature check failed|signature could not be verified", re.IGNORECASE)
# "(3/250): name.rpm   1.2 MB/s | 6.2 kB  00:00", or without "(i/N): " when only one file is fetched;
# dnf shortens long names to fit, so lines are counted, not matched to packages.
_DOWNLOAD = re.compile(r"^(\(\d+/\d+\): )?(?P<name>\S+)\s+[\d.]+\s*[kMGT]?B/s\s*\|\s*(?P<size>[\d.]+)\s*"
                       r"(?P<unit>[kMGT]?)B\s+[\d:-]+\s*$")
_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
_CLOSURE_PACKAGE = re.compile(r"^package: (?P<nevra>\S+) from (?P<repo>\S+)")


def gpg_failures(lines: Iterable[str]) -> list[str]:
    """dnf output lines that report a signature problem (a wrong or missing key: retrying cannot help)."""
    return [line.strip() for line in lines if _GPG_PATTERNS.search(line)]


def failed_downloads(lines: Iterable[str]) -> list[str]:
    """dnf's ``[FAILED] <file>: <reason>`` lines."""
    return [line.strip() for line in lines if line.lstrip().startswith("[FAILED]")]


def package_download(line: str, repoid: str) -> int | None:
    """The size dnf printed (about, in bytes) when ``line`` reports a finished package download, else None.

    Metadata downloads print the same kind of line under the repo id; those are not counted.
    """
    m = _DOWNLOAD.match(line.strip())
    if m is None or m["name"] == repoid:
        return None
    return int(float(m["size"]) * _UNITS[m["unit"]])


def parse_repoclosure(stdout: str) -> dict[str, list[str]]:
    """``dnf repoclosure`` stdout as ``{"<nevra> from <repo>": [unresolved dep, ...]}``, in dnf's order."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_deps = False
    for raw in stdout.splitlines():
        line = raw.strip()
        m = _CLOSURE_PACKAGE.match(line)
        if m:
            current = out.setdefault(f"{m['nevra']} from {m['repo']}", [])
            in_deps = False
        elif current is not None and line.startswith("unresolved deps"):
            in_deps = True
        elif current is not None and in_deps and line:
            current.append(line)
        elif not line:
            in_deps = False
    return out
