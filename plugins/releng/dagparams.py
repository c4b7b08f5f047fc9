"""Facts every DAG shares: who owns it, how tasks retry, and the release choice on the trigger form."""

from __future__ import annotations

import warnings
from datetime import timedelta

from airflow.sdk import Param

from releng.core.profile import ConfigDirError, ReleaseChoice, release_choice
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


def release_names() -> list[str]:
    """The releases that may be chosen: the profiles in RELENG_CONFIG_DIR that validate."""
    return list(releases().names)


def release_param(*, scheduled: bool = False) -> Param:
    """A required choice among the valid profiles; the default is the last valid name in sort order.

    ``scheduled``: the DAG runs on a schedule with the default, which is then the last profile name
    (el9 with the shipped profiles) whether valid or not; a broken one stops the DAG from loading, so
    that scheduled runs never update another release instead.
    """
    choice = releases()
    default = choice.names[-1]
    if scheduled:
        default = choice.all_names[-1]
        if default in choice.problems:
            listed = "\n".join(str(p) for p in choice.problems[default])
            raise ConfigDirError(f"scheduled runs update {default} (the last profile name in RELENG_CONFIG_DIR="
                                 f"'{choice.config_dir}'), which is invalid; fix it (python -m releng validate):"
                                 f"\n{listed}")
    description = "A profile in RELENG_CONFIG_DIR."
    if choice.broken:
        description += f" Not offered: {broken_summary(choice)}"
    return Param(default, type="string", enum=list(choice.names), title="Release profile", description=description)
