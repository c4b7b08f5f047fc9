"""Which directories a promotion acts on: the release's staging directory, its production directory
(``9.7-RC1`` in staging is ``9.7`` in production) and the state directory beside production.

:func:`resolve_target` refuses an unknown release or an unsafe path before anything runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from releng.core.layout import LayoutError, ReleaseTrees
from releng.core.profile import ReleaseProfile, find_profile, profile_names
from releng.core.promotion.base import PromotionError, slug
from releng.core.settings import Settings

STATE_DIR = ".releng"


@dataclass(frozen=True)
class StateDir:
    """``<production_root>/.releng``: promotion state that mirrors never see."""

    root: Path

    @property
    def lock_file(self) -> Path:
        return self.root / "promotion.lock"

    @property
    def log_file(self) -> Path:
        return self.root / "promotion-log.jsonl"

    def record_file(self, run_id: str) -> Path:
        return self.root / "promotions" / f"{slug(run_id)}.json"

    def verify_cache(self, production_dir: Path) -> Path:
        return self.root / "verify-cache" / f"{slug(str(production_dir))}.json"

    def lists_stale_marker(self, category_dir: Path) -> Path:
        return self.root / f"lists-stale-{slug(str(category_dir))}"

    @property
    def phase_work_dir(self) -> Path:
        """The running phase's rsync file lists: one phase writes at a time (the exclusive production lock), and
        each empties it first, so a worker killed mid-phase leaves nothing behind for long."""
        return self.root / "phase-work"



def state_dir(cfg: Settings) -> StateDir:
    """The promotion state directory of the configured production root."""
    return StateDir(Path(cfg.production_root) / STATE_DIR)


@dataclass(frozen=True)
class PromotionTarget:
    """One release's staging directory and the production directory it becomes."""

    release: str
    rc: bool
    revision: str
    staging_dir: Path
    production_dir: Path
    production_category: Path
    category: str
    state: StateDir

    @classmethod
    def from_dict(cls, data: Mapping) -> PromotionTarget:
        """The target a report or record names (what the later tasks of a promotion act on)."""
        production_dir, category = Path(data["production_dir"]), Path(data["production_category"])
        if category not in production_dir.parents:
            raise PromotionError(f"production {production_dir} is outside its category {category}; the promotion "
                                 "record is damaged: run the promotion again")
        return cls(data["release"], data["rc"], data["revision"], Path(data["staging_dir"]), production_dir,
                   category, data["category"], StateDir(Path(data["state_dir"])))

    def as_dict(self) -> dict:
        return {"release": self.release, "rc": self.rc, "revision": self.revision,
                "staging_dir": str(self.staging_dir), "production_dir": str(self.production_dir),
                "production_category": str(self.production_category), "category": self.category,
                "state_dir": str(self.state.root)}


def release_from_run(params: Mapping, event_extras: Sequence[Mapping]) -> tuple[str, bool]:
    """(release, rc) of a run: from the triggering staging Asset events, else from the params.

    Events for several releases are refused: one promotion is approved per release.
    """
    if event_extras:
        releases = sorted({str(e.get("release")) for e in event_extras})
        if len(releases) != 1:
            raise PromotionError(f"the staging Asset events name several releases ({', '.join(releases)}); "
                                 "trigger promote_to_production once per release with the release param")
        rc = event_extras[-1].get("rc", False)
        if not isinstance(rc, bool):
            raise PromotionError(f"the staging Asset event's rc is {rc!r}, not true/false; fix the DAG that emitted it")
        return releases[0], rc
    release = params.get("release")
    if not release:
        raise PromotionError("no release chosen: trigger promote_to_production with the release param "
                             "(e.g. el9), or let a staging Asset event trigger it")
    rc = params.get("rc", False)
    if not isinstance(rc, bool):
        raise PromotionError(f"param rc is {rc!r}; use true or false")
    return str(release), rc


def check_event_staging_dir(target: PromotionTarget, event_extras: Sequence[Mapping]) -> None:
    """The latest staging Asset event, when it names its staging directory, must name the one promoted."""
    named = event_extras[-1].get("staging_dir") if event_extras else None
    if named and os.path.realpath(named) != os.path.realpath(target.staging_dir):
        raise PromotionError(f"the staging Asset event says {named} was staged, but {target.release} "
                             f"(rc={target.rc}) promotes {target.staging_dir}; the DAG that staged it and this one "
                             "disagree on the RELENG_STAGING_ROOT setting or the release directory")


class NotPromotable(PromotionError):
    """The release's channel never reaches production (beta, lookahead): refused by design, before any tree is
    read."""


def promotable_profile(release: str, cfg: Settings) -> ReleaseProfile:
    """The profile of a release a promotion may publish; PromotionError for an unknown release, NotPromotable for a
    beta or lookahead release. Reads the profile only, no tree."""
    known = profile_names(cfg.config_dir)
    if not isinstance(release, str) or release not in known:
        raise PromotionError(f"unknown release {release!r}; known releases: {', '.join(known) or 'none'} "
                             f"(profiles in {cfg.config_dir})")
    profile = find_profile(release, cfg.config_dir)
    if not profile.promotable:
        raise NotPromotable(f"{release} is a {profile.channel} release (channel: {profile.channel}): {profile.channel} "
                            "releases live only in staging and are never promoted to production, by design. Nothing "
                            "was read or changed. Its staging directory is what users of the channel download")
    return profile


def resolve_target(release: str, rc: bool, cfg: Settings) -> PromotionTarget:
    """Check the release and both directories before anything touches a tree."""
    profile = promotable_profile(release, cfg)
    trees = ReleaseTrees(profile, Path(cfg.staging_root), Path(cfg.production_root))
    try:
        staging_dir, production_dir = trees.staging_dir(rc), trees.production_dir()
        staging_category, production_category = trees.staging_category(), trees.production_category()
    except LayoutError as exc:
        raise PromotionError(f"release {release}: {exc}; fix the profile or the RELENG_*_ROOT settings") from None
    if not staging_dir.is_dir():
        raise PromotionError(f"staging directory {staging_dir} does not exist; stage {release} first "
                             f"(full_compose or general_updates){'' if rc else ', or promote with rc=true'}")
    real_staging = Path(os.path.realpath(staging_dir))
    real_category = Path(os.path.realpath(staging_category))
    if real_category not in real_staging.parents:
        raise PromotionError(f"staging directory {staging_dir} resolves to {real_staging}, outside the staging "
                             f"category {real_category}; refusing to promote from there")
    if production_dir.is_symlink():
        raise PromotionError(f"production directory {production_dir} is a symlink; a release directory in "
                             "production must be a real directory: replace the link by hand, then promote")
    real_production = Path(os.path.realpath(production_dir))
    if (real_production == real_staging or real_staging in real_production.parents
            or real_production in real_staging.parents):
        raise PromotionError(f"staging {real_staging} and production {real_production} overlap; "
                             "RELENG_STAGING_ROOT and RELENG_PRODUCTION_ROOT must be separate trees")
    return PromotionTarget(release, rc, profile.revision, staging_dir, production_dir, production_category,
                           trees.category_name, StateDir(Path(cfg.production_root) / STATE_DIR))


def choose_release(release: str | None, rc: bool | None, params: Mapping,
                   event_extras: Sequence[Mapping]) -> tuple[str, bool, Sequence[Mapping]]:
    """(release, rc, the events to check) of a run: an explicit release wins over the events and params."""
    if release:
        return release, bool(rc), []
    return (*release_from_run(params, event_extras), event_extras)

