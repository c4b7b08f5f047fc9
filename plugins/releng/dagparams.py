"""Facts every DAG shares: who owns it, how tasks retry, and the release choice on the trigger form."""

from __future__ import annotations

import warnings
from datetime import timedelta

from airflow.sdk import Param

from releng.core.profile import ReleaseChoice, release_choice
from releng.core.releases import default_release, updates_releases
from releng.core.settings import settings

OWNER = "release-eng"
SHOWN_PROBLEMS = 10
# Bounds of the list params (repo ids, image names): Airflow refuses a larger conf before a run exists.
MAX_NAME_LENGTH = 64
MAX_NAMES = 64


def default_args(retry_delay: timedelta = timedelta(minutes=2)) -> dict:
    return {"owner": OWNER, "retries": 1, "retry_delay": retry_delay}


def releases() -> ReleaseChoice:
    """The profiles in RELENG_CONFIG_DIR, each validated (a few small YAML files: cheap at parse time).

    A broken profile is left out of every choice and named in a warning, which the dag-processor logs.
    """
    choice = release_choice(settings().config_dir)
    if choice.broken:
        warnings.warn(f"release profiles not offered on the trigger forms: {broken_summary(choice)}",
                      UserWarning, stacklevel=2)
    return choice


def broken_summary(choice: ReleaseChoice) -> str:
    """The broken profiles' problems as FILE: KEY: REASON, the first few of them."""
    problems = [str(p) for found in choice.problems.values() for p in found]
    more = f"; … and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    return (f"{', '.join(choice.broken)} (invalid; python -m releng validate): "
            f"{'; '.join(problems[:SHOWN_PROBLEMS])}{more}")


def release_param(*, optional: bool = False, description: str = "A profile in RELENG_CONFIG_DIR.") -> Param:
    """A choice among the valid profiles whose default is RELENG_DEFAULT_RELEASE, else the newest release by
    version (el10 before el9). A setting that names no valid profile stops the DAG from loading, naming it.

    ``optional``: no release (null) may be chosen too (promote_to_production takes it from the staging event).
    """
    choice = releases()
    default = default_release(settings().default_release, choice)
    if choice.broken:
        description += f" Not offered: {broken_summary(choice)}"
    if optional:
        return Param(default, type=["null", "string"], enum=[None, *choice.names], title="Release profile",
                     description=description)
    return Param(default, type="string", enum=list(choice.names), title="Release profile", description=description)


def scheduled_releases() -> list[str]:
    """The releases scheduled_updates covers now: RELENG_UPDATES_RELEASES, or every profile, newest first."""
    return updates_releases(settings().updates_releases, releases())
