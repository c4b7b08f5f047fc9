"""Which releases (releng.core.releases): ordered by version, not by name; the default release; the releases the
schedule covers; what a release the schedule cannot update says."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from releng.core.profile import release_choice
from releng.core.releases import (
    ReleasesError,
    check_release,
    default_release,
    newest_first,
    unknown_releases,
    updates_releases,
    updates_run_id,
)

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ROOT / "config" / "releases"


@pytest.fixture
def config(tmp_path) -> Path:
    """The shipped profiles (el8 is 8.10, el9 9.7, el10 10.1), in a directory a test may change."""
    shutil.copytree(RELEASES, tmp_path / "releases")
    return tmp_path / "releases"


def _break(config: Path, name: str) -> None:
    path = config / f"{name}.yaml"
    path.write_text(path.read_text().replace("name: ", "nmae: ", 1))


def test_newest_first_compares_versions_as_numbers():
    def p(name, major, minor, promotable=True, sig=None):
        return SimpleNamespace(name=name, major=major, minor=minor, promotable=promotable, sig=sig)

    found = newest_first([p("el9", 9, 7), p("el10", 10, 1), p("el9-next", 9, 10), p("el8", 8, 10)])
    assert [r.name for r in found] == ["el10", "el9-next", "el9", "el8"]
    # the same version: the name decides, its digits read as numbers
    assert [r.name for r in newest_first([p("lh9", 9, 7), p("lh10", 9, 7)])] == ["lh10", "lh9"]
    # stable distribution releases first, then beta and lookahead, then SIGs: a lookahead 9.8 is not the newest el9
    mixed = [p("el9lh", 9, 8, promotable=False), p("el9", 9, 7), p("sig", 9, 7, sig="cloud"), p("el8", 8, 10)]
    assert [r.name for r in newest_first(mixed)] == ["el9", "el8", "el9lh", "sig"]


def test_the_default_release_is_the_newest_valid_one_unless_set(config):
    assert default_release("", release_choice(config)) == "el10"
    assert default_release("el8", release_choice(config)) == "el8"
    _break(config, "el10")
    assert default_release("", release_choice(config)) == "el9"


def test_a_default_release_setting_naming_no_valid_profile_says_what_to_do(config):
    with pytest.raises(ReleasesError) as err:
        default_release("el11", release_choice(config))
    assert str(err.value) == (f"RELENG_DEFAULT_RELEASE='el11' is not a release profile in RELENG_CONFIG_DIR='{config}'"
                              "; set RELENG_DEFAULT_RELEASE to one of el10, el9, el8, el9lh, el9-beta, el9-sig-cloud, "
                              "or unset it to offer the newest release first")
    _break(config, "el9")
    with pytest.raises(ReleasesError) as err:
        default_release("el9", release_choice(config))
    assert "RELENG_DEFAULT_RELEASE='el9' names a release profile that is invalid; fix it (python -m releng " \
           "validate) or set RELENG_DEFAULT_RELEASE to one of el10, el8," in str(err.value)
    assert f"{config / 'el9.yaml'}: nmae: unknown key" in str(err.value)


def test_the_schedule_covers_the_setting_as_listed_or_every_profile_newest_first(config):
    # every stable distribution release: beta, lookahead and SIGs only when listed
    assert updates_releases((), release_choice(config)) == ["el10", "el9", "el8"]
    assert updates_releases(("el8", "el11", "el9"), release_choice(config)) == ["el8", "el11", "el9"]
    assert unknown_releases(("el8", "el11", "el9"), config) == ["el11"]
    _break(config, "el9")  # still covered: its own run fails, naming the problems
    assert updates_releases((), release_choice(config)) == ["el10", "el8", "el9"]


def test_a_release_the_schedule_cannot_update_says_why_and_what_to_do(config):
    assert check_release("el9", config).revision == "9.7"
    with pytest.raises(ReleasesError) as err:
        check_release("el11", config)
    assert str(err.value) == (f"RELENG_UPDATES_RELEASES names 'el11', which is not a release profile in "
                              f"RELENG_CONFIG_DIR='{config}' (profiles: el10, el8, el9-beta, el9-sig-cloud, el9, "
                              "el9lh); add el11.yaml there, or remove el11 from RELENG_UPDATES_RELEASES (empty: every "
                              "stable distribution release)")
    _break(config, "el8")
    with pytest.raises(ReleasesError) as err:
        check_release("el8", config)
    assert str(err.value).startswith("the release profile el8 is invalid, so its updates cannot run; fix it "
                                     "(python -m releng validate), or remove el8 from RELENG_UPDATES_RELEASES:")
    assert f"{config / 'el8.yaml'}: nmae: unknown key" in str(err.value)


def test_run_ids_name_the_release_and_the_scheduled_time_and_are_valid_airflow_run_ids():
    from airflow.configuration import conf

    run_id = updates_run_id("el10", datetime(2026, 3, 1, 3, 0, tzinfo=UTC))
    assert run_id == "scheduled_updates__el10__2026-03-01T03:00:00+00:00"
    assert re.match(conf.get("scheduler", "allowed_run_id_pattern"), run_id)
