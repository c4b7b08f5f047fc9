"""Issue 7 findings 4 and 9 end to end: full_compose with cloud images under umask 077, staged with the
release signing key (not the build system's), then an approved promote_to_production: every published
entry in staging and production is world-readable, the mirror file lists carry the cloud images, and the
change report and production verification accept the staged signatures. Then a real BitTorrent client
(transmission-cli) downloads a promoted image from its torrent's web seed alone: the torrents name
RELENG_DOWNLOAD_URL, here production's mirror directory served over HTTP with byte ranges."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from releng.core import filelist
from tests.dagrun import run_dag
from tests.promotion.conftest import new_release_key
from tests.promotion.test_dag import respond
from tests.realtools import range_server, transmission_verifies
from tests.umask import not_public, private_umask

pytestmark = [pytest.mark.slow]


@pytest.fixture
def release_key(tmp_path, monkeypatch):
    """RELENG_REPO_SIGNING_KEY: a key of its own, not the one that signed the build system's repomd.xml."""
    home = tmp_path / "release-gnupg"
    fpr = new_release_key(home)
    monkeypatch.setenv("RELENG_REPO_SIGNING_KEY", fpr)
    monkeypatch.setenv("RELENG_GNUPGHOME", str(home))
    yield fpr
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def test_a_compose_with_cloud_images_reaches_mirrors_readable_and_signed(airflow_db, site, release_key, monkeypatch,
                                                                         tmp_path):
    production_mirror = Path(site["RELENG_PRODUCTION_ROOT"]) / "mirror"
    with range_server(production_mirror) as (download_url, ranges), private_umask():
        # the torrents made at finalize name this URL as their web seed: production's mirror dir served over HTTP
        monkeypatch.setenv("RELENG_DOWNLOAD_URL", download_url)
        _compose_and_promote(site)
        # a real BitTorrent client downloads a promoted image from its torrent's web seed alone (no peers)
        images = production_mirror / "pub/rocky/9.7/images/x86_64"
        torrent = sorted(p for p in images.glob("*.torrent") if not p.is_symlink())[0]
        image = torrent.with_suffix("")
        downloaded = tmp_path / "downloaded"
        downloaded.mkdir()
        assert transmission_verifies(torrent, downloaded, tmp_path / "client", timeout=120)
        assert (downloaded / image.name).read_bytes() == image.read_bytes()
        assert ranges  # the client fetched byte ranges from the web seed (nothing else could give it the data)


def _compose_and_promote(site) -> None:
    dr, states = run_dag("full_compose", {"release": "el9", "arches": ["x86_64"], "extra_isos": []})
    assert dr.state == "success", json.dumps(states, indent=1)
    out: dict = {}
    approver = respond("Approve", out)
    dr, states = run_dag("promote_to_production", {"release": "el9", "rc": False})
    approver.join(timeout=30)
    assert out.get("approver", (None,))[0] == 200, out
    assert dr.state == "success", states
    assert states["change_report"] == ["success"] and states["verify_production"] == ["success"]

    staging, production = Path(site["RELENG_STAGING_ROOT"]), Path(site["RELENG_PRODUCTION_ROOT"])
    images = production / "mirror/pub/rocky/9.7/images/x86_64"
    assert sorted(p.name for p in images.glob("*.qcow2")) and any(p.is_symlink() for p in images.glob("*.latest.*"))
    assert not_public(staging, production / "mirror") == []
    category = production / "mirror/pub/rocky"
    listed = {e.path for e in filelist.parse_timelist((category / "fullfiletimelist-rocky").read_text()).files}
    published = {str(p.relative_to(category)) for p in images.iterdir()}
    assert published and published <= listed  # the images and their .latest links reach the mirror file lists
