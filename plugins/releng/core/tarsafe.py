"""Safe extraction of a downloaded tarball into a fresh directory.

Every member is checked before anything is written: no absolute names, no ``..``, only regular
files, directories and links whose targets stay inside the destination, no device files or fifos,
and limits on each member's size, the total size and the number of members. The archive is then
extracted (with tarfile's ``data`` filter as a second line of defence) into a temp dir next to the
destination and renamed into place, so the destination is either the whole archive or untouched.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from releng.core.modes import make_public_tree, public_dirs

GiB = 1024**3


class TarSafetyError(ValueError):
    """The archive is unsafe or unreadable; nothing was extracted."""


@dataclass(frozen=True)
class Limits:
    max_member_size: int = 8 * GiB
    max_total_size: int = 32 * GiB
    max_members: int = 100_000


@dataclass(frozen=True)
class Extracted:
    path: Path
    members: int
    bytes: int
    seconds: float


def check_members(members: list[tarfile.TarInfo], limits: Limits, what: str) -> int:
    """Refuse anything unsafe; return the total size of the regular files."""
    if len(members) > limits.max_members:
        raise TarSafetyError(f"{what} has {len(members)} members, more than the limit of {limits.max_members}")
    total = 0
    seen: set[str] = set()
    symlinks: set[str] = set()
    for m in members:
        name = _checked_name(m.name, what)
        parents = name.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            parent = "/".join(parents[:depth])
            if parent in symlinks:
                raise TarSafetyError(f"{what}: member {m.name!r} lies under the symlink {parent!r}; "
                                     "writing through a link could leave the destination")
        if m.isreg():
            if m.size > limits.max_member_size:
                raise TarSafetyError(f"{what}: member {m.name!r} is {m.size} bytes, "
                                     f"more than the per-member limit of {limits.max_member_size}")
            total += m.size
            if total > limits.max_total_size:
                raise TarSafetyError(f"{what}: members add up to more than the limit of {limits.max_total_size} "
                                     f"bytes (at {m.name!r})")
        elif m.issym():
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            if m.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise TarSafetyError(f"{what}: member {m.name!r} is a symlink to {m.linkname!r}, "
                                     "which points outside the destination")
            symlinks.add(name)
        elif m.islnk():
            target = _checked_name(m.linkname, what, f"the hard link target of {m.name!r}")
            if target not in seen or target in symlinks:
                raise TarSafetyError(f"{what}: member {m.name!r} is a hard link to {m.linkname!r}, "
                                     "which is not an earlier file of the archive")
        elif not m.isdir():
            kind = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
                    tarfile.FIFOTYPE: "a fifo", tarfile.CONTTYPE: "a contiguous file"}.get(m.type, f"type {m.type!r}")
            raise TarSafetyError(f"{what}: member {m.name!r} is {kind}; only files, directories and links are allowed")
        seen.add(name)
    return total


def _checked_name(name: str, what: str, role: str = "") -> str:
    label = role or f"member {name!r}"
    if not name or name.startswith("/"):
        raise TarSafetyError(f"{what}: {label} has the absolute or empty name {name!r}")
    if "\\" in name or "\0" in name:
        raise TarSafetyError(f"{what}: {label} has a backslash or NUL in its name {name!r}")
    if ".." in name.split("/"):
        raise TarSafetyError(f"{what}: {label} contains '..' in {name!r}, which could write outside the destination")
    return posixpath.normpath(name)


def safe_extract(tarball: Path, dest: Path, limits: Limits = Limits(), *, replace: bool = False,
                 merge: bool = False) -> Extracted:
    """Extract ``tarball`` so that ``dest`` holds exactly its content.

    The archive is read and checked in full first (a truncated or corrupt gzip fails here), the
    free space is checked against the total size, then it is extracted into a temp dir next to
    ``dest`` and renamed into place. An existing ``dest`` is an error unless ``replace``. With
    ``merge``, ``dest`` may exist and each top-level entry of the archive replaces the entry of the
    same name in it (each by one rename); other entries of ``dest`` stay.
    """
    tarball, dest = Path(tarball), Path(dest)
    what = str(tarball)
    if (dest.exists() or dest.is_symlink()) and not (replace or merge):
        raise TarSafetyError(f"{dest} already exists; remove it or extract with replace=True")
    started = time.monotonic()
    try:
        tar = tarfile.open(tarball, "r:*")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise _unreadable(what, exc) from exc
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise _unreadable(what, exc) from exc
        total = check_members(members, limits, what)
        public_dirs(dest.parent)
        free = shutil.disk_usage(dest.parent).free
        if total > free:
            raise TarSafetyError(f"{what} needs {total} bytes but {dest.parent} has {free} free; free some space")
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would otherwise become dest's mode
        try:
            tar.extractall(tmp, members=members, filter="data")
            make_public_tree(tmp)  # the archive's modes and the umask's implied directories
            if merge:
                public_dirs(dest)
                for entry in sorted(tmp.iterdir()):
                    _put_in_place(entry, dest / entry.name)
            else:
                _put_in_place(tmp, dest)
        except tarfile.FilterError as exc:
            raise TarSafetyError(f"{what}: refused by the tar data filter: {exc}") from exc
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise _unreadable(what, exc) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Extracted(dest, len(members), total, time.monotonic() - started)


def _unreadable(what: str, exc: BaseException) -> TarSafetyError:
    detail = " ".join(str(exc).split())
    return TarSafetyError(f"{what} cannot be read as a tar archive ({type(exc).__name__}: {detail}); "
                          "it is truncated or corrupt: download it again or rebuild it")


def _put_in_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an old ``dest`` is moved aside first and removed after."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rename(dest, old / dest.name)
    os.rename(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
