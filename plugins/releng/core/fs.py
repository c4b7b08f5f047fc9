"""File-system primitives every step uses, with one durability rule.

A file appears under its final name only complete: it is written to a
temp name in the same directory, given its published mode, fsync'd, renamed
over the target, and the directory is fsync'd so the rename survives a crash.
Symlinks are swapped the same way (a new link renamed over the old one), so
readers see the old target or the new one, never none.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from releng.core.modes import FILE_MODE, make_public


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path | str, data: str | bytes, *, mode: int = FILE_MODE, encoding: str = "utf-8",
                 errors: str = "strict") -> Path:
    """Write ``data`` to ``path`` all at once (temp name, mode, fsync, rename, directory fsync)."""
    path = Path(path)
    payload = data.encode(encoding, errors) if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # mkstemp makes 0600 whatever the umask
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def swap_symlink(target: str, link: Path | str) -> bool:
    """Point ``link`` at ``target`` by renaming a new link over it; False when it already pointed there."""
    link = Path(link)
    if link.is_symlink() and os.readlink(link) == target:
        return False
    tmp = link.with_name(f".{link.name}.link-tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)
    return True


def link_or_copy(source: Path | str, dest: Path | str) -> bool:
    """Put ``source``'s content at ``dest`` (hard link when the file system allows, else a copy) atomically,
    with the published mode; True when it was hard-linked."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
        linked = True
    except OSError:
        shutil.copy2(source, tmp)
        linked = False
    make_public(tmp)
    os.replace(tmp, dest)
    return linked


def human_bytes(n: float) -> str:
    """``1.5 GiB``-style sizes for logs and reports."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
