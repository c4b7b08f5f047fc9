"""DVD and cloud image rules: graft list, order, dialog, argv builders, disc .treeinfo, volid, newest build."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import productmd.treeinfo
import pytest

from releng.core import disc
from releng.core.compose import build_dvd_iso, prepare_compose, pull_cloud_images
from releng.core.layout import ComposeLayout, LayoutError
from releng.core.profile import CloudImage


@pytest.fixture
def layout(el9):
    return ComposeLayout.new(el9, Path("/srv/compose"), "20251123.143015")


# --- what to build ------------------------------------------------------------------------------------


def test_only_disc_images_without_isoskip_are_built(el9):
    assert [i.name for i in build_dvd_iso.dvd_images(el9)] == ["dvd"]
    with pytest.raises(build_dvd_iso.IsoInputError, match="'minimal' of el9 is marked isoskip"):
        build_dvd_iso.disc_image(el9, "minimal")
    with pytest.raises(build_dvd_iso.IsoInputError, match=r"'BaseOS' of el9 is a tree \(disc: false\)"):
        build_dvd_iso.disc_image(el9, "BaseOS")
    with pytest.raises(build_dvd_iso.IsoInputError, match="no iso image 'dvd2'; buildable images: dvd"):
        build_dvd_iso.disc_image(el9, "dvd2")
    renamed = dataclasses.replace(el9, iso_images={"lorax": dataclasses.replace(el9.iso_images["dvd"], name="lorax")})
    with pytest.raises(build_dvd_iso.IsoInputError, match="'lorax' is reserved"):
        build_dvd_iso.disc_image(renamed, "lorax")


def test_compose_layout_from_id_or_top_dir(el9, layout):
    assert prepare_compose.compose_layout(el9, "Rocky-9.7-20251123.143015", Path("/srv/compose")) == layout
    top = "/srv/compose/9/Rocky-9.7-20251123.143015/"
    assert prepare_compose.compose_layout(el9, top, Path("/elsewhere")) == layout
    with pytest.raises(LayoutError, match="neither a compose id"):
        prepare_compose.compose_layout(el9, "../x", Path("/srv/compose"))
    counted = prepare_compose.compose_layout(el9, "/srv/compose/9/Rocky-9.7-20251123.143015.2", Path("/elsewhere"))
    assert counted == ComposeLayout(el9, Path("/srv/compose"), "Rocky-9.7-20251123.143015.2")
    assert prepare_compose.compose_layout(el9, "Rocky-9.7-20251123.143015.2", Path("/srv/compose")) == counted
    with pytest.raises(LayoutError, match="not under a 9/ directory"):
        prepare_compose.compose_layout(el9, "/srv/compose/8/Rocky-9.7-20251123.143015", Path("/srv/compose"))


# --- graft list -------------------------------------------------------------------------------------------

BOOT_MANIFEST = """/EFI
/EFI/BOOT
/EFI/BOOT/BOOTX64.EFI
/EFI/BOOT/grub.cfg
/images
/images/efiboot.img
/images/install.img
/isolinux
/isolinux/isolinux.bin
/isolinux/isolinux.cfg
/.treeinfo
"""


def test_manifest_paths_are_replayed_unless_updatable():
    tree = Path("/t")
    sources = {p: tree / p for p in ["images/install.img", "images/efiboot.img", "isolinux/isolinux.cfg",
                                     "isolinux/isolinux.bin", "EFI/BOOT/grub.cfg", ".treeinfo", ".discinfo",
                                     "media.repo", "EULA", "BaseOS/Packages/a/a-1.rpm", "BaseOS/repodata/repomd.xml",
                                     "AppStream/Packages/z-1.rpm", "images/pxeboot/vmlinuz"]}
    grafts = build_dvd_iso.graft_list(sources, build_dvd_iso.parse_manifest(BOOT_MANIFEST))
    by_path = {g.iso_path: g for g in grafts}
    # in boot.iso and not updatable: left to the replay
    assert "images/install.img" not in by_path and "isolinux/isolinux.bin" not in by_path
    # in boot.iso and updatable: -update, .treeinfo included (empanadas left boot.iso's copy)
    assert {p for p, g in by_path.items() if g.update} == {"images/efiboot.img", "isolinux/isolinux.cfg",
                                                           "EFI/BOOT/grub.cfg", ".treeinfo"}
    # not in boot.iso: -map, updatable or not
    assert not by_path[".discinfo"].update and not by_path["images/pxeboot/vmlinuz"].update
    assert [g.iso_path for g in grafts] == [
        "EFI/BOOT/grub.cfg", "images/efiboot.img", "images/pxeboot/vmlinuz", "isolinux/isolinux.cfg",
        ".discinfo", ".treeinfo", "BaseOS/repodata/repomd.xml", "EULA", "media.repo",
        "AppStream/Packages/z-1.rpm", "BaseOS/Packages/a/a-1.rpm",
    ]


def test_graft_order_boot_files_first_rpms_last():
    paths = ["zz.rpm", "README", "ppc/bootinfo.txt", "generic.ins", "images/cdboot.img", "a.img", "etc/yaboot.conf",
             "BaseOS/Packages/k.rpm", ".treeinfo"]
    assert sorted(paths, key=build_dvd_iso.graft_sort_key) == [
        "a.img", "etc/yaboot.conf", "generic.ins", "images/cdboot.img", "ppc/bootinfo.txt",
        ".treeinfo", "README", "BaseOS/Packages/k.rpm", "zz.rpm",
    ]


def test_parse_manifest_accepts_both_forms():
    assert build_dvd_iso.parse_manifest("'./EFI'\n'./EFI/BOOT'\n\n/images/x.img\n'./a b'\n") == \
        {"EFI", "EFI/BOOT", "images/x.img", "a b"}


def test_scan_tree_links_and_empty_dirs(tmp_path):
    root = tmp_path / "tree"
    (root / "Packages/a").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "Packages/a/a.rpm").write_text("a")
    (tmp_path / "outside.rpm").write_text("o")
    (root / "Packages/inside-link.rpm").symlink_to("a/a.rpm")
    (root / "Packages/outside-link.rpm").symlink_to(tmp_path / "outside.rpm")
    got = build_dvd_iso.scan_tree(root, "BaseOS/")
    assert got == {
        "BaseOS/Packages/a/a.rpm": root / "Packages/a/a.rpm",
        "BaseOS/Packages/inside-link.rpm": root / "Packages/inside-link.rpm",  # kept as a link
        "BaseOS/Packages/outside-link.rpm": tmp_path / "outside.rpm",  # replaced by its target
        "BaseOS/empty": root / "empty",
    }
    (root / "dangling.rpm").symlink_to("nowhere.rpm")
    with pytest.raises(build_dvd_iso.IsoInputError, match="dangling symlink"):
        build_dvd_iso.scan_tree(root)


# --- dialog and argv builders ----------------------------------------------------------------------------


def test_x86_64_dialog():
    grafts = [build_dvd_iso.Graft(".treeinfo", Path("/w/dvd/.treeinfo"), update=True),
              build_dvd_iso.Graft("BaseOS/Packages/it's.rpm", Path("/c/BaseOS/x86_64/os/Packages/it's.rpm"))]
    lines = build_dvd_iso.xorriso_dialog(Path("/w/lorax/images/boot.iso"), Path("/w/.tmp/dvd.iso"),
                                         "Rocky-9-7-x86_64-dvd", "x86_64", grafts)
    assert lines == [
        "-indev '/w/lorax/images/boot.iso'",
        "-outdev '/w/.tmp/dvd.iso'",
        "-stdio_sync off",
        "-boot_image any replay",
        "-joliet on",
        "-system_id LINUX",
        "-compliance joliet_long_names",
        "-volid 'Rocky-9-7-x86_64-dvd'",
        "-update '/w/dvd/.treeinfo' '/.treeinfo'",
        "-map \"/c/BaseOS/x86_64/os/Packages/it's.rpm\" \"/BaseOS/Packages/it's.rpm\"",
        "-end",
    ]


def test_dialog_with_a_stamp_fixes_every_file_time():
    lines = build_dvd_iso.xorriso_dialog(Path("/b.iso"), Path("/o.iso"), "v", "x86_64", [], stamp=1715000000)
    assert lines[-2:] == ["-volume_date all_file_dates =1715000000", "-end"]
    assert lines.index("-volume_date all_file_dates =1715000000") > lines.index("-volid 'v'")


def test_ppc64le_dialog_is_ppc_with_untranslated_names():
    lines = build_dvd_iso.xorriso_dialog(Path("/b.iso"), Path("/o.iso"), "Rocky-9-7-ppc64le-dvd", "ppc64le", [])
    assert "-system_id PPC" in lines
    assert lines.index("-compliance untranslated_names") == lines.index("-compliance joliet_long_names") + 1
    s390x = build_dvd_iso.xorriso_dialog(Path("/b"), Path("/o"), "v", "s390x", [])
    assert "-compliance untranslated_names" not in s390x


@pytest.mark.parametrize("word", ["", "a\nb", "a\\b", "it's \"quoted\""])
def test_xorriso_quote_refuses_what_it_cannot_carry(word):
    with pytest.raises(build_dvd_iso.IsoInputError, match="cannot be passed to xorriso"):
        build_dvd_iso.xorriso_quote(word)


def test_argv_builders():
    assert build_dvd_iso.implantisomd5_argv(Path("/x.iso")) == ["implantisomd5", "--supported-iso", "/x.iso"]
    assert build_dvd_iso.implantisomd5_argv(Path("/x.iso"), supported=False) == ["implantisomd5", "/x.iso"]
    assert build_dvd_iso.checkisomd5_argv(Path("/x.iso")) == ["checkisomd5", "/x.iso"]
    assert build_dvd_iso.xorriso_argv(Path("/d.txt")) == ["xorriso", "-no_rc", "-options_from_file", "/d.txt"]
    assert build_dvd_iso.xorriso_find_argv(Path("/x.iso")) == ["xorriso", "-no_rc", "-indev", "/x.iso", "-find", "/"]
    assert build_dvd_iso.el_torito_report_argv(Path("/x.iso"))[-4:] == ["-report_el_torito", "as_mkisofs",
                                                               "-report_el_torito", "plain"]


def test_parse_find_output_sorts_and_unquotes():
    out = "'/'\n'/b'\n'/a'\n'/a/it'\"'\"'s'\nxorriso : NOTE : noise\n'/a/x y'\n"
    assert build_dvd_iso.parse_find_output(out) == ["/a", "/a/it's", "/a/x y", "/b"]


REPORT = """Boot record  : El Torito , MBR isohybrid cyl-align-on GPT
El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4        2099
El Torito boot img :   2  UEFI  y   none  0x0000  0x00   8192          51
El Torito img path :   1  /isolinux/isolinux.bin
El Torito img opts :   1  boot-info-table isohybrid-suitable
El Torito img path :   2  /images/efiboot.img
"""


def test_boot_check():
    assert build_dvd_iso.boot_setup(REPORT) == ("El Torito , MBR isohybrid cyl-align-on GPT",
                                      (("1", "BIOS", "y", "none", "/isolinux/isolinux.bin"),
                                       ("2", "UEFI", "y", "none", "/images/efiboot.img")))
    moved = REPORT.replace("2099", "4000").replace("      51", "    9000")
    build_dvd_iso.check_boot_report(moved, REPORT, "dvd.iso")  # LBAs move when packages are added; that is fine
    with pytest.raises(build_dvd_iso.IsoInputError, match=r"dvd\.iso was not built correctly.*SORRY : Cannot"):
        build_dvd_iso.check_boot_report(REPORT + "xorriso : SORRY : Cannot find boot image\n", REPORT, "dvd.iso")
    bios_only = "\n".join(line for line in REPORT.splitlines() if not re.search(r":\s+2\s", line))
    with pytest.raises(build_dvd_iso.IsoInputError, match=r"does not boot like boot\.iso"):
        build_dvd_iso.check_boot_report(bios_only, REPORT, "dvd.iso")


# --- volume id ------------------------------------------------------------------------------------------


def test_volid_must_be_the_releases(layout):
    boot = Path("/w/boot.iso")
    assert build_dvd_iso.check_volid("Rocky-9-7-x86_64-dvd", layout, "x86_64", False, boot) == "Rocky-9-7-x86_64-dvd"
    assert build_dvd_iso.check_volid("Rocky-9-7-RC1-x86_64-dvd", layout, "x86_64", True, boot)
    with pytest.raises(build_dvd_iso.IsoInputError, match=r"'Rocky-9-7-x86_64-dvd' of /w/boot.iso is not "
                                                r"'Rocky-9-7-RC1-x86_64-dvd'.*--volid=Rocky-9-7-RC1-x86_64-dvd"):
        build_dvd_iso.check_volid("Rocky-9-7-x86_64-dvd", layout, "x86_64", True, boot)


def test_volid_longer_than_32_is_refused(el9):
    long = ComposeLayout.new(dataclasses.replace(el9, shortname="RockyEnterpriseLinux"), Path("/c"),
                             "20251123.143015")
    with pytest.raises(build_dvd_iso.IsoInputError, match=r"is 40 characters; ISO 9660 allows 32; shorten the profile"):
        build_dvd_iso.check_volid("whatever", long, "aarch64", True, Path("/b.iso"))


# --- disc .treeinfo / .discinfo ---------------------------------------------------------------------------


def _lorax_treeinfo(tree: Path) -> productmd.treeinfo.TreeInfo:
    for rel in ("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img", "images/efiboot.img", "images/install.img",
                "images/boot.iso"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(rel.encode())
    ti = productmd.treeinfo.TreeInfo()
    ti.release.name, ti.release.short, ti.release.version = "Rocky Linux", "Rocky", "9.7"
    ti.tree.arch, ti.tree.build_timestamp = "x86_64", 1715000000
    ti.tree.platforms.add("x86_64")
    variant = productmd.treeinfo.Variant(ti)
    variant.id = variant.uid = variant.name = "BaseOS"
    variant.type = "variant"
    variant.paths.repository, variant.paths.packages = ".", "Packages"
    ti.variants.add(variant)
    ti.images.images["x86_64"] = {"kernel": "images/pxeboot/vmlinuz", "initrd": "images/pxeboot/initrd.img",
                                  "efiboot.img": "images/efiboot.img", "boot.iso": "images/boot.iso"}
    ti.stage2.mainimage = "images/install.img"
    ti.checksums.add("images/boot.iso", "sha256", root_dir=str(tree))
    return ti


def _fake_lorax(layout: ComposeLayout, arch: str) -> Path:
    tree = layout.lorax_dir(arch) / "lorax"
    tree.mkdir(parents=True)
    ti = _lorax_treeinfo(tree)
    ti.dump(str(tree / ".treeinfo"))
    (tree / ".discinfo").write_text("1715000000.000000\nRocky Linux 9.7\nx86_64\n")
    (tree / "images/boot.iso.manifest").write_text("/images\n")
    return tree


def test_variant_tree_links_lorax_files_and_writes_disc_metadata(el9, tmp_path):
    layout = ComposeLayout.new(el9, tmp_path, "20251123.143015")
    lorax = _fake_lorax(layout, "x86_64")
    (layout.lorax_dir("x86_64") / ".dvd.tree-stale").mkdir()  # a killed earlier try
    assert build_dvd_iso.remove_stale_scratch(layout, "x86_64", "dvd")
    tree, stamp = build_dvd_iso.build_variant_tree(layout, "x86_64", el9.iso_images["dvd"], lorax)
    assert (tree, stamp) == (layout.lorax_dir("x86_64") / "dvd", 1715000000)
    assert not (tree / "images/boot.iso").exists() and not (tree / "images/boot.iso.manifest").exists()
    assert (tree / "images/install.img").stat().st_ino == (lorax / "images/install.img").stat().st_ino
    assert (tree / ".discinfo").read_text() == "1715000000\nRocky Linux 9.7\nx86_64\nALL\n"
    assert (lorax / ".discinfo").read_text().startswith("1715000000.000000")  # the lorax tree is untouched
    ti = productmd.treeinfo.TreeInfo()
    ti.load(str(tree / ".treeinfo"))
    assert (ti.media.discnum, ti.media.totaldiscs) == (1, 1)
    assert sorted(ti.variants) == ["AppStream", "BaseOS"]
    assert ti.variants["AppStream"].paths.packages == "AppStream/Packages"
    assert "boot.iso" not in ti.images.images["x86_64"]
    assert "repository = AppStream\n" in (tree / ".treeinfo").read_text()  # main variant of the dvd image
    assert int((tree / ".treeinfo").stat().st_mtime) == stamp == int(tree.stat().st_mtime)  # reproducible ISO
    assert tree.stat().st_mode & 0o777 == 0o755
    (tree / "leftover").write_text("x")
    build_dvd_iso.build_variant_tree(layout, "x86_64", el9.iso_images["dvd"], lorax)  # a rerun replaces the tree
    assert not (tree / "leftover").exists()
    assert sorted(p.name for p in layout.lorax_dir("x86_64").iterdir()) == ["dvd", "lorax"]


def test_variant_tree_needs_a_lorax_treeinfo(el9, tmp_path):
    layout = ComposeLayout.new(el9, tmp_path, "20251123.143015")
    lorax = _fake_lorax(layout, "x86_64")
    (lorax / ".treeinfo").unlink()
    with pytest.raises(build_dvd_iso.IsoInputError, match=r"\.treeinfo does not exist.*pull_unpack_tree"):
        build_dvd_iso.build_variant_tree(layout, "x86_64", el9.iso_images["dvd"], lorax)


def test_discinfo_has_an_integer_timestamp():
    assert disc.discinfo_text(1715000000, "Rocky Linux 9.7", "aarch64") == \
        "1715000000\nRocky Linux 9.7\naarch64\nALL\n"
    assert "mediaid=1715000000\n" in disc.media_repo_text(1715000000, "Rocky Linux 9.7")


# --- cloud images ----------------------------------------------------------------------------------------

GC = CloudImage(type="GenericCloud", format="qcow2", variants=("Base", "LVM"), arches=("x86_64",),
                primary_variant="Base")


def _key(kind: str, date: str, build: int, epoch: int, fmt: str = "qcow2", arch: str = "x86_64") -> str:
    name = f"Rocky-9-{kind}-9.7-{date}.{build}.{arch}"
    return f"buildimage-9.7-{arch}/{name}/{epoch}/{name}.{fmt}"


def test_newest_build_is_numeric_not_string_order(el9):
    keys = [_key("GenericCloud-Base", "20250101", 2, 1735790000), _key("GenericCloud-Base", "20250101", 10, 1735780000),
            _key("GenericCloud-Base", "20241231", 99, 1735900000)]
    chosen, missing = pull_cloud_images.select_cloud_builds(el9, GC, "x86_64", keys)
    assert missing == ["LVM"]
    assert chosen["Base"].build == 10  # empanadas' descending string sort picked .2
    assert chosen["Base"].filename == "Rocky-9-GenericCloud-Base-9.7-20250101.10.x86_64.qcow2"


def test_newest_build_date_then_build_then_epoch(el9):
    keys = [_key("GenericCloud-LVM", "20250101", 1, 1735700000), _key("GenericCloud-LVM", "20250101", 1, 1735800000),
            _key("GenericCloud-LVM", "20250102", 0, 1735600000)]
    chosen, _ = pull_cloud_images.select_cloud_builds(el9, GC, "x86_64", keys)
    assert (chosen["LVM"].date, chosen["LVM"].build, chosen["LVM"].epoch) == ("20250102", 0, 1735600000)
    chosen, _ = pull_cloud_images.select_cloud_builds(el9, GC, "x86_64", keys[:2])
    assert chosen["LVM"].epoch == 1735800000


@pytest.mark.parametrize("key", [
    _key("GenericCloud-Base", "20250101", 1, 1735700000, fmt="vhd"),  # other format
    _key("GenericCloud-Base", "20250101", 1, 1735700000, arch="aarch64"),  # other arch
    _key("GenericCloud", "20250101", 1, 1735700000),  # the type without a variant
    _key("GenericCloud-Base-Extra", "20250101", 1, 1735700000),
    "buildimage-9.7-x86_64/Rocky-9-GenericCloud-Base-9.7-20250101.1.x86_64/Rocky-9-GenericCloud-Base-9.7-20250101.1"
    ".x86_64.qcow2",  # no epoch directory
    "buildimage-9.7-x86_64/Rocky-9-GenericCloud-Base-9.7-20250101.1.x86_64/1735700000/other.qcow2",
])
def test_keys_of_other_kinds_are_ignored(el9, key):
    chosen, missing = pull_cloud_images.select_cloud_builds(el9, GC, "x86_64", [key])
    assert chosen == {} and missing == ["Base", "LVM"]


def test_latest_names(el9):
    assert pull_cloud_images.cloud_latest_names(el9, GC, "Base", "x86_64") == [
        "Rocky-9-GenericCloud-Base.latest.x86_64.qcow2", "Rocky-9-GenericCloud.latest.x86_64.qcow2"]
    assert pull_cloud_images.cloud_latest_names(el9, GC, "LVM", "x86_64") == [
        "Rocky-9-GenericCloud-LVM.latest.x86_64.qcow2"]
    rpi = CloudImage(type="RPI", format="raw.xz", variants=(), arches=("aarch64",))
    assert pull_cloud_images.cloud_latest_names(el9, rpi, None, "aarch64") == ["Rocky-9-RPI.latest.aarch64.raw.xz"]
    with pytest.raises(pull_cloud_images.CloudImageError, match="no cloud image type 'Nope'"):
        pull_cloud_images.cloud_image(el9, "Nope", "x86_64")
