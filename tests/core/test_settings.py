"""Site settings: defaults from DESIGN.md, overrides, and clear errors for unusable values."""

from __future__ import annotations

from pathlib import Path

import pytest

from releng.core.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_production_values():
    s = Settings.from_env({})
    assert s.config_dir == ROOT / "config" / "releases"
    assert s.compose_root == Path("/mnt/compose")
    assert s.staging_root == Path("/mnt/repos-staging")
    assert s.production_root == Path("/mnt/repos-production")
    assert s.peridot_url == "https://yumrepofs.build.resf.org/v1/projects"
    assert s.s3_bucket == "resf-empanadas"
    assert s.s3_conn_id == "releng_s3"
    assert s.lorax_backend == "kubernetes"
    assert s.approvers == ()
    assert s.gpg_key_dir == Path("/etc/pki/rpm-gpg")


def test_overrides_and_round_trip():
    env = {
        "RELENG_COMPOSE_ROOT": "/srv/compose",
        "RELENG_PERIDOT_URL": "http://127.0.0.1:18080/v1/projects/",
        "RELENG_LORAX_BACKEND": "local",
        "RELENG_APPROVERS": " alice, bob ,,",
        "RELENG_S3_BUCKET": "",  # empty means default
    }
    s = Settings.from_env(env)
    assert s.compose_root == Path("/srv/compose")
    assert s.peridot_url == "http://127.0.0.1:18080/v1/projects"
    assert s.lorax_backend == "local"
    assert s.approvers == ("alice", "bob")
    assert s.s3_bucket == "resf-empanadas"
    assert Settings.from_env(s.as_env()) == s


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RELENG_LORAX_BACKEND": "docker"}, "RELENG_LORAX_BACKEND='docker' is not one of kubernetes, local"),
        ({"RELENG_PERIDOT_URL": "ftp://x"}, "RELENG_PERIDOT_URL='ftp://x' is not an http(s) URL"),
        ({"RELENG_S3_BUCKET": "ab"}, "RELENG_S3_BUCKET='ab' is too short"),
    ],
)
def test_unusable_values_are_refused(env, message):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert message in str(err.value)


def test_pipeline_knobs_have_defaults_and_checks():
    s = Settings.from_env({})
    assert s.lorax_namespace == "empanadas" and s.lorax_memory == "8Gi" and s.lorax_s3_secret == "empanadas-s3"
    assert s.updates_schedule == "0 3 * * *" and s.repo_signing_key == "" and s.gnupghome is None
    assert s.promotion_max_delete == 0.1 and s.approval_timeout_hours == 24
    with pytest.raises(SettingsError, match="RELENG_PROMOTION_MAX_DELETE='2' is out of range"):
        Settings.from_env({"RELENG_PROMOTION_MAX_DELETE": "2"})
    with pytest.raises(SettingsError, match="RELENG_APPROVAL_TIMEOUT_HOURS='soon' is not a number"):
        Settings.from_env({"RELENG_APPROVAL_TIMEOUT_HOURS": "soon"})
    with pytest.raises(SettingsError, match="RELENG_UPDATES_SCHEDULE='daily' is not a cron expression"):
        Settings.from_env({"RELENG_UPDATES_SCHEDULE": "daily"})


# --- which releases the schedule updates, and the trigger forms' default release ---------------------------


def test_release_settings_default_to_every_profile_and_the_newest():
    s = Settings.from_env({})
    assert s.updates_releases == () and s.default_release == ""


def test_release_settings_are_read_and_round_trip():
    s = Settings.from_env({"RELENG_UPDATES_RELEASES": " el9, el10,,el8 ", "RELENG_DEFAULT_RELEASE": " el9 "})
    assert s.updates_releases == ("el9", "el10", "el8") and s.default_release == "el9"
    assert s.as_env()["RELENG_UPDATES_RELEASES"] == "el9,el10,el8" and s.as_env()["RELENG_DEFAULT_RELEASE"] == "el9"
    assert Settings.from_env(s.as_env()) == s


@pytest.mark.parametrize("env, message", [
    ({"RELENG_UPDATES_RELEASES": "el9 el10"},
     "RELENG_UPDATES_RELEASES='el9 el10': 'el9 el10' is not a release profile name"),
    ({"RELENG_UPDATES_RELEASES": "el9,EL10"}, "RELENG_UPDATES_RELEASES='el9,EL10': 'EL10' is not a release profile"),
    ({"RELENG_UPDATES_RELEASES": "el9,El10,../el8"}, "'El10', '../el8' are not release profile names"),
    ({"RELENG_UPDATES_RELEASES": "el9,el10,el9"},
     "RELENG_UPDATES_RELEASES='el9,el10,el9' names el9 more than once; list each release once, e.g. 'el9,el10'"),
    ({"RELENG_UPDATES_RELEASES": " , "}, "RELENG_UPDATES_RELEASES=',' names no release; set it to release profile "
                                         "names separated by commas, e.g. 'el9,el10', or nothing for every profile"),
    ({"RELENG_DEFAULT_RELEASE": "el9,el10"}, "RELENG_DEFAULT_RELEASE='el9,el10' names 2 releases; set it to one "
                                             "release profile name, e.g. 'el9', or nothing for the newest release"),
    ({"RELENG_DEFAULT_RELEASE": "Rocky 9"}, "RELENG_DEFAULT_RELEASE='Rocky 9': 'Rocky 9' is not a release profile"),
])
def test_unusable_release_settings_are_refused_saying_what_to_use(env, message):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert message in str(err.value)


