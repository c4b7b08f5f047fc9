"""releng.core.treeinfo: the rules for a lorax .treeinfo made into a DVD's, checked by loading with productmd."""

from __future__ import annotations

import configparser
import hashlib
import os
import shutil
from pathlib import Path

import productmd.treeinfo
import pytest

from releng.core import treeinfo

IMAGES = {"kernel": "images/pxeboot/vmlinuz", "initrd": "images/pxeboot/initrd.img",
          "efiboot.img": "images/efiboot.img", "boot.iso": "images/boot.iso"}
STAGE2 = "images/install.img"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lorax_tree(root: Path, arch: str = "x86_64") -> Path:
    """A lorax-shaped tree whose .treeinfo is what lorax writes (one variant, images, stage2, checksums)."""
    for n, rel in enumerate([*IMAGES.values(), STAGE2]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(f"{rel} {n}\n".encode() * (n + 1))
    ti = productmd.treeinfo.TreeInfo()
    ti.release.name, ti.release.short, ti.release.version = "Lorax Product", "Lorax", "0.1"
    ti.tree.arch, ti.tree.build_timestamp = arch, 1735689600
    ti.tree.platforms.add(arch)
    variant = productmd.treeinfo.Variant(ti)
    variant.id = variant.uid = variant.name = "BaseOS"
    variant.type = "variant"
    variant.paths.repository, variant.paths.packages = ".", "Packages"
    ti.variants.add(variant)
    ti.images.images[arch] = dict(IMAGES, empty="")
    ti.stage2.mainimage = STAGE2
    for rel in [*IMAGES.values(), STAGE2]:
        ti.checksums.add(rel, "sha256", root_dir=str(root))
    ti.dump(str(root / ".treeinfo"), main_variant="BaseOS")
    return root


def load(path: Path) -> productmd.treeinfo.TreeInfo:
    ti = productmd.treeinfo.TreeInfo()
    ti.load(str(path))
    return ti


def general(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read(path)
    return parser["general"]


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, copy_function=os.link)
    (dest / ".treeinfo").unlink()
    return dest


@pytest.mark.parametrize("kind", ["os", "kickstart"])
def test_repo_tree_treeinfo(tmp_path, el9, kind):
    lorax = lorax_tree(tmp_path / "lorax")
    dest = copy_tree(lorax, tmp_path / "compose" / "BaseOS" / "x86_64" / kind)
    treeinfo.write_tree_treeinfo(lorax, dest, el9, "x86_64", kind, el9.iso_images["BaseOS"])

    ti = load(dest / ".treeinfo")
    assert (ti.release.name, ti.release.short, ti.release.version) == ("Rocky Linux", "Rocky", "9.7")
    assert ti.images.images["x86_64"] == IMAGES  # the empty entry is gone, boot.iso stays (not a disc)
    assert ti.stage2.mainimage == STAGE2
    assert ti.checksums.checksums == {rel: ("sha256", sha(dest / rel)) for rel in [*IMAGES.values(), STAGE2]}
    base, app = ti.variants["BaseOS"], ti.variants["AppStream"]
    assert (base.paths.repository, base.paths.packages) == (".", "Packages")
    assert app.paths.repository == f"../../../AppStream/x86_64/{kind}"
    assert app.paths.packages == f"../../../AppStream/x86_64/{kind}/Packages"
    assert general(dest / ".treeinfo")["variant"] == "BaseOS"
    assert ti.media.discnum is None
    assert load(lorax / ".treeinfo").release.short == "Lorax"  # lorax's own file is left alone


def test_disc_treeinfo(tmp_path, el9):
    lorax = lorax_tree(tmp_path / "lorax")
    out = tmp_path / "dvd" / ".treeinfo"
    treeinfo.write_disc_treeinfo(lorax, out, el9, "x86_64", el9.iso_images["dvd"])

    ti = load(out)
    assert "boot.iso" not in ti.images.images["x86_64"] and "images/boot.iso" not in ti.checksums.checksums
    assert set(ti.checksums.checksums) == {"images/pxeboot/vmlinuz", "images/pxeboot/initrd.img",
                                           "images/efiboot.img", STAGE2}
    assert (ti.media.discnum, ti.media.totaldiscs) == (1, 1)
    assert {(v.id, v.paths.repository, v.paths.packages) for v in ti.variants.variants.values()} == {
        ("BaseOS", "BaseOS", "BaseOS/Packages"), ("AppStream", "AppStream", "AppStream/Packages")}
    assert general(out)["variant"] == "AppStream" and general(out)["packagedir"] == "AppStream/Packages"


def test_corrupt_image_wrong_arch_and_missing_image_are_refused(tmp_path, el9):
    lorax = lorax_tree(tmp_path / "lorax")
    dest = copy_tree(lorax, tmp_path / "os")
    (dest / "images/efiboot.img").unlink()
    (dest / "images/efiboot.img").write_bytes(b"flipped")
    with pytest.raises(treeinfo.TreeInfoError, match=r"efiboot.img has sha256 .* but .*records .*corrupt"):
        treeinfo.write_tree_treeinfo(lorax, dest, el9, "x86_64", "os", el9.iso_images["BaseOS"])
    (dest / "images/efiboot.img").unlink()
    with pytest.raises(treeinfo.TreeInfoError, match=r"lists the image 'images/efiboot\.img', which is not a file"):
        treeinfo.write_tree_treeinfo(lorax, dest, el9, "x86_64", "os", el9.iso_images["BaseOS"])
    with pytest.raises(treeinfo.TreeInfoError, match="describes arch 'x86_64', not 'aarch64'"):
        treeinfo.write_disc_treeinfo(lorax, tmp_path / "t", el9, "aarch64", el9.iso_images["dvd"])
    assert not (dest / ".treeinfo").exists() and not (tmp_path / "t").exists()


def test_digests_are_shared_by_hard_links_and_seeds(tmp_path, el9, monkeypatch):
    lorax = lorax_tree(tmp_path / "lorax")
    hashed = []
    real = treeinfo.file_digest
    monkeypatch.setattr(treeinfo, "file_digest", lambda path: hashed.append(Path(path).name) or real(path))
    digests = treeinfo.DigestCache()
    digests.seed(lorax / "images/boot.iso", sha(lorax / "images/boot.iso"))
    for kind in ("os", "kickstart"):
        dest = copy_tree(lorax, tmp_path / kind)
        treeinfo.write_tree_treeinfo(lorax, dest, el9, "x86_64", kind, el9.iso_images["BaseOS"], digests)
    assert sorted(hashed) == ["efiboot.img", "initrd.img", "install.img", "vmlinuz"]  # once each, boot.iso never
