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
