"""``repomd.xml``: the records naming a repository's metadata files, and the one error every repo reader raises.

A tree is ``<tree>/repodata/repomd.xml`` plus the files its records and primary
name, by hrefs relative to the tree.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

NS_REPO = "{http://linux.duke.edu/metadata/repo}"
NS_COMMON = "{http://linux.duke.edu/metadata/common}"
NS_RPM = "{http://linux.duke.edu/metadata/rpm}"
REPOMD = "repodata/repomd.xml"
REPOMD_ASC = "repodata/repomd.xml.asc"
# Files in repodata/ that repomd.xml does not (and cannot) list.
REPOMD_COMPANIONS = ("repomd.xml", "repomd.xml.asc", "repomd.xml.key")
# Old repos write "sha" for SHA-1.
_HASH_NAMES = {"sha": "sha1"}
# Directories find_repos never descends into: packages, and rsync's --delay-updates scratch.
SKIP_DIRS = frozenset({"Packages", ".~tmp~"})


class RepoError(ValueError):
    """A tree's metadata is missing, unreadable, inconsistent, or names a path outside the tree."""


@dataclass(frozen=True)
class MetadataRecord:
    """One ``<data>`` record of ``repomd.xml``: primary, filelists, other, group, modules, updateinfo..."""

    type: str
    href: str
    checksum_type: str
    checksum: str
    size: int | None


def tree_path(tree: Path, href: str) -> Path:
    """``tree/href``, refusing absolute hrefs and any that climb out of the tree."""
    parts = [p for p in href.split("/") if p not in ("", ".")]  # PurePosixPath's parts, without its cost per call
    if not href or href.startswith("/") or ".." in parts or not parts:
        raise RepoError(f"{tree}: metadata names {href!r}, which is not a path inside the tree")
    return Path(f"{tree}/{'/'.join(parts)}")


def hash_name(checksum_type: str) -> str:
    """The hashlib name of a repodata checksum type; RepoError for one hashlib lacks."""
    name = _HASH_NAMES.get(checksum_type.lower(), checksum_type.lower())
    if name not in hashlib.algorithms_available:
        raise RepoError(f"checksum type {checksum_type!r} is not supported by this Python's hashlib")
    return name


def read_repomd(tree: Path) -> list[MetadataRecord]:
    """The ``<data>`` records of ``tree/repodata/repomd.xml``."""
    path = Path(tree) / REPOMD
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise RepoError(f"{path} does not exist; the tree has no repodata (was it synced?)") from None
    except (ET.ParseError, OSError) as exc:
        raise RepoError(f"{path} cannot be read: {exc}") from None
    records = []
    for data in root.iter(f"{NS_REPO}data"):
        location = data.find(f"{NS_REPO}location")
        checksum = data.find(f"{NS_REPO}checksum")
        size = (data.findtext(f"{NS_REPO}size") or "").strip()
        if location is None or checksum is None or not location.get("href") or not (checksum.text or "").strip():
            raise RepoError(f"{path}: record {data.get('type')!r} has no location or checksum")
        records.append(MetadataRecord(
            type=data.get("type", ""), href=location.get("href", ""), checksum_type=checksum.get("type", "sha256"),
            checksum=(checksum.text or "").strip(), size=int(size) if size else None,
        ))
    return records


def stale_metadata(tree: Path) -> list[Path]:
    """Files in ``tree/repodata`` that ``repomd.xml`` no longer names (left by an older sync)."""
    keep = {PurePosixPath(r.href).name for r in read_repomd(tree)} | set(REPOMD_COMPANIONS)
    base = Path(tree) / "repodata"
    return sorted(p for p in base.iterdir() if p.is_file() and p.name not in keep)


def find_repos(root: Path) -> list[Path]:
    """Repository directories (those holding ``repodata/``) under ``root``, relative, sorted.

    Does not descend into ``Packages`` or into a repository, so it lists
    directories, not the hundreds of thousands of packages below them.
    """
    root = Path(root)
    found: list[Path] = []
    stack = [root]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as it:
                subdirs = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            continue
        if "repodata" in subdirs:
            found.append(here.relative_to(root))
            continue
        stack.extend(here / d for d in reversed(subdirs) if d not in SKIP_DIRS)
    return sorted(found)
