"""Mirror file lists: what quick-fedora-mirror, MirrorManager and mirror scanners read.

``fullfiletimelist-<category>``, what quick-fedora-mirror clients, MirrorManager
and scan-primary-mirror read::

    [Version]
    2

    [Files]
    <max(mtime, ctime)>\\t<type>\\t<size>\\t<path>
    ...

    [Checksums SHA1]
    <sha1>\\t<path of a repomd.xml>
    ...

    [End]

``fullfilelist``: the same entries as ``./<path>`` lines (create-filelist ``-f``).
``imagelist-<category>``: the ``./<path>`` lines of the entries whose name ends
in one of productmd's image formats (``.iso``, ``.qcow2``, ``.box``...), what
create-filelist ``-i`` writes for fedfind and "latest image" scripts.

A *category* (:class:`Category`) is one directory of production with its own
lists: ``root`` (the production root, everything mirrors get), the
distribution's ``mirror/pub/<short>``, ``mirror/pub/sig`` and ``mirror/vault``.
Each is listed on its own: a change in one rewrites that category's lists and
the root's (which holds everything), never another category's.

Semantics kept from create-filelist: times are the integer ``max(st_mtime,
st_ctime)`` of ``lstat``; types are ``f``/``d``/``l`` plus ``-`` (not
world-readable) or ``*`` (below a directory that is not world-readable), ``-``
winning; sizes are ``lstat``'s (a link's is its target's length); entries that
are not group-readable (after following links) and dangling links are left
out; ``.~tmp~`` and ``.nfs*`` are skipped everywhere. The version stays ``2``
as upstream prints it (clients accept up to 3, some parsers only 2).

Fixed here: the lists never list themselves or each other (create-filelist
``-s``), so regenerating an unchanged tree gives byte-identical lists and no
mirror is triggered for nothing; entries are sorted by path, component by
component (a directory right before its contents), so two generations compare
line by line; each list is written to a hidden temp file next to it and renamed
into place only when its content changed, ``fullfilelist`` before the time
list, since mirrors start syncing when the time list changes.

The walk streams: one directory's names at a time, so memory stays flat on
trees of millions of entries.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from productmd.images import SUPPORTED_IMAGE_FORMATS

VERSION = "2"
FILELIST = "fullfilelist"
TIMELIST_PREFIX = "fullfiletimelist"
IMAGELIST_PREFIX = "imagelist"
IMAGE_SUFFIXES = tuple(f".{fmt}" for fmt in SUPPORTED_IMAGE_FORMATS)
CHECKSUM_SECTION = "[Checksums SHA1]"
SKIP_NAMES = frozenset({".~tmp~"})
_S_IFMT, _S_IFDIR, _S_IFLNK, _S_IFREG = 0o170000, 0o040000, 0o120000, 0o100000
_BAD_NAME_CHARS = ("\n", "\r", "\t")


class FileListError(ValueError):
    """A tree cannot be listed, or a list does not have the format."""


def timelist_name(category: str) -> str:
    if not category or "/" in category or category.startswith("."):
        raise FileListError(f"category name {category!r} cannot name a file list; use e.g. 'rocky'")
    return f"{TIMELIST_PREFIX}-{category}"


def imagelist_name(category: str) -> str:
    return f"{IMAGELIST_PREFIX}-{timelist_name(category).removeprefix(TIMELIST_PREFIX + '-')}"


def _top_level_skip(name: str) -> bool:
    """The lists themselves, their temp files and old copies (create-filelist ``-s``)."""
    return (name == FILELIST or name.startswith(TIMELIST_PREFIX) or name.startswith(f".{FILELIST}")
            or name.startswith(f".{TIMELIST_PREFIX}") or name.startswith(f"{IMAGELIST_PREFIX}-")
            or name.startswith(f".{IMAGELIST_PREFIX}-"))


@dataclass(frozen=True)
class Category:
    """A production directory with its own file lists.

    ``path`` is relative to the production root (``""``: the root itself); ``list_name`` names the lists
    (``fullfiletimelist-<list_name>``, ``imagelist-<list_name>``); ``skip`` are top-level names never listed
    (the root's ``.releng`` promotion state).
    """

    name: str
    path: str
    list_name: str
    skip: frozenset[str] = frozenset()

    def directory(self, production_root: Path) -> Path:
        root = Path(production_root)
        return root / self.path if self.path else root

    def contains(self, production_root: Path, path: Path) -> bool:
        """True when ``path`` (absolute) is this category's directory or below it."""
        top = self.directory(production_root)
        return Path(path) == top or top in Path(path).parents


def categories(distribution: str, state_dir_name: str = ".releng") -> tuple[Category, ...]:
    """Every category of a production tree, innermost first (a list is made after the lists it contains).

    The root's lists carry the distribution's name (``fullfiletimelist-rocky`` at the top of the ``rocky`` rsync
    module, where quick-fedora-mirror clients of that module look for ``fullfiletimelist-<module>``).
    """
    timelist_name(distribution)  # refuses a name that cannot name a list
    if distribution == "sig":
        raise FileListError("'sig' is the SIG category, not a distribution; name the distribution (e.g. 'rocky')")
    return (
        Category(distribution, f"mirror/pub/{distribution}", distribution),
        Category("sig", "mirror/pub/sig", "sig"),
        Category("vault", "mirror/vault", "vault"),
        Category("root", "", distribution, frozenset({state_dir_name})),
    )


def list_files(category: Category) -> tuple[str, str, str]:
    """The names of a category's lists: ``fullfilelist``, its time list and its image list."""
    return FILELIST, timelist_name(category.list_name), imagelist_name(category.list_name)


@dataclass
class ListStats:
    entries: int = 0
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    excluded_unreadable: int = 0
    dangling_links: list[str] = field(default_factory=list)


def _scan(dir_path: str) -> tuple[list[str], list[os.stat_result]]:
    fd = os.open(dir_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = os.listdir(fd)
        names.sort()
        lstat = os.lstat
        return names, [lstat(n, dir_fd=fd) for n in names]
    finally:
        os.close(fd)


def _checked_scan(path: str) -> tuple[list[str], list[os.stat_result]]:
    names, sts = _scan(path)
    joined = "/".join(names)
    if "\n" in joined or "\r" in joined or "\t" in joined:
        bad = next(n for n in names if any(c in n for c in _BAD_NAME_CHARS))
        raise FileListError(f"{path}/{bad!r}: a name with a newline, CR or TAB cannot be written to a "
                            "file list; rename or remove it in staging and promote again")
    return names, sts


def walk_chunks(root: Path, stats: ListStats, repomd_paths: list[str],
                skip: Iterable[str] = ()) -> Iterator[tuple[str, list[str]]]:
    """Chunks of (time-list lines, relative paths) in path order; collects repomd.xml paths.

    Depth first with each directory's names sorted, so a directory comes right
    before its contents. Written for speed (it is stat-bound on big trees): one
    ``lstat`` per entry relative to the directory's fd, one string per entry.
    """
    top_skip = frozenset(skip)
    # a frame: [relative prefix, absolute path, restricted, names, stats, next index];
    # restricted = below a directory that is not world-readable
    frames: list[list] = [["", os.fspath(root), False, *_checked_scan(os.fspath(root)), 0]]
    while frames:
        frame = frames[-1]
        rel, path, restricted, names, sts, start = frame
        lines: list[str] = []
        paths: list[str] = []
        add_line, add_path = lines.append, paths.append
        files = size = 0
        descend = None
        i = start
        for i in range(start, len(names)):
            name = names[i]
            if (name[0] == "." and (name in SKIP_NAMES or name.startswith(".nfs"))) or (
                    not rel and (_top_level_skip(name) or name in top_skip)):
                continue
            st = sts[i]
            mode = st.st_mode
            kind = mode & _S_IFMT
            if kind == _S_IFREG or kind == _S_IFDIR:
                perm = mode
            elif kind == _S_IFLNK:
                try:
                    perm = os.stat(f"{path}/{name}").st_mode
                except OSError:
                    stats.dangling_links.append(f"{rel}{name}")
                    continue
            else:
                continue  # devices, FIFOs, sockets: never mirrored
            if not perm & 0o040:
                stats.excluded_unreadable += 1
                continue
            letter = "f" if kind == _S_IFREG else "d" if kind == _S_IFDIR else "l"
            if not perm & 0o004:
                letter += "-"
            elif restricted:
                letter += "*"
            mt, ct = st.st_mtime_ns, st.st_ctime_ns
            p = rel + name
            add_line(f"{(mt if mt > ct else ct) // 1000000000}\t{letter}\t{st.st_size}\t{p}\n")
            add_path(p)
            if kind == _S_IFREG:
                files += 1
                size += st.st_size
                if name == "repomd.xml" and rel.endswith("repodata/"):
                    repomd_paths.append(p)
            elif kind == _S_IFDIR:
                stats.dirs += 1
                sub = f"{path}/{name}"
                descend = [f"{p}/", sub, restricted or (mode & 0o005) != 0o005, *_checked_scan(sub), 0]
                break
            else:
                stats.links += 1
        stats.entries += len(lines)
        stats.files += files
        stats.bytes += size
        if lines:
            yield "".join(lines), paths
        if descend is None:
            frames.pop()
        else:
            frame[5] = i + 1
            frames.append(descend)


def _sha1(path: Path) -> str:
    h = hashlib.sha1()  # the format's checksum section is SHA1 (quick-fedora-mirror runs sha1sum --check)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class _ListWriter:
    """A hidden temp file next to its target, compared with the target while it is written."""

    def __init__(self, target: Path):
        self.target = target
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb", buffering=1 << 20)
        try:
            self.current: BinaryIO | None = open(target, "rb", buffering=1 << 20)
        except FileNotFoundError:
            self.current = None
        self.same = self.current is not None

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        self.file.write(data)
        if self.same and self.current is not None:
            self.same = self.current.read(len(data)) == data

    def close(self) -> bool:
        """Finish the temp file; True when its content equals the current list's."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.tmp, 0o644)
        if self.current is not None:
            self.same = self.same and self.current.read(1) == b""
            self.current.close()
        return self.same

    def discard(self) -> None:
        self.file.close()
        if self.current is not None:
            self.current.close()
        self.tmp.unlink(missing_ok=True)


@dataclass
class PublishResult:
    directory: str
    timelist: str
    stats: ListStats
    changed: list[str]
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"directory": self.directory, "timelist": self.timelist, "entries": self.stats.entries,
                "files": self.stats.files, "dirs": self.stats.dirs, "links": self.stats.links,
                "bytes": self.stats.bytes, "changed": self.changed,
                "dangling_links": len(self.stats.dangling_links),
                "excluded_unreadable": self.stats.excluded_unreadable, "seconds": round(self.seconds, 3)}


def publish(directory: Path, category: str, *, checksums: bool = True, skip: Iterable[str] = (),
            log: Callable[[str], None] = lambda _m: None) -> PublishResult:
    """Generate the three lists for ``directory`` and rename each into place only if its content changed.

    ``category`` names the lists (``fullfiletimelist-<category>``, ``imagelist-<category>``); ``skip`` names
    top-level entries never listed.
    """
    start = time.monotonic()
    directory = Path(directory)
    if not directory.is_dir():
        raise FileListError(f"{directory} is not a directory; nothing to list (was production promoted?)")
    name = timelist_name(category)
    stats = ListStats()
    repomds: list[str] = []
    filelist, imagelist, timelist = (_ListWriter(directory / FILELIST),
                                     _ListWriter(directory / imagelist_name(category)),
                                     _ListWriter(directory / name))
    writers = (filelist, imagelist, timelist)
    try:
        timelist.write(f"[Version]\n{VERSION}\n\n[Files]\n")
        for lines, paths in walk_chunks(directory, stats, repomds, skip):
            timelist.write(lines)
            filelist.write("./" + "\n./".join(paths) + "\n")
            images = [p for p in paths if p.endswith(IMAGE_SUFFIXES)]
            if images:
                imagelist.write("./" + "\n./".join(images) + "\n")
        timelist.write(f"\n{CHECKSUM_SECTION}\n")
        if checksums:
            timelist.write("".join(f"{_sha1(directory / rel)}\t{rel}\n" for rel in repomds))
        timelist.write("\n[End]\n")
        unchanged = [w.close() for w in writers]
    except BaseException:
        for w in writers:
            w.discard()
        raise
    changed = []
    # the time list last: mirrors react to it, and it must not name what the other lists lack
    for writer, same in zip(writers, unchanged, strict=True):
        if same:
            writer.tmp.unlink()
            continue
        os.replace(writer.tmp, writer.target)
        changed.append(writer.target.name)
    if changed:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    result = PublishResult(str(directory), name, stats, changed, time.monotonic() - start)
    if stats.dangling_links:
        log(f"left {len(stats.dangling_links)} dangling links out of the lists: "
            f"{', '.join(stats.dangling_links[:10])}")
    log(f"file lists for {directory}: {stats.entries} entries ({stats.files} files, {stats.dirs} dirs, "
        f"{stats.links} links, {stats.bytes / 1048576:.1f} MiB) in {result.seconds:.1f} s; "
        f"{'updated ' + ', '.join(changed) if changed else 'unchanged, left in place'}")
    return result


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    mtime: int
    type: str
    size: int
    path: str


@dataclass
class TimeList:
    version: int
    files: list[Entry]
    checksums: dict[str, dict[str, str]]  # section name ("SHA1") -> {path: hex}


def parse_timelist(text: str) -> TimeList:
    """Read a time list strictly: every section, 4 TAB fields per file line, integer times, and ``[End]``."""
    lines = text.split("\n")
    if not text.endswith("[End]\n"):
        raise FileListError("the list does not end with [End]; it is truncated or still being written")
    section, version = None, None
    files: list[Entry] = []
    checksums: dict[str, dict[str, str]] = {}
    for number, line in enumerate(lines[:-1], 1):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            if section.startswith("Checksums "):
                checksums[section.split(" ", 1)[1]] = {}
            continue
        if not line:
            continue
        if section == "Version":
            version = int(line)
        elif section == "Files":
            parts = line.split("\t")
            if len(parts) != 4 or not parts[0].isdigit() or not parts[2].isdigit():
                raise FileListError(f"line {number}: not <time>\\t<type>\\t<size>\\t<path>: {line!r}")
            if parts[1] not in ("f", "d", "l", "f-", "d-", "l-", "f*", "d*", "l*"):
                raise FileListError(f"line {number}: unknown type {parts[1]!r}")
            files.append(Entry(int(parts[0]), parts[1], int(parts[2]), parts[3]))
        elif section and section.startswith("Checksums "):
            digest, _, path = line.partition("\t")
            checksums[section.split(" ", 1)[1]][path] = digest
        elif section != "End":
            raise FileListError(f"line {number}: text outside a known section: {line!r}")
    if version is None or version > 3:
        raise FileListError(f"[Version] is {version!r}; clients accept 1 to 3")
    return TimeList(version, files, checksums)
