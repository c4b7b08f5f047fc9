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
