"""Issue 7 finding 4: run a writer under umask 077 (a locked-down worker) and check that what it wrote is
world-readable: files 0644 (0755 when executable), directories 0755, symlinks ignored."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def private_umask():
    """The process umask is 077 inside the block (children inherit it), restored after."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def umask077():
    """:func:`private_umask` for the whole test (fixtures set up before it keep the usual umask)."""
    with private_umask():
        yield


def not_public(*roots: Path) -> list[str]:
    """``path mode`` of every entry under (and including) ``roots`` whose mode is not the published one."""
    bad = []
    for root in map(Path, roots):
        paths = [root]
        for dirpath, dirnames, filenames in os.walk(root):
            paths += [Path(dirpath, n) for n in (*dirnames, *filenames)]
        for path in paths:
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                ok = mode == 0o755
            elif stat.S_ISREG(st.st_mode):
                ok = mode in (0o644, 0o755) and (mode == 0o755) == bool(st.st_mode & 0o100)
            else:
                ok = stat.S_ISLNK(st.st_mode)
            if not ok:
                bad.append(f"{path} {oct(mode)}")
    return bad
