"""The lorax stand-in (include/lorax/lorax-standin), run for real with the real ISO/squashfs/FAT tools."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import productmd.treeinfo
import pycdlib
import pytest

from tests.bootcheck import assert_boots_to

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "include" / "lorax" / "lorax-standin"
EPOCH = 1715000000
BANNER = "lorax-standin: NOT lorax; building a lorax-shaped boot tree from fixture files"
# Terminal escapes and CRs: the serial stream interleaves cursor moves with ISOLINUX's text.


def volid_for(arch: str) -> str:
    return f"Rocky-9-4-{arch}-dvd"


def lorax_argv(arch: str, out: Path, *extra: str, volid: str | None = None) -> list[str]:
    """The argv the pipeline passes to real lorax (the options empanadas passes), pointed at the stand-in."""
    return [
        sys.executable, str(SCRIPT),
        "--product=Rocky Linux", "--version=9.4", "--release=9.4", "--isfinal",
        "--source=http://127.0.0.1:9/BaseOS/x86_64/os", "--source=http://127.0.0.1:9/AppStream/x86_64/os",
        "--squashfs-only", "--bugurl=https://bugs.rockylinux.org", "--variant=BaseOS", "--nomacboot",
        f"--buildarch={arch}", f"--volid={volid or volid_for(arch)}", "--rootfs-size=4",
        *extra, str(out),
    ]  # fmt: skip


def run_standin(argv: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), **(env_extra or {})}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


def tool(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


def el_torito(iso: Path) -> str:
    return tool("xorriso", "-indev", str(iso), "-report_el_torito", "plain", "-report_system_area", "plain")


def iso_files(iso: Path) -> set[str]:
    cd = pycdlib.PyCdlib()
    cd.open(str(iso))
    try:
        return {f"{root}/{name}".replace("//", "/") for root, _dirs, files in cd.walk(rr_path="/") for name in files}
    finally:
        cd.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Built:
    tree: Path
    log: Path
    result: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Build each arch's tree once per module, with the pipeline's full argv."""
    cache: dict[str, Built] = {}

    def _build(arch: str) -> Built:
        if arch not in cache:
            base = tmp_path_factory.mktemp(arch)
            log = base / f"lorax-{arch}.log"
            result = run_standin(lorax_argv(arch, base / "lorax", f"--logfile={log}"))
            assert result.returncode == 0, result.stderr
            cache[arch] = Built(base / "lorax", log, result)
        return cache[arch]

    return _build


# --- command line, log -----------------------------------------------------------------------


def test_help_says_it_is_not_lorax():
    result = run_standin([sys.executable, str(SCRIPT), "--help"])
    assert result.returncode == 0
    assert "NOT lorax" in result.stdout
    assert "--rootfs-size" in result.stdout


def test_log_has_banner_steps_and_ignored_sources(build):
    built = build("x86_64")
    lines = built.log.read_text().splitlines()
    assert lines[0].endswith(BANNER)
    assert BANNER in built.result.stderr
    assert any("--source http://127.0.0.1:9/BaseOS/x86_64/os: ignored" in line for line in lines)
    assert any("running: mksquashfs" in line for line in lines)
    assert any("running: xorriso -as mkisofs" in line for line in lines)
    assert "lorax-standin: done" in lines[-1]


# --- x86_64 ----------------------------------------------------------------------------------


def test_x86_64_tree_layout(build):
    tree = build("x86_64").tree
    for rel in [".treeinfo", ".discinfo", "media.repo", "images/install.img", "images/efiboot.img",
                "images/boot.iso", "images/pxeboot/vmlinuz", "images/pxeboot/initrd.img", "isolinux/isolinux.cfg",
                "isolinux/vmlinuz", "isolinux/initrd.img", "EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grub.cfg"]:  # fmt: skip
        assert (tree / rel).is_file(), rel
    assert (tree / "isolinux/isolinux.bin").read_bytes() == Path("/usr/lib/ISOLINUX/isolinux.bin").read_bytes()
    for module in ("ldlinux.c32", "libcom32.c32", "libutil.c32", "vesamenu.c32"):
        assert (tree / "isolinux" / module).read_bytes() == (
            Path("/usr/lib/syslinux/modules/bios") / module
        ).read_bytes()
    assert (tree / "isolinux/vmlinuz").read_bytes() == (tree / "images/pxeboot/vmlinuz").read_bytes()
    assert (tree / "images/pxeboot/vmlinuz").read_bytes().startswith(b"LORAX-STANDIN FIXTURE vmlinuz")
    assert not (tree / "images/boot.iso.manifest").exists()  # the build script writes the manifest, not lorax
    assert not (tree / "EFI/BOOT/BOOTAA64.EFI").exists()
    assert sorted(p.name for p in tree.parent.iterdir()) == ["lorax", "lorax-x86_64.log"]  # no temp dir left


