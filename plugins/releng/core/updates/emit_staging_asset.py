"""emit_staging_asset: the staging asset event of a general_updates run that changed staging."""

from __future__ import annotations

from collections.abc import Sequence

from releng.core.updates.prepare_updates import UpdatesSummary
from releng.core.updates.update_repodata import TreeUpdate


def staging_event(summary: UpdatesSummary, results: Sequence[TreeUpdate], source: str) -> dict | None:
    """The event's extra (``release``, ``rc``, ``staging_dir``, ``source``, ``repos``, ``packages_added``), or
    None when no tree changed: then no promotion is asked for."""
    if not any(r.changed for r in results):
        return None
    return {"release": summary.release, "rc": bool(summary.rc), "staging_dir": str(summary.staging_dir),
            "source": source, "repos": list(summary.repos), "packages_added": sum(r.added for r in results)}
