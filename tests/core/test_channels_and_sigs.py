"""Channels (stable, beta, lookahead) and SIG profiles: validation, where each kind of release lives, and what a
promotion may do with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from releng.core.compose.prepare_compose import ComposeParamsError, compose_layout, plan_compose, validate_params
from releng.core.layout import (
    COMPOSE_ID_RE,
    ComposeLayout,
    LayoutError,
    ReleaseTrees,
    compose_major_dir,
    download_path,
    variant_id,
)
from releng.core.profile import ProfileError, load_profile
from releng.core.promotion.base import PromotionError
from releng.core.promotion.target import NotPromotable, promotable_profile, resolve_target
from releng.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ROOT / "config" / "releases"
STAGING, PRODUCTION = Path("/srv/staging"), Path("/srv/production")


def _profile(name: str):
    return load_profile(RELEASES / f"{name}.yaml")


def _write(tmp_path: Path, name: str, change) -> Path:
    data = yaml.safe_load((RELEASES / f"{name}.yaml").read_text())
    change(data)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _problems(path: Path) -> dict[str, str]:
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    return {p.key: p.reason for p in err.value.problems}


@pytest.mark.parametrize(("name", "channel", "sig"), [
    ("el9", "stable", None), ("el9-beta", "beta", None), ("el9lh", "lookahead", None),
    ("el9-sig-cloud", "stable", "cloud")])
def test_shipped_profiles_name_their_channel_or_sig(name, channel, sig):
    p = _profile(name)
    assert (p.channel, p.sig, p.promotable) == (channel, sig, channel == "stable")
    assert (p.lorax is None, p.iso_images == {}, p.cloud_images == {}) == ((True,) * 3 if sig else (False,) * 3)


def test_an_unknown_channel_fails_validation_naming_the_channels(tmp_path):
    path = _write(tmp_path, "el9lh", lambda d: d.update(name="el9lh-typo", channel="LookAhead"))
    problems = _problems(path)
    assert problems == {"channel": "unknown channel 'LookAhead'; use one of stable, beta, lookahead (absent means "
                                   "stable)"}
    cli = subprocess.run([sys.executable, "-m", "releng", "validate", str(path)], capture_output=True, text=True,
                         cwd=ROOT / "plugins")
    assert cli.returncode == 1
    assert f"{path}: channel: unknown channel 'LookAhead'" in cli.stderr


def test_a_sig_profile_has_no_isos_images_or_channel(tmp_path):
    el9 = yaml.safe_load((RELEASES / "el9.yaml").read_text())

    def bad(data):
        data.update(name="el9-sig-bad", channel="beta", iso=el9["iso"], cloud_images=el9["cloud_images"])

    problems = _problems(_write(tmp_path, "el9-sig-cloud", bad))
    assert set(problems) == {"channel", "iso", "cloud_images"}
    assert "builds no ISOs or images; remove iso" in problems["iso"]
    assert "no beta channel" in problems["channel"]
    problems = _problems(_write(tmp_path, "el9-sig-cloud", lambda d: d.update(name="el9-sig-bad", sig="Cloud SIG")))
    assert "is not valid" in problems["sig"]
    # without sig, iso stays required
    assert "iso" in _problems(_write(tmp_path, "el9-sig-cloud", lambda d: d.update(name="el9-sig-bad", sig=None)))


@pytest.mark.parametrize(("name", "major_dir", "latest", "staging", "links"), [
    ("el9", "9", "latest-Rocky-9", "mirror/pub/rocky/9.7", {"latest-9": "9.7"}),
    ("el9-beta", "9-beta", "latest-Rocky-9-beta", "mirror/pub/rocky/9.8-beta", {"9-BETA": "9.8-beta"}),
    ("el9lh", "9-LookAhead", "latest-Rocky-9-lookahead", "mirror/pub/rocky/9.8-LookAhead",
     {"9-LookAhead": "9.8-LookAhead"}),
    ("el9-sig-cloud", "9", "latest-SIG-cloud-9", "mirror/pub/sig/9/cloud", {}),
])
def test_each_kind_of_release_has_its_compose_root_staging_directory_and_links(name, major_dir, latest, staging,
                                                                              links):
    p = _profile(name)
    layout = ComposeLayout.new(p, Path("/srv/compose"), "20261128.101500", 0)
    assert layout.major_dir == compose_major_dir(p, Path("/srv/compose")) == Path("/srv/compose") / major_dir
    assert layout.latest_link.name == latest
    assert COMPOSE_ID_RE.match(layout.compose_id)
    assert compose_layout(p, layout.top, Path("/srv/compose")) == layout  # found again from its directory
    trees = ReleaseTrees(p, STAGING, PRODUCTION)
    assert trees.staging_dir(False) == STAGING / staging
    assert trees.staging_dir(True) == STAGING / (staging + "-RC1" if name == "el9" else staging)
    assert trees.staging_links(False) == links


def test_beta_and_lookahead_have_no_production_directory():
    for name in ("el9-beta", "el9lh"):
        with pytest.raises(LayoutError, match="lives only in staging"):
            ReleaseTrees(_profile(name), STAGING, PRODUCTION).production_dir()
    assert download_path(_profile("el9lh")) == "pub/rocky/9.8-LookAhead"


def test_a_sig_compose_is_laid_out_like_empanadas_sync_sig():
    p = _profile("el9-sig-cloud")
    layout = ComposeLayout.new(p, Path("/srv/compose"), "20261128.101500", 0)
    assert layout.compose_id == "SIG-cloud-9.7-20261128.101500.0"
    sig = layout.compose / "9" / "cloud"
    assert layout.published == sig
    assert layout.repo_tree("cloud-common", "x86_64") == sig / "x86_64" / "cloud-common"
    assert layout.repo_tree("cloud-common", "x86_64", "debug") == sig / "x86_64" / "cloud-common-debug"
    assert layout.repo_tree("cloud-kernel", "src", "source") == sig / "source" / "cloud-kernel"
    with pytest.raises(LayoutError, match="no 'kickstart' trees"):
        layout.repo_tree("cloud-common", "x86_64", "kickstart")
    trees = ReleaseTrees(p, STAGING, PRODUCTION)
    assert trees.production_dir() == PRODUCTION / "mirror/pub/sig/9/cloud"
    assert (trees.category_name, download_path(p)) == ("sig", "pub/sig/9/cloud")
    assert variant_id("cloud-common") == "cloudcommon" and variant_id("BaseOS") == "BaseOS"


def test_a_sig_compose_plans_repos_only_and_has_no_release_candidate():
    p = _profile("el9-sig-cloud")
    params = validate_params(p, {"arches": ["x86_64"], "extra_isos": ["dvd"]})  # the form's default ISO: no ISO
    plan = plan_compose(p, params)
    assert (plan.lorax, plan.dvd, plan.cloud) == ([], [], [])
    assert {(i["repo"], i["kind"]) for i in plan.reposync} == {
        (r, k) for r in ("cloud-common", "cloud-kernel") for k in ("os", "debug", "source")}
    with pytest.raises(ComposeParamsError, match="a SIG has no release candidates"):
        validate_params(p, {"rc": True})


def test_a_promotion_of_beta_or_lookahead_is_refused_by_design(tmp_path, monkeypatch):
    for var, sub in (("COMPOSE", "c"), ("STAGING", "s"), ("PRODUCTION", "p")):
        monkeypatch.setenv(f"RELENG_{var}_ROOT", str(tmp_path / sub))
    monkeypatch.setenv("RELENG_CONFIG_DIR", str(RELEASES))
    cfg = Settings.from_env()
    for name, channel in (("el9-beta", "beta"), ("el9lh", "lookahead")):
        with pytest.raises(NotPromotable, match=f"{name} is a {channel} release .* never promoted to production"):
            promotable_profile(name, cfg)
        with pytest.raises(NotPromotable):
            resolve_target(name, False, cfg)
    assert promotable_profile("el9-sig-cloud", cfg).sig == "cloud"
    with pytest.raises(PromotionError, match="unknown release"):
        promotable_profile("el9-lookahead", cfg)
