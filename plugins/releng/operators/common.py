"""What every operator needs first: the site settings and a release profile, or a clear, final failure."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

from releng.core.profile import ProfileError, ReleaseProfile, find_profile
from releng.core.settings import Settings, SettingsError, settings


def site_settings() -> Settings:
    try:
        return settings()
    except SettingsError as exc:
        raise AirflowFailException(f"site settings are invalid: {exc}") from None


def load_release(name: str) -> ReleaseProfile:
    """The release profile ``name`` from RELENG_CONFIG_DIR; a bad or unknown profile fails the task for good."""
    config_dir = site_settings().config_dir
    try:
        return find_profile(name, config_dir)
    except ProfileError as exc:
        raise AirflowFailException(
            f"release profile {name!r} cannot be used (RELENG_CONFIG_DIR={config_dir}):\n{exc}\n"
            "Fix the profile (python -m releng validate) or choose another release."
        ) from None