# --- the three trees: absolute, not /, and separate (a compose must never write into production) -------------

ROOTS = {"RELENG_COMPOSE_ROOT": "/srv/compose", "RELENG_STAGING_ROOT": "/srv/staging",
         "RELENG_PRODUCTION_ROOT": "/srv/production"}


@pytest.mark.parametrize("override, names", [
    ({"RELENG_STAGING_ROOT": "/srv/production"}, ("RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT")),
    ({"RELENG_STAGING_ROOT": "/srv/production/"}, ("RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT")),
    ({"RELENG_STAGING_ROOT": "/srv/x/../production"}, ("RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT")),
    ({"RELENG_STAGING_ROOT": "/srv/production/staging"}, ("RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT")),
    ({"RELENG_PRODUCTION_ROOT": "/srv/staging/prod"}, ("RELENG_PRODUCTION_ROOT", "RELENG_STAGING_ROOT")),
    ({"RELENG_COMPOSE_ROOT": "/srv/staging"}, ("RELENG_COMPOSE_ROOT", "RELENG_STAGING_ROOT")),
    ({"RELENG_COMPOSE_ROOT": "/srv/production/compose"}, ("RELENG_COMPOSE_ROOT", "RELENG_PRODUCTION_ROOT")),
    ({"RELENG_STAGING_ROOT": "/srv/compose/staging"}, ("RELENG_STAGING_ROOT", "RELENG_COMPOSE_ROOT")),
])
def test_overlapping_tree_roots_are_refused(override, names):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**ROOTS, **override})
    message = str(err.value)
    assert all(name in message for name in names), message
    assert "separate directories, none inside another" in message


def test_overlap_is_found_through_symlinks(tmp_path):
    (tmp_path / "production").mkdir()
    (tmp_path / "staging").symlink_to(tmp_path / "production")
    env = {"RELENG_COMPOSE_ROOT": str(tmp_path / "compose"), "RELENG_STAGING_ROOT": str(tmp_path / "staging"),
           "RELENG_PRODUCTION_ROOT": str(tmp_path / "production")}
    with pytest.raises(SettingsError, match=f"resolves to {tmp_path / 'production'}"):
        Settings.from_env(env)
    (tmp_path / "staging").unlink()
    (tmp_path / "staging").mkdir()
    assert Settings.from_env(env).staging_root == tmp_path / "staging"


@pytest.mark.parametrize("name", ["RELENG_COMPOSE_ROOT", "RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT"])
@pytest.mark.parametrize("value, reason", [
    ("/", "is the root directory"),
    ("/srv/..", "is the root directory"),
    ("relative/trees", "is a relative path"),
    ("~/trees", "is a relative path"),
])
def test_root_and_relative_tree_roots_are_refused(name, value, reason):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**ROOTS, name: value})
    assert f"{name}={value!r} {reason}" in str(err.value)
    assert "set an absolute directory of its own" in str(err.value)


def test_invalid_settings_fail_the_dag_files_and_tasks_with_the_message(monkeypatch):
    """Every DAG file reads the settings when parsed (the task runner parses it too): the import error names
    the variables; an operator that reads them itself fails for good with the same message."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import AirflowFailException

    from releng.core.settings import settings
    from releng.operators.common import site_settings

    monkeypatch.setenv("RELENG_STAGING_ROOT", "/srv/trees")
    monkeypatch.setenv("RELENG_PRODUCTION_ROOT", "/srv/trees")
    settings.cache_clear()
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.dags == {}
    assert sorted(Path(f).name for f in bag.import_errors) == ["full_compose.py", "general_updates.py",
                                                               "point_release.py", "promote_to_production.py",
                                                               "scheduled_updates.py"]
    for err in bag.import_errors.values():
        last = err.strip().splitlines()[-1]
        assert "SettingsError: RELENG_STAGING_ROOT='/srv/trees' and RELENG_PRODUCTION_ROOT='/srv/trees' " in last
    settings.cache_clear()
    with pytest.raises(AirflowFailException, match="site settings are invalid: RELENG_STAGING_ROOT="):
        site_settings()
