"""The promotion record: what the change report found and the approver approves, stored as JSON with its digest.

Each item of a record belongs to one phase (:func:`phase_of`); the record's
sha256 digest (:func:`record_digest`) ties the approval to exactly this
content. :class:`ReportSummary` is what the change report hands on as XCom,
for people and the UI only: later steps read the record file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from releng.core import fs
from releng.core.promotion.base import PromotionError
from releng.core.promotion.target import PromotionTarget

RECORD_VERSION = 1
METADATA_NAMES = frozenset({".treeinfo", ".discinfo", "CHECKSUM", "media.repo"})


def phase_of(path: str) -> str:
    """``payload``, ``metadata`` (repodata files, treeinfo, CHECKSUM) or ``index`` (repomd.xml and signature).

    Metadata names other files, so it lands after them; ``repomd.xml`` names
    the repodata files, so it lands last.
    """
    parts = path.split("/")
    name = parts[-1]
    if "repodata" in parts[:-1]:
        return "index" if name.startswith("repomd.xml") else "metadata"
    if name == "repodata":
        return "metadata"
    if name in METADATA_NAMES or name.startswith("CHECKSUM") or name.endswith(".CHECKSUM"):
        return "metadata"
    return "payload"



def record_digest(record: Mapping) -> str:
    """sha256 of the record's canonical JSON (sorted keys, no spaces), without its own digest."""
    body = {k: v for k, v in record.items() if k != "digest"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()


def write_record(target: PromotionTarget, record: Mapping) -> Path:
    path = target.state.record_file(record["run_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    fs.atomic_write(path, json.dumps(record, sort_keys=True, indent=1, ensure_ascii=False), errors="surrogateescape")
    return path


def load_record(path: str | Path, digest: str) -> dict:
    """The promotion record, refused when it is not the one that was approved."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8", errors="surrogateescape"))
    except (OSError, ValueError) as exc:
        raise PromotionError(f"cannot read the promotion record {path} ({exc}); run the promotion again") from None
    if record.get("digest") != digest or record_digest(record) != digest:
        raise PromotionError(f"promotion record {path} does not match the approved digest {digest}; it was "
                             "changed after the report. Run the promotion again for a new report and approval")
    return record



@dataclass(frozen=True)
class ReportSummary:
    """The change report's result as XCom: where the record is, its digest, totals and the approver's text."""

    record: str
    digest: str
    target: dict
    dry_run: bool
    changes: int
    lists_stale: bool
    totals: dict
    delete_bound: dict
    subject: str
    markdown: str

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> ReportSummary:
        return cls(**{f.name: data[f.name] for f in fields(cls)})

