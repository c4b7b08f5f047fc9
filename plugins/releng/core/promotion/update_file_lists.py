"""``update_file_lists``: regenerate the production category's mirror file lists when a promotion changed it.

A phase that writes production first leaves a *lists stale* marker in the
state directory; the lists are regenerated while it is there (or when they are
missing) and the marker goes once they are published.
"""

from __future__ import annotations

from releng.core import filelist, fs
from releng.core.promotion.base import Log, quiet, utc_now
from releng.core.promotion.lock import production_lock
from releng.core.promotion.target import PromotionTarget


def mark_lists_stale(target: PromotionTarget) -> None:
    """Note that production is about to change, so the file lists must be made again."""
    marker = target.state.lists_stale_marker(target.production_category)
    if not marker.exists():
        fs.atomic_write(marker, utc_now() + "\n")


def lists_stale(target: PromotionTarget) -> bool:
    """True when a promotion changed production since the file lists were made, or they are missing."""
    category = target.production_category
    lists = [category / filelist.FILELIST, category / filelist.timelist_name(target.category)]
    return target.state.lists_stale_marker(category).exists() or not all(p.exists() for p in lists)


def update_file_lists(target: PromotionTarget, *, log: Log = quiet, force: bool = False) -> dict:
    """Regenerate the category's mirror lists when a promotion changed production (or they are missing)."""
    category = target.production_category
    marker = target.state.lists_stale_marker(category)
    if not force and not lists_stale(target):
        log(f"file lists in {category} are current (no promotion changed production since); left in place")
        return {"directory": str(category), "changed": [], "skipped": True}
    with production_lock(target.state, exclusive=True, holder="update_file_lists", log=log):
        result = filelist.publish(category, target.category, log=log)
        marker.unlink(missing_ok=True)
    return {**result.summary(), "skipped": False}
