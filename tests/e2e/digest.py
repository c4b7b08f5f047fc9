"""What an executor must not change in a compose: a digest of its tree, comparable between runs.

Every file and link of the compose directory (``work/`` and ``logs/`` aside), by its path with the compose id
and the checksums in repodata file names replaced, and for each repo tree the packages its repodata lists
(NEVRA). Bytes that differ from run to run by design (timestamps in ISOs and metadata, signatures made with
another key) are left out; which trees, files, packages and images a compose has is not.

``RECORDED`` holds the digest the LocalExecutor-side e2e test (tests/e2e/test_full_compose.py, dag.test()) made
in this session, so the Celery stack's test compares against it instead of composing a second time.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from releng.core.repo.primary import read_packages

SKIPPED_TOP = ("work", "logs", "extract")  # the run's scratch area and logs; extract/: what a test unpacked
RECORDED: dict[str, list[str]] = {}  # conf key -> the digest's lines


def digest_lines(top: Path) -> list[str]:
    compose_id = top.name
    lines = []
    for path in sorted(top.rglob("*")):
        rel = path.relative_to(top)
        if rel.parts[0] in SKIPPED_TOP or (path.is_dir() and not path.is_symlink()):
            continue
        name = re.sub(r"\b[0-9a-f]{64}-", "<sum>-", str(rel).replace(compose_id, "<compose-id>"))
        if path.is_symlink():
            name += " -> " + re.sub(r"\d{8}\.\d{6}\.\d+", "<date>", str(path.readlink()))
        if path.name == "repomd.xml" and path.parent.name == "repodata":
            packages = sorted(str(n) for n in read_packages(path.parent.parent))
            name += f" packages: {len(packages)} {hashlib.sha256(chr(10).join(packages).encode()).hexdigest()}"
        lines.append(name)
    return sorted(lines)  # after normalizing: checksums in file names would otherwise decide the order


def tree_digest(top: Path) -> str:
    return hashlib.sha256("\n".join(digest_lines(top)).encode()).hexdigest()
