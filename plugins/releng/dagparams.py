"""Facts every DAG shares: who owns it, how tasks retry, and the release choice on the trigger form."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param

from releng.core.profile import profile_names
from releng.core.settings import settings

OWNER = "release-eng"


def default_args(retry_delay: timedelta = timedelta(minutes=2)) -> dict:
    return {"owner": OWNER, "retries": 1, "retry_delay": retry_delay}


def release_names() -> list[str]:
    """The profiles in RELENG_CONFIG_DIR (a directory listing: cheap enough at parse time)."""
    return profile_names(settings().config_dir)


def release_param() -> Param:
    """A required choice of release; the default is the last profile name in sort order (el9 with the
    shipped profiles), which is also the release a scheduled run without parameters uses."""
    releases = release_names()
    return Param(releases[-1] if releases else "", enum=releases, title="Release profile",
                 description="A profile in RELENG_CONFIG_DIR.")
