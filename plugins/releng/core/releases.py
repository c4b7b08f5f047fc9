"""Which releases: the trigger forms' default release and the releases the updates schedule covers.

Releases are ordered by version (major, then minor), never by profile name: as text "el10" sorts before "el9".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from releng.core.profile import ProfileError, ReleaseChoice, ReleaseProfile, find_profile, profile_names

# The DAG that does one release's updates, and the DAG that starts it for every scheduled release.
UPDATES_DAG = "general_updates"
SCHEDULE_DAG = "scheduled_updates"


class ReleasesError(ValueError):
    """A release setting names a release that cannot be used; the message says which and what to do."""


def _natural(name: str) -> tuple:
    """``name`` with its digit runs as numbers: el9 < el10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def is_distribution(profile: ReleaseProfile) -> bool:
    """A stable release of the distribution itself: not a beta or lookahead, not a SIG."""
    return profile.promotable and not profile.sig


def newest_first(profiles: Iterable[ReleaseProfile]) -> list[ReleaseProfile]:
    """The stable distribution releases from the newest to the oldest (by major, then minor, then name, digits as
    numbers), then the beta and lookahead releases, then the SIGs, each in the same order."""
    by_version = sorted(profiles, key=lambda p: (p.major, p.minor, _natural(p.name)), reverse=True)
    return ([p for p in by_version if is_distribution(p)] + [p for p in by_version if not p.promotable]
            + [p for p in by_version if p.promotable and p.sig])


def _valid_profiles(choice: ReleaseChoice) -> list[ReleaseProfile]:
    return [choice.profiles[name] for name in choice.names]


def default_release(setting: str, choice: ReleaseChoice) -> str:
    """The release the trigger forms offer first: RELENG_DEFAULT_RELEASE, else the newest valid release.

    ``choice``: the profiles of RELENG_CONFIG_DIR. A setting that names no valid profile is a ReleasesError.
    """
    if not setting:
        return newest_first(_valid_profiles(choice))[0].name
    if setting in choice.names:
        return setting
    valid = ", ".join(p.name for p in newest_first(_valid_profiles(choice)))
    fix = f"set RELENG_DEFAULT_RELEASE to one of {valid}, or unset it to offer the newest release first"
    if setting in choice.problems:
        listed = "\n".join(str(p) for p in choice.problems[setting])
        raise ReleasesError(f"RELENG_DEFAULT_RELEASE={setting!r} names a release profile that is invalid; fix it "
                            f"(python -m releng validate) or {fix}:\n{listed}")
    raise ReleasesError(f"RELENG_DEFAULT_RELEASE={setting!r} is not a release profile in RELENG_CONFIG_DIR="
                        f"'{choice.config_dir}'; {fix}")


def updates_releases(setting: Sequence[str], choice: ReleaseChoice) -> list[str]:
    """The releases a scheduled updates run covers, in order: RELENG_UPDATES_RELEASES as listed, or (empty) every
    stable distribution release of ``choice`` newest first, then the invalid profiles by name. Beta, lookahead and
    SIG releases are updated only when the setting lists them (a SIG never: it gets new packages with a compose).

    Names are not checked here: each release gets its own run, and :func:`check_release` fails that release's
    run alone.
    """
    if setting:
        return list(setting)
    return [p.name for p in newest_first(_valid_profiles(choice)) if is_distribution(p)] + sorted(choice.problems)


def unknown_releases(setting: Sequence[str], config_dir: str | Path) -> list[str]:
    """The names in RELENG_UPDATES_RELEASES that are not profiles in ``config_dir``."""
    known = set(profile_names(config_dir))
    return [name for name in setting if name not in known]


def check_release(name: str, config_dir: str | Path) -> ReleaseProfile:
    """The profile of a release the schedule updates; a ReleasesError saying what to do when there is none."""
    known = profile_names(config_dir)
    if name not in known:
        raise ReleasesError(
            f"RELENG_UPDATES_RELEASES names {name!r}, which is not a release profile in RELENG_CONFIG_DIR="
            f"'{config_dir}' (profiles: {', '.join(known) or 'none'}); add {name}.yaml there, or remove {name} from "
            "RELENG_UPDATES_RELEASES (empty: every stable distribution release)")
    try:
        return find_profile(name, config_dir)
    except ProfileError as exc:
        raise ReleasesError(f"the release profile {name} is invalid, so its updates cannot run; fix it (python -m "
                            f"releng validate), or remove {name} from RELENG_UPDATES_RELEASES:\n{exc}") from None


def updates_run_id(release: str, scheduled_at: datetime) -> str:
    """The run id of the general_updates run a scheduled run starts for ``release``: the release and the
    schedule's time, so the runs list shows which release each run updated and for which scheduled run."""
    return f"{SCHEDULE_DAG}__{release}__{scheduled_at.isoformat()}"
