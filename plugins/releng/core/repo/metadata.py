"""Metadata files opened for reading in every compression createrepo_c writes: gzip, xz, bzip2, zstd or none.

gzip, xz and bzip2 come from the standard library; zstd needs Python 3.14's
``compression.zstd`` or the ``zstd`` command (Debian's and EL's ``zstd``
package); without either, a ``.zst`` file is refused with a message saying so.
zchunk (``.zck``) files are only ever extra records beside a readable one, so they are refused.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, cast

from releng.core.repo.repomd import RepoError


def _zstd_reader(path: Path) -> BinaryIO:
    try:
        from compression import zstd  # Python 3.14+
    except ImportError:
        zstd = None
    if zstd is not None:
        return zstd.open(path, "rb")
    if shutil.which("zstd") is None:
        raise RepoError(
            f"{path} is zstd-compressed; reading it needs Python 3.14 or the zstd command "
            "(install the zstd package), or have the repo written with createrepo_c --general-compress-type=xz"
        )
    if not path.is_file():
        raise FileNotFoundError(path)
    return cast(BinaryIO, io.BufferedReader(_ZstdPipe(path)))


class _ZstdPipe(io.RawIOBase):
    """``zstd -dc FILE`` as a readable stream (streams, so memory stays flat)."""

    def __init__(self, path: Path):
        proc = subprocess.Popen(["zstd", "-q", "-d", "-c", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None  # both are pipes
        self._proc, self._stdout, self._stderr = proc, proc.stdout, proc.stderr
        self._path = path

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stdout.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        self._stdout.close()
        err = self._stderr.read().decode(errors="replace").strip()
        self._stderr.close()
        rc = self._proc.wait()
        super().close()
        if rc != 0:
            raise RepoError(f"zstd could not decompress {self._path}: {err or f'exit {rc}'}")


@contextmanager
def open_metadata(path: Path) -> Iterator[BinaryIO]:
    """A metadata file opened for reading, decompressed by its suffix (.gz, .xz, .bz2, .zst or none)."""
    path = Path(path)
    suffix = path.suffix
    if suffix == ".zck":
        raise RepoError(f"{path}: zchunk metadata cannot be read here; read the record of the same type without "
                        "_zck (createrepo_c writes both)")
    f: BinaryIO
    try:
        if suffix == ".gz":
            f = cast(BinaryIO, gzip.open(path, "rb"))
        elif suffix == ".xz":
            f = cast(BinaryIO, lzma.open(path, "rb"))
        elif suffix == ".bz2":
            f = cast(BinaryIO, bz2.open(path, "rb"))
        elif suffix == ".zst":
            f = _zstd_reader(path)
        else:
            f = open(path, "rb")
    except FileNotFoundError:
        raise RepoError(f"{path} does not exist") from None
    try:
        yield f
    finally:
        f.close()
