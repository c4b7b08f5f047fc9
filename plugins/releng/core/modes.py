"""Modes of everything the pipeline publishes: files 0644 (0755 when executable), directories 0755.

Mirrors and web servers read the trees as another user, and the mirror file
lists leave out what is not world-readable, so a file written 0600 is never
served. The mode a writer gets depends on the umask (a worker may run with
077) and on the API (``tempfile.mkstemp`` and ``NamedTemporaryFile`` make 0600,
``mkdtemp`` 0700, ``shutil.copy2`` keeps the source's), so each writer sets it
explicitly with these helpers, and the rsyncs into staging and production apply
``RSYNC_CHMOD`` as well.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FILE_MODE = 0o644
EXEC_MODE = 0o755
DIR_MODE = 0o755
# rsync's --chmod: directories 0755, files 0644 or 0755 (X keeps execute only where some execute bit is set).
RSYNC_CHMOD = "--chmod=D755,Fu=rwX,Fgo=rX"


def public_mode(st_mode: int) -> int | None:
    """The published mode for a file or directory of ``st_mode``; None for anything else (symlinks)."""
    if stat.S_ISDIR(st_mode):
        return DIR_MODE
    if stat.S_ISREG(st_mode):
        return EXEC_MODE if st_mode & 0o111 else FILE_MODE
    return None


def make_public(path: Path | str) -> bool:
    """Give ``path`` its published mode (symlinks are left alone); True when the mode changed."""
    st = os.lstat(path)
    mode = public_mode(st.st_mode)
    if mode is None or stat.S_IMODE(st.st_mode) == mode:
        return False
    os.chmod(path, mode)
    return True


def make_public_tree(root: Path | str) -> int:
    """:func:`make_public` on ``root`` and everything below it (symlinks not followed); the number changed."""
    changed = int(make_public(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            changed += make_public(os.path.join(dirpath, name))
    return changed


def public_dirs(path: Path | str) -> Path:
    """``mkdir -p`` whose new directories are 0755 whatever the umask; existing ones are left as they are."""
    target = path = Path(path)
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(directory, DIR_MODE)
    return target
