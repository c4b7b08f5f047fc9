"""The point release's plan: what the run changes besides copying the new release, shown to the approver.

Part of the promotion record (key ``point_release``), so the record's digest,
which the approval is bound to, covers it: the staging and production links to
switch, the superseded release to move to the vault (its size: files linked,
repodata copied) and whether it is already there. Computed from the trees as
they are, so a rerun after a crash plans only what is left, and a run with
nothing left plans nothing (no approval is asked).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from releng.core.layout import LayoutError, ReleaseTrees
from releng.core.point_release import switch_links
from releng.core.point_release.vault_release import differences, filesystem_problem, measure
from releng.core.profile import find_profile
from releng.core.promotion.approval import EXTRA_STEPS
from releng.core.promotion.base import PromotionError
from releng.core.promotion.target import PromotionTarget
from releng.core.settings import Settings

REVISION_RE = re.compile(r"^(?P<major>\d+)\.(?P<minor>\d+)$")
PLAN_KEY = "point_release"


def _minor_of(revision: str, major: int) -> int | None:
    m = REVISION_RE.match(revision)
    return int(m["minor"]) if m and int(m["major"]) == major else None


def previous_release(trees: ReleaseTrees, wanted: str | None) -> str | None:
    """The point release this one supersedes: ``wanted`` when given (checked), else the newest older
    ``<major>.<n>`` directory in production's category; None when there is none."""
    profile = trees.profile
    category = trees.production_category()
    if wanted:
        minor = _minor_of(wanted, profile.major)
        if minor is None or minor >= profile.minor:
            raise PromotionError(f"previous release {wanted!r} is not an earlier point release of {profile.major} "
                                 f"than {profile.revision} (use X.Y, e.g. {profile.major}.{max(profile.minor - 1, 0)})")
        if not (category / wanted).is_dir() and not trees.vault_dir(wanted).is_dir():
            raise PromotionError(f"previous release {wanted}: neither {category / wanted} nor "
                                 f"{trees.vault_dir(wanted)} exists; name the release production holds, or leave "
                                 "the param empty to find it")
        return wanted
    older = []
    if category.is_dir():
        for entry in os.scandir(category):
            minor = _minor_of(entry.name, profile.major)
            if minor is not None and minor < profile.minor and entry.is_dir(follow_symlinks=False):
                older.append((minor, entry.name))
    return max(older)[1] if older else None


def point_release_plan(target: PromotionTarget, trees: ReleaseTrees, previous: str | None) -> dict:
    """What the point release changes besides the release directory; PromotionError when it cannot be done."""
    try:
        prev = previous_release(trees, previous)
        staging_links = trees.staging_links(target.rc)
        production_links = trees.production_links()
        staging_category, production_category = trees.staging_category(), trees.production_category()
    except LayoutError as exc:
        raise PromotionError(f"release {target.release}: {exc}") from None
    problems = (switch_links.check_links(staging_category, staging_links)
                + switch_links.check_links(production_category, production_links))
    plan: dict = {
        "revision": target.revision, "previous": prev,
        "staging_category": str(staging_category), "production_category": str(production_category),
        "staging_links": staging_links, "production_links": production_links,
        "staging_link_changes": switch_links.link_changes(staging_category, staging_links),
        "production_link_changes": switch_links.link_changes(production_category, production_links),
        "vault": None,
    }
    if prev is not None:
        release, vault = trees.production_release_dir(prev), trees.vault_dir(prev)
        vault_plan: dict = {"release": str(release), "vault": str(vault)}
        if release.is_dir():
            if fs_problem := filesystem_problem(release, vault.parent, target.state.root):
                problems.append(fs_problem)
            vault_plan.update(measure(release).as_dict())
            if vault.exists():
                diff = differences(release, vault)
                if diff:
                    problems.append(f"{vault} already exists and is not a hard-linked vault of {release} "
                                    f"(e.g. {'; '.join(diff[:5])}); look at what it holds and move it away by hand")
                vault_plan["state"] = "in the vault; to remove from mirror/pub"
            else:
                vault_plan["state"] = "to vault"
        else:
            vault_plan["state"] = "done"
        plan["vault"] = vault_plan
    if problems:
        raise PromotionError("the point release cannot be done as it stands; nothing was changed:\n- "
                             + "\n- ".join(problems))
    plan["actions"] = actions(plan)
    return plan


def actions(plan: Mapping) -> list[str]:
    """What is left to do, one line each for people (empty: nothing; no approval is asked)."""
    out = [f"staging link {name}: {old or '(none)'} → {new}"
           for name, (old, new) in plan["staging_link_changes"].items()]
    out += [f"production link {name}: {old or '(none)'} → {new}"
            for name, (old, new) in plan["production_link_changes"].items()]
    vault = plan.get("vault")
    if vault and vault["state"] == "to vault":
        out.append(f"vault {Path(vault['release']).name}: {vault['release']} → {vault['vault']} (hard links), "
                   f"then removed from mirror/pub")
    elif vault and vault["state"] != "done":
        out.append(f"remove {vault['release']} from mirror/pub (already in {vault['vault']})")
    return out


def record_plan(cfg: Settings, previous: str | None) -> Callable[[PromotionTarget], dict]:
    """The change report's ``plan`` hook of a point release: the plan, its actions (which need an approval)
    and the steps the promotion must also finish."""
    def plan(target: PromotionTarget) -> dict:
        trees = ReleaseTrees(find_profile(target.release, cfg.config_dir), Path(cfg.staging_root),
                             Path(cfg.production_root))
        made = point_release_plan(target, trees, previous or None)
        return {PLAN_KEY: made, "actions": made["actions"], "extra_steps": list(EXTRA_STEPS)}
    return plan
