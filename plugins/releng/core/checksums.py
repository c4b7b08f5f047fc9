"""Checksum files in the BSD format Pungi writes (``sha256sum -c`` reads them)::

    # Rocky-9.7-x86_64-dvd.iso: 11906187264 bytes
    SHA256 (Rocky-9.7-x86_64-dvd.iso) = 0f3c...

One ``<file>.CHECKSUM`` per deliverable; the directory's ``CHECKSUM`` is those
blocks sorted by file name, so it does not depend on directory order.

With a release signing key the directory's ``CHECKSUM`` is clear-signed in place (an OpenPGP cleartext
signature around the same lines, as Fedora publishes its CHECKSUM files): ``gpg --verify CHECKSUM`` checks
it, and ``sha256sum -c CHECKSUM`` (``--ignore-missing`` when only some files were downloaded) still checks
the files, warning that the signature's lines are not checksum lines. Only ``--strict`` refuses it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from releng.core.fs import atomic_write

CHUNK = 4 * 1024 * 1024
_LINE_RE = re.compile(r"^(?P<algo>[A-Z0-9]+) \((?P<name>[^)]+)\) = (?P<hex>[0-9a-f]+)$")


@dataclass(frozen=True)
class Checksum:
    name: str
    size: int
    algo: str
    hexdigest: str

    def block(self) -> str:
        return f"# {self.name}: {self.size} bytes\n{self.algo.upper()} ({self.name}) = {self.hexdigest}\n"


def file_digest(path: Path, algo: str = "sha256") -> str:
    """Hex digest of a file, read in 4 MiB chunks (constant memory for multi-GB ISOs)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def checksum(path: Path, algo: str = "sha256", name: str | None = None, digest: str | None = None) -> Checksum:
    """The checksum entry of a file; ``name`` defaults to its basename (a symlink's own name)."""
    path = Path(path)
    return Checksum(name or path.name, os.stat(path).st_size, algo, digest or file_digest(path, algo))


def hash_once(path: Path, algos: Iterable[str]) -> dict[str, str]:
    """Hex digests of one file for several algorithms, in one read."""
    hashers = {a: hashlib.new(a) for a in dict.fromkeys(algos)}
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            for h in hashers.values():
                h.update(view[:n])
    return {a: h.hexdigest() for a, h in hashers.items()}


def checksum_text(entries: Iterable[Checksum]) -> str:
    """The blocks of ``entries``, sorted by name."""
    return "".join(e.block() for e in sorted(entries, key=lambda e: e.name))


def write_checksum_file(path: Path, entries: Iterable[Checksum]) -> Path:
    """Write blocks sorted by name, atomically."""
    return atomic_write(path, checksum_text(entries))


CLEARSIGN_BEGIN = "-----BEGIN PGP SIGNED MESSAGE-----"
SIGNATURE_BEGIN = "-----BEGIN PGP SIGNATURE-----"


def clearsigned_body(text: str) -> str | None:
    """The signed text of an OpenPGP clear-signed message (dash-escaping undone, ending in a newline);
    None when ``text`` is not one."""
    lines = text.splitlines()
    if not lines or lines[0] != CLEARSIGN_BEGIN or SIGNATURE_BEGIN not in lines:
        return None
    try:
        start = lines.index("", 1) + 1  # armor headers (Hash: ...) end at the first empty line
    except ValueError:
        return None
    end = lines.index(SIGNATURE_BEGIN)
    if start > end:
        return None
    body = [line[2:] if line.startswith("- ") else line for line in lines[start:end]]
    return "".join(line + "\n" for line in body)


def parse_checksum_file(text: str) -> list[tuple[str, str, str]]:
    """(algo, name, hex) for every hash line; comment lines are skipped, anything else is an error.
    A clear-signed file is read from its signed text (the signature is not checked here)."""
    body = clearsigned_body(text)
    text = text if body is None else body
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        m = _LINE_RE.match(line)
        if not m:
            raise ValueError(f"line {number} is not a BSD checksum line: {line!r}")
        out.append((m["algo"].lower(), m["name"], m["hex"]))
    return out


def read_checksum_file(path: Path) -> list[Checksum]:
    """The entries of a checksum file, with the sizes its ``# <name>: <size> bytes`` lines record (0 when none)."""
    text = Path(path).read_text()
    text = clearsigned_body(text) or text
    sizes = {line[2:].split(":", 1)[0]: int(line.rsplit(":", 1)[1].split()[0])
             for line in text.splitlines() if line.startswith("# ") and line.endswith(" bytes")}
    return [Checksum(name, sizes.get(name, 0), algo, hexdigest) for algo, name, hexdigest in parse_checksum_file(text)]