def test_x86_64_boot_configs_name_the_volid(build):
    tree = build("x86_64").tree
    cfg = (tree / "isolinux/isolinux.cfg").read_text().splitlines()
    assert cfg[0] == "serial 0 115200"
    assert "say LORAX-STANDIN-ISOLINUX Rocky-9-4-x86_64-dvd" in cfg
    assert any(line.strip().startswith("append") and "inst.stage2=hd:LABEL=Rocky-9-4-x86_64-dvd" in line
               for line in cfg)  # fmt: skip
    grub = (tree / "EFI/BOOT/grub.cfg").read_text()
    assert "inst.stage2=hd:LABEL=Rocky-9-4-x86_64-dvd" in grub
    assert "linuxefi /images/pxeboot/vmlinuz" in grub


def test_x86_64_boot_iso_is_bios_uefi_hybrid(build):
    report = el_torito(build("x86_64").tree / "images/boot.iso")
    assert re.search(r"El Torito boot img :\s+1\s+BIOS\s+y", report), report
    assert re.search(r"El Torito boot img :\s+2\s+UEFI\s+y", report), report
    assert re.search(r"El Torito img path :\s+1\s+/isolinux/isolinux.bin", report)
    assert re.search(r"El Torito img opts :\s+1\s+boot-info-table", report)
    assert re.search(r"El Torito img path :\s+2\s+/images/efiboot.img", report)
    assert "System area summary: MBR isohybrid cyl-align-on GPT" in report
    assert re.search(r"MBR partition\s+:\s+2\s+0x00\s+0xef", report)


def test_x86_64_efiboot_img_holds_efi_boot(build):
    tree = build("x86_64").tree
    img = str(tree / "images/efiboot.img")
    assert tool("mdir", "-b", "-i", img, "::/EFI/BOOT").split() == ["::/EFI/BOOT/BOOTX64.EFI", "::/EFI/BOOT/grub.cfg"]
    assert "is ANACONDA" in tool("mdir", "-i", img, "::/")
    assert tool("mtype", "-i", img, "::/EFI/BOOT/grub.cfg") == (tree / "EFI/BOOT/grub.cfg").read_text()


def test_install_img_is_a_standin_squashfs(build):
    img = str(build("x86_64").tree / "images/install.img")
    listing = tool("unsquashfs", "-l", img).split()
    for rel in ("etc/os-release", ".buildstamp", "lorax-standin.txt"):
        assert f"squashfs-root/{rel}" in listing
    assert "Compression xz" in tool("unsquashfs", "-s", img)
    assert 'ID="lorax-standin"' in tool("unsquashfs", "-cat", img, "etc/os-release")
    buildstamp = tool("unsquashfs", "-cat", img, ".buildstamp")
    assert "Product=Rocky Linux\n" in buildstamp
    assert "IsFinal=True\n" in buildstamp
    assert "UUID=202405061253.x86_64\n" in buildstamp  # from SOURCE_DATE_EPOCH, not the clock


def test_discinfo_and_media_repo(build):
    tree = build("x86_64").tree
    assert (tree / ".discinfo").read_text() == f"{EPOCH}.000000\nRocky Linux 9.4\nx86_64\n"
    media = (tree / "media.repo").read_text()
    assert media.startswith("[InstallMedia]\nname=Rocky Linux 9.4\n")
    assert f"mediaid={EPOCH}.000000\n" in media


