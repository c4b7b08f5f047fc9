"""Primary metadata: the packages of a tree, their NEVRAs in rpm's version order, and what changed between two sets.

Primary is read with lxml's ``iterparse`` (only ``<package>`` ends reach Python: a release's AppStream
primary has hundreds of thousands of elements) and each ``<package>`` is dropped once read, so memory
stays flat for repos of any size.
"""

from __future__ import annotations

import lzma
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lxml import etree

from releng.core.repo.metadata import open_metadata
from releng.core.repo.repomd import NS_COMMON, NS_RPM, REPOMD, RepoError, read_repomd, tree_path

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


# --- primary -----------------------------------------------------------------------------------


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

    def to_nevra(self) -> Nevra:
        """The package's :class:`Nevra` (epoch as a number, 0 when primary leaves it empty)."""
        return Nevra(self.name, self.arch, int(self.epoch or 0), self.version, self.release)


def iter_packages(tree: Path) -> Iterator[PackageEntry]:
    """Stream the packages of ``tree``'s primary, one at a time."""
    tree = Path(tree)
    primary = next((r for r in read_repomd(tree) if r.type == "primary"), None)
    if primary is None:
        raise RepoError(f"{tree / REPOMD} lists no primary metadata")
    path = tree_path(tree, primary.href)
    with open_metadata(path) as f:
        try:
            for _, elem in etree.iterparse(f, events=("end",), tag=f"{NS_COMMON}package", resolve_entities=False,
                                           no_network=True, huge_tree=True):
                yield _package(elem, path)
                elem.clear()  # drop what was read: flat memory for any primary size
                while elem.getprevious() is not None:
                    del elem.getparent()[0]
        except (etree.XMLSyntaxError, EOFError, lzma.LZMAError, OSError) as exc:
            raise RepoError(f"{path}: cannot read primary metadata; it cannot be parsed: {exc}") from None


def _package(elem: etree._Element, path: Path) -> PackageEntry:
    version = elem.find(f"{NS_COMMON}version")
    location = elem.find(f"{NS_COMMON}location")
    checksum = elem.find(f"{NS_COMMON}checksum")
    size = elem.find(f"{NS_COMMON}size")
    name = elem.findtext(f"{NS_COMMON}name", "")
    arch = elem.findtext(f"{NS_COMMON}arch", "")
    if not name or not arch or version is None or location is None or checksum is None or size is None:
        raise RepoError(f"{path}: package {name!r} lacks name, arch, version, location, checksum or size")
    return PackageEntry(
        name=name, epoch=version.get("epoch", "0"), version=version.get("ver", ""), release=version.get("rel", ""),
        arch=arch, href=location.get("href", ""),
        checksum_type=checksum.get("type", "sha256"), checksum=(checksum.text or "").strip(),
        size=int(size.get("package", "0")),
        sourcerpm=elem.findtext(f"{NS_COMMON}format/{NS_RPM}sourcerpm") or None,
    )


def package_index(tree: Path) -> dict[str, PackageEntry]:
    """The packages of ``tree`` by href."""
    return {p.href: p for p in iter_packages(tree)}


def read_packages(tree: Path) -> set[Nevra]:
    """Every package's NEVRA from the tree's primary metadata (empty when there is no repomd.xml)."""
    if not (Path(tree) / REPOMD).exists():
        return set()
    return {p.to_nevra() for p in iter_packages(tree)}
