"""What ``dnf reposync`` and ``dnf repoclosure`` print: signature failures, failed and finished downloads,
unresolved dependencies."""

from __future__ import annotations

import re
from collections.abc import Iterable

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
