"""``switch_links``: point the release links at the new point release, in staging and then in production.

Staging: ``latest-<major>`` and ``<X.Y>`` → the staged directory (``9.7-RC1``).
Production: ``<major>`` and ``latest-<major>`` → ``<X.Y>``. Each link is swapped
by renaming a new link over the old one (:func:`releng.core.fs.swap_symlink`),
so a reader sees the old target or the new one, never none; a link is never
made inside a directory (the old script's ``ln -sr`` on a rerun put ``9.7``
inside ``9.7-RC2/``), and a real directory where a link belongs is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from releng.core.fs import swap_symlink
from releng.core.promotion.base import PromotionError
from releng.core.promotion.lock import production_lock
from releng.core.promotion.target import PromotionTarget
from releng.core.promotion.update_file_lists import mark_lists_stale


class LinkError(PromotionError):
    """A link cannot be switched (a real directory in its place, a missing target); nothing was changed."""


def link_changes(category: Path, links: Mapping[str, str]) -> dict[str, list[str | None]]:
    """``{name: [current target or None, wanted target]}`` for each link that does not point where wanted."""
    changes: dict[str, list[str | None]] = {}
    for name, target in links.items():
        path = category / name
        current = os.readlink(path) if path.is_symlink() else None
        if current != target:
            changes[name] = [current, target]
    return changes


def check_links(category: Path, links: Mapping[str, str]) -> list[str]:
    """Problems that would stop :func:`point_links` (a real file or directory in a link's place)."""
    return [f"{category / name} is a real {'directory' if (category / name).is_dir() else 'file'}, not a link; "
            f"move it away by hand, then run again" for name in links
            if os.path.lexists(category / name) and not (category / name).is_symlink()]


def point_links(category: Path, links: Mapping[str, str], *, before: Callable[[], object] = lambda: None) -> dict:
    """Point each link of ``category`` at its target; ``before()`` runs once before the first change.

    Returns ``{name: [old, new]}`` of the links changed (empty on a rerun). LinkError, with nothing changed, when
    a real directory is where a link goes or a target directory does not exist.
    """
    problems = check_links(category, links)
    problems += [f"{category / target} does not exist; {name} would point nowhere" for name, target in links.items()
                 if not (category / target).is_dir()]
    if problems:
        raise LinkError("; ".join(problems))
    changes = link_changes(category, links)
    if changes:
        before()
    for name, (_old, new) in changes.items():
        swap_symlink(str(new), category / name)
    return changes


def switch_links(record: Mapping, *, log: Callable[[str], None] = lambda _m: None) -> dict:
    """The ``switch_links`` step of an approved point release: staging's links, then production's (under the
    production lock, the production category's file lists marked stale first)."""
    plan = record["point_release"]
    target = PromotionTarget.from_dict(record)
    production_category = Path(plan["production_category"])
    if production_category != target.production_category:
        raise LinkError(f"the record's production category {production_category} is not the release's "
                        f"{target.production_category}; the record is damaged: run the point release again")
    staging = point_links(Path(plan["staging_category"]), plan["staging_links"])
    with production_lock(target.state, exclusive=True, holder=f"{record['run_id']} switch_links", log=log):
        production = point_links(production_category, plan["production_links"],
                                 before=lambda: mark_lists_stale(target, production_category))
    for where, changed in (("staging", staging), ("production", production)):
        for name, (old, new) in changed.items():
            log(f"{where}: {name} {old or '(none)'} -> {new}")
    if not staging and not production:
        log("every link already pointed at the new release; nothing changed")
    return {"staging": staging, "production": production}
