"""productmd metadata: composeinfo, images and rpms load back; ids agree; ISO paths only where ISOs are."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import productmd.composeinfo as pm_composeinfo
import productmd.images as pm_images
import productmd.rpms as pm_rpms
import pytest

from releng.core import metadata
from releng.core.checksums import checksum, write_checksum_file
from releng.core.layout import ComposeLayout


@pytest.fixture
def layout(el9, tmp_path):
    return ComposeLayout.new(el9, tmp_path, "20251123.143015")


def test_composeinfo(layout, tmp_path):
    ci = metadata.compose_info(layout, ["x86_64", "aarch64"], "20251123", rc=True,
                               iso_variants=metadata.iso_variants(layout, ["dvd"]), has_images=True)
    path = metadata.dump(ci, tmp_path / "composeinfo.json")
    loaded = pm_composeinfo.ComposeInfo()
    loaded.load(str(path))
    assert loaded.compose.id == layout.compose_id == "Rocky-9.7-20251123.143015"
    assert loaded.compose.label == "RC-9.7"
    devel = loaded.variants["devel"]
    assert devel.arches == {"x86_64", "aarch64", "i686"}
    assert devel.paths.os_tree["i686"] == "devel/i686/os"
    assert loaded.variants["BaseOS"].paths.isos == {"x86_64": "isos/x86_64", "aarch64": "isos/aarch64"}
    assert loaded.variants["AppStream"].paths.isos["aarch64"] == "isos/aarch64"
    assert loaded.variants["CRB"].paths.isos == {}  # empanadas gave every variant ISO paths
    assert loaded.variants["BaseOS"].paths.source_tree["x86_64"] == "BaseOS/source/tree"
    assert not list(tmp_path.glob(".*.tmp"))


def test_images_manifest(layout, tmp_path):
    iso = tmp_path / "Rocky-9.7-x86_64-dvd.iso"
    iso.write_bytes(b"iso" * 1000)
    write_checksum_file(iso.with_name(iso.name + ".CHECKSUM"), [checksum(iso)])
    sha = metadata.recorded_sha256(iso)
    qcow_type, qcow_format = metadata.cloud_image_type("qcow2", "Base")
    records = [
        metadata.ImageRecord("isos/x86_64/Rocky-9.7-x86_64-dvd.iso", "x86_64", "AppStream", "dvd", "iso", 3000, 1,
                             sha, volume_id="Rocky-9-7-x86_64-dvd", bootable=True, implant_md5="0" * 32),
        metadata.ImageRecord("images/x86_64/x.qcow2", "x86_64", "BaseOS", qcow_type, qcow_format, 5, 1, "f" * 64,
                             subvariant="GenericCloud-Base"),
    ]
    path = metadata.dump(metadata.images_manifest(layout, records, "20251123"), tmp_path / "images.json")
    loaded = pm_images.Images()
    loaded.load(str(path))
    dvd = next(iter(loaded.images["AppStream"]["x86_64"]))
    assert dvd.checksums["sha256"] == sha and dvd.volume_id == "Rocky-9-7-x86_64-dvd" and dvd.bootable


@pytest.mark.parametrize("name", ["el8", "el9", "el10"])
def test_every_shipped_cloud_format_maps_to_productmd(name):
    from releng.core.profile import find_profile

    profile = find_profile(name, Path(__file__).resolve().parents[2] / "config" / "releases")
    for image in profile.cloud_images.values():
        for variant in image.variants or (None,):
            kind, fmt = metadata.cloud_image_type(image.format, variant)
            assert kind in pm_images.SUPPORTED_IMAGE_TYPES and fmt in pm_images.SUPPORTED_IMAGE_FORMATS


def test_unknown_cloud_format():
    with pytest.raises(ValueError, match="cloud image format 'img' has no productmd image type"):
        metadata.cloud_image_type("img", None)
    with pytest.raises(ValueError, match="Vagrant variant 'Hyper' has no productmd image type"):
        metadata.cloud_image_type("box", "Hyper")


def test_rpms_manifest_with_real_signature_keys(layout, tmp_path, fixture_buildsystem, el9):
    pkgs = sorted((fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64") / "Packages").glob("*.rpm"))
    keys = metadata.signature_keys(pkgs)
    fpr = subprocess.run(["gpg", "--show-keys", "--with-colons", str(fixture_buildsystem.key_dir / el9.gpg_keys[0])],
                         capture_output=True, text=True).stdout
    key_id = next(line.split(":")[4] for line in fpr.splitlines() if line.startswith("pub"))[-8:].lower()
    assert set(keys.values()) == {key_id}
    records = [metadata.RpmRecord("BaseOS", "x86_64", "libfoo-0:1.0-1.el9.x86_64",
                                  "BaseOS/x86_64/os/Packages/libfoo-1.0-1.el9.x86_64.rpm", key_id, "binary",
                                  "fixture-baseos-0:1.0-1.el9.src")]
    path = metadata.dump(metadata.rpms_manifest(layout, records, "20251123"), tmp_path / "rpms.json")
    loaded = pm_rpms.Rpms()
    loaded.load(str(path))
    data = json.loads(path.read_text())["payload"]["rpms"]["BaseOS"]["x86_64"]
    assert data["fixture-baseos-0:1.0-1.el9.src"]["libfoo-0:1.0-1.el9.x86_64"]["sigkey"] == key_id


def test_source_nevra_takes_the_binary_epoch():
    assert metadata.srpm_nevra("foo-1.4-1.el9.src.rpm", "2") == "foo-2:1.4-1.el9.src"
    assert metadata.srpm_nevra("foo-bar-1.4-1.el9.src.rpm", "0") == "foo-bar-0:1.4-1.el9.src"
    assert metadata.srpm_nevra("foo-1.4-1.el9.src.rpm", None) == "foo-0:1.4-1.el9.src"
    assert metadata.srpm_nevra(None, "2") is None