def test_same_source_date_epoch_gives_the_same_images(build, tmp_path):
    first = build("x86_64")
    # RR timestamps have 1 s resolution: make sure the wall clock moved on since the first build.
    time.sleep(max(0.0, first.log.stat().st_mtime + 1.1 - time.time()))
    result = run_standin(lorax_argv("x86_64", tmp_path / "again"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "again/.treeinfo").read_text() == (first.tree / ".treeinfo").read_text()


# --- every arch ------------------------------------------------------------------------------

ARCHES = ["x86_64", "aarch64", "ppc64le", "s390x"]
EXPECTED_ISO_FILES = {
    "x86_64": {"/isolinux/isolinux.bin", "/isolinux/isolinux.cfg", "/isolinux/vmlinuz", "/images/install.img",
               "/images/pxeboot/vmlinuz", "/EFI/BOOT/BOOTX64.EFI", "/images/efiboot.img"},
    "aarch64": {"/images/install.img", "/images/pxeboot/initrd.img", "/EFI/BOOT/BOOTAA64.EFI",
                "/EFI/BOOT/grub.cfg", "/images/efiboot.img"},
    "ppc64le": {"/ppc/bootinfo.txt", "/ppc/ppc64/vmlinuz", "/ppc/ppc64/initrd.img", "/boot/grub/grub.cfg",
                "/images/install.img"},
    "s390x": {"/generic.ins", "/images/generic.prm", "/images/cdboot.prm", "/images/cdboot.img",
              "/images/install.img"},
}  # fmt: skip


@pytest.mark.parametrize("arch", ARCHES)
def test_boot_iso_volid_and_contents(build, arch):
    iso = build(arch).tree / "images/boot.iso"
    cd = pycdlib.PyCdlib()
    cd.open(str(iso))
    try:
        assert cd.pvd.volume_identifier.decode().rstrip() == volid_for(arch)
        assert cd.has_rock_ridge()
        assert cd.has_joliet()
        system_id = cd.pvd.system_identifier.decode().rstrip()
    finally:
        cd.close()
    assert (system_id == "PPC") == (arch == "ppc64le")
    files = iso_files(iso)
    assert EXPECTED_ISO_FILES[arch] <= files
    assert "/images/boot.iso" not in files


@pytest.mark.parametrize("arch", ARCHES)
def test_treeinfo_loads_and_checksums_match(build, arch):
    tree = build(arch).tree
    assert (tree / ".treeinfo").read_text().startswith("# lorax-standin: NOT lorax output")
    ti = productmd.treeinfo.TreeInfo()
    ti.load(str(tree / ".treeinfo"))
    assert (ti.release.name, ti.release.short, ti.release.version) == ("Rocky Linux", "Rocky", "9.4")
    assert (ti.tree.arch, ti.tree.build_timestamp) == (arch, EPOCH)
    assert [v.id for v in ti.variants.get_variants()] == ["BaseOS"]
    variant = ti.variants["BaseOS"]
    assert (variant.paths.repository, variant.paths.packages) == (".", "Packages")
    assert ti.stage2.mainimage == "images/install.img"
    images = ti.images.images[arch]
    assert images["boot.iso"] == "images/boot.iso"
    assert ("efiboot.img" in images) == (arch in ("x86_64", "aarch64"))
    listed = {*images.values(), ti.stage2.mainimage}
    assert set(ti.checksums.checksums) == listed
    for rel, (kind, digest) in ti.checksums.checksums.items():
        assert kind == "sha256"
        assert digest == sha256(tree / rel), rel


def test_aarch64_is_uefi_only(build):
    tree = build("aarch64").tree
    report = el_torito(tree / "images/boot.iso")
    assert re.search(r"El Torito boot img :\s+1\s+UEFI\s+y", report), report
    assert "BIOS" not in report
    assert "isohybrid" not in report
    assert not (tree / "isolinux").exists()
    img = str(tree / "images/efiboot.img")
    assert tool("mdir", "-b", "-i", img, "::/EFI/BOOT").split() == ["::/EFI/BOOT/BOOTAA64.EFI", "::/EFI/BOOT/grub.cfg"]
    assert (tree / "EFI/BOOT/BOOTAA64.EFI").read_bytes().startswith(b"LORAX-STANDIN FIXTURE BOOTAA64.EFI")


def test_s390x_boots_cdboot_img(build):
    tree = build("s390x").tree
    report = el_torito(tree / "images/boot.iso")
    assert re.search(r"El Torito img path :\s+1\s+/images/cdboot.img", report), report
    assert "UEFI" not in report
    assert "inst.stage2=hd:LABEL=Rocky-9-4-s390x-dvd" in (tree / "images/cdboot.prm").read_text()
    assert "images/pxeboot/vmlinuz 0x00000000" in (tree / "generic.ins").read_text()


def test_ppc64le_tree(build):
    tree = build("ppc64le").tree
    assert "<chrp-boot>" in (tree / "ppc/bootinfo.txt").read_text()
    assert (tree / "ppc/ppc64/vmlinuz").read_bytes() == (tree / "images/pxeboot/vmlinuz").read_bytes()
    assert "inst.stage2=hd:LABEL=Rocky-9-4-ppc64le-dvd" in (tree / "boot/grub/grub.cfg").read_text()
    assert not (tree / "images/efiboot.img").exists()


# --- refusals and failures -------------------------------------------------------------------


def test_refuses_a_non_empty_output_dir(tmp_path):
    out = tmp_path / "lorax"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = run_standin(lorax_argv("x86_64", out))
    assert result.returncode == 1
    assert f"output directory {out} already exists and is not empty" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["lorax"]


def test_accepts_an_empty_output_dir(tmp_path):
    out = tmp_path / "lorax"
    out.mkdir()
    result = run_standin(lorax_argv("aarch64", out))
    assert result.returncode == 0, result.stderr
    assert (out / ".treeinfo").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["lorax"]


@pytest.mark.parametrize(
    ("arch", "volid", "message"),
    [
        ("riscv64", None, "unsupported --buildarch 'riscv64'"),
        ("x86_64", "R" * 33, "must be 1 to 32 bytes long (it is 33)"),
    ],
)
def test_refuses_bad_arch_and_long_volid(tmp_path, arch, volid, message):
    out = tmp_path / "lorax"
    result = run_standin(lorax_argv(arch, out, volid=volid))
    assert result.returncode == 1
    assert message in result.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_32_byte_volid_is_accepted(tmp_path):
    volid = "Rocky-9-4-RC1-x86_64-dvd-ABCDEFG"
    assert len(volid) == 32
    result = run_standin(lorax_argv("x86_64", tmp_path / "lorax", volid=volid))
    assert result.returncode == 0, result.stderr
    assert f"say LORAX-STANDIN-ISOLINUX {volid}" in (tmp_path / "lorax/isolinux/isolinux.cfg").read_text()


@pytest.mark.parametrize("bad", ["--sharedir=/usr/share/lorax", "--prod=Rocky"])
def test_unknown_options_are_argparse_errors(tmp_path, bad):
    result = run_standin([*lorax_argv("x86_64", tmp_path / "lorax"), bad])
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_logfile_inside_output_dir_is_refused(tmp_path):
    out = tmp_path / "lorax"
    result = run_standin(lorax_argv("x86_64", out, f"--logfile={out}/lorax.log"))
    assert result.returncode == 2
    assert "is inside the output directory" in result.stderr
    assert not out.exists()


def test_tool_failure_surfaces_stderr_and_leaves_no_tree(tmp_path):
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    fake = fakebin / "xorriso"
    fake.write_text("#!/bin/sh\necho 'xorriso : FAILURE : simulated write error' >&2\nexit 5\n")
    fake.chmod(0o755)
    out = tmp_path / "lorax"
    result = run_standin(lorax_argv("x86_64", out), {"PATH": f"{fakebin}:/usr/sbin:/usr/bin:/sbin:/bin"})
    assert result.returncode == 1
    assert "xorriso failed with exit status 5: xorriso : FAILURE : simulated write error" in result.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["fakebin"]  # the temp build dir was removed too


def test_sigterm_mid_build_removes_the_partial_tree(tmp_path):
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    (fakebin / "mksquashfs").write_text("#!/bin/sh\nexec sleep 30\n")
    (fakebin / "mksquashfs").chmod(0o755)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "PATH": f"{fakebin}:{os.environ['PATH']}"}
    proc = subprocess.Popen(lorax_argv("x86_64", tmp_path / "lorax"), env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not list(tmp_path.glob(".lorax.lorax-standin-*/tree/images/pxeboot/vmlinuz")):
            assert time.monotonic() < deadline and proc.poll() is None, "the build never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "terminated by signal 15; removing the partial build" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["fakebin"]


# --- real boot -------------------------------------------------------------------------------


def test_x86_64_boot_iso_reaches_isolinux_in_qemu(build, tmp_path):
    iso = build("x86_64").tree / "images/boot.iso"
    assert_boots_to(iso, b"LORAX-STANDIN-ISOLINUX Rocky-9-4-x86_64-dvd", tmp_path / "serial.log")
