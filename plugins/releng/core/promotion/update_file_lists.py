"""``update_file_lists``: regenerate the mirror file lists of every production category a promotion changed.

The categories are :func:`releng.core.filelist.categories`: the distribution's
``mirror/pub/<short>``, ``mirror/pub/sig``, ``mirror/vault`` and the root. A
step that writes production first marks every category holding the path it
writes as *stale* (a marker in the state directory); ``update_file_lists``
regenerates the stale categories (and those whose directory exists without its
lists), innermost first and the root last, and removes each marker once its
lists are published. A category nobody changed is not read or rewritten: its
lists stay byte-identical, with their mtimes. The lists are made under the
production lock, so no promotion writes while they are taken.
"""

from __future__ import annotations

from pathlib import Path

from releng.core import filelist, fs
from releng.core.layout import SIG_CATEGORY
from releng.core.profile import find_profile
from releng.core.promotion.base import Log, quiet, utc_now
from releng.core.promotion.lock import production_lock
from releng.core.promotion.target import STATE_DIR, PromotionTarget, StateDir
from releng.core.settings import settings


def production_categories(target: PromotionTarget) -> tuple[filelist.Category, ...]:
    """The categories of the production tree ``target`` belongs to, innermost first (a SIG's target names the
    ``sig`` category: the distribution's name comes from its profile)."""
    distribution = target.category
    if distribution == SIG_CATEGORY:
        distribution = find_profile(target.release, settings().config_dir).shortname.lower()
    return filelist.categories(distribution, STATE_DIR)


def _root(target: PromotionTarget) -> Path:
    return target.state.root.parent


def mark_path_changed(state: StateDir, production_root: Path, categories: tuple[filelist.Category, ...],
                      path: Path) -> list[str]:
    """Note that ``path`` in production is about to change: every category holding it is stale. Returns their
    names."""
    marked = []
    for category in categories:
        if category.contains(production_root, path):
            marker = state.lists_stale_marker(category.directory(production_root))
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                fs.atomic_write(marker, utc_now() + "\n")
            marked.append(category.name)
    return marked


def mark_lists_stale(target: PromotionTarget, path: Path | None = None) -> list[str]:
    """Note that production is about to change at ``path`` (default: the release directory)."""
    return mark_path_changed(target.state, _root(target), production_categories(target),
                             path or target.production_dir)


def stale_categories(target: PromotionTarget) -> list[filelist.Category]:
    """Categories whose directory exists and whose lists a change made stale, or which have no lists yet."""
    root = _root(target)
    out = []
    for category in production_categories(target):
        directory = category.directory(root)
        if not directory.is_dir():
            continue
        missing = not all((directory / name).exists() for name in filelist.list_files(category))
        if missing or target.state.lists_stale_marker(directory).exists():
            out.append(category)
    return out


def lists_stale(target: PromotionTarget) -> bool:
    """True when a category's lists must be made again (a change since they were made, or they are missing)."""
    return bool(stale_categories(target))


def update_file_lists(target: PromotionTarget, *, log: Log = quiet, force: bool = False) -> dict:
    """Regenerate the lists of every stale category (``force``: every category that exists), innermost first."""
    root = _root(target)
    with production_lock(target.state, exclusive=True, holder="update_file_lists", log=log):
        todo = ([c for c in production_categories(target) if c.directory(root).is_dir()] if force
                else stale_categories(target))
        if not todo:
            log("file lists of every category are current (nothing changed production since); left in place")
            return {"categories": {}, "changed": [], "skipped": True}
        results: dict[str, dict] = {}
        for category in todo:
            directory = category.directory(root)
            marker = target.state.lists_stale_marker(directory)
            result = filelist.publish(directory, category.list_name, skip=category.skip, log=log)
            marker.unlink(missing_ok=True)
            results[category.name] = result.summary()
    untouched = [c.name for c in production_categories(target) if c.name not in results]
    log(f"file lists made for {', '.join(results)}; {', '.join(untouched) or 'no other category'} left as they were")
    changed = [f"{name}:{f}" for name, r in results.items() for f in r["changed"]]
    return {"categories": results, "changed": changed, "skipped": False}
