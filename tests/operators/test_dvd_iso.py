"""build_dvd_iso for real: lorax stand-in trees, fixture repos, xorriso, implantisomd5, checkisomd5, dnf, QEMU."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import productmd.treeinfo
import pycdlib
import pytest
from airflow.sdk.exceptions import AirflowFailException

from releng.core import checksums, disc, dnf
from releng.core.checksums import parse_checksum_file
from releng.core.compose import build_dvd_iso, deploy_extra_files
from releng.core.layout import ComposeLayout
from releng.operators.build_dvd_iso import BuildDvdIsoOperator
from tests.bootcheck import assert_boots_to

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "include" / "lorax" / "lorax-standin"
EPOCH = 1715000000
ARCHES = ("x86_64", "aarch64")
TIMESTAMP = "20250101.000000"
# Terminal escapes and CRs: the serial stream interleaves cursor moves with ISOLINUX's text.


def tool(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)


def make_lorax_tree(layout: ComposeLayout, arch: str, rc: bool = False) -> Path:
    """What pull_unpack_tree leaves: the stand-in's tree plus the manifest the lorax build script writes."""
    tree = layout.lorax_dir(arch) / "lorax"
    argv = [sys.executable, str(STANDIN), "--product=Rocky Linux", "--version=9.7", "--release=9.7",
            "--variant=BaseOS", f"--buildarch={arch}", f"--volid={layout.volid(arch, rc)}", str(tree)]
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)})
    assert result.returncode == 0, result.stderr
    write_boot_manifest(tree)
    return tree


def write_boot_manifest(tree: Path) -> None:
    paths = build_dvd_iso.iso_manifest(tree / build_dvd_iso.BOOT_ISO)
    (tree / build_dvd_iso.BOOT_MANIFEST).write_text("".join(f"{p}\n" for p in paths))


def copy_repos(layout: ComposeLayout, fixture, arch: str) -> None:
    """BaseOS as a flat repo, AppStream hashed (Packages/<letter>/...), as the sync leaves them."""
    for repo, hashed in (("BaseOS", False), ("AppStream", True)):
        shutil.copytree(fixture.repo_dir(layout.profile.project_id, repo, arch, hashed=hashed),
                        layout.repo_tree(repo, arch))


def new_compose(root: Path, el9, fixture, arches=ARCHES, repos: bool = True, lorax: bool = True) -> ComposeLayout:
    layout = ComposeLayout.new(el9, root, TIMESTAMP)
    for arch in arches:
        if lorax:
            make_lorax_tree(layout, arch)
        if repos:
            copy_repos(layout, fixture, arch)
    return layout


def run_operator(layout: ComposeLayout, arch: str, **kwargs) -> dict:
    op = BuildDvdIsoOperator(task_id="build_dvd_iso", arch=arch, image="dvd", release="el9",
                            compose=str(layout.top), **kwargs)
    return op.execute({})


def iso_paths(path: Path) -> list[str]:
    """Every directory and file on the ISO (Rock Ridge names), read with pycdlib."""
    cd = pycdlib.PyCdlib()
    cd.open(str(path))
    try:
        out = []
        for root, dirs, files in cd.walk(rr_path="/"):
            out += [f"{root.rstrip('/')}/{name}" for name in (*dirs, *files)]
        return sorted(out)
    finally:
        cd.close()


def extract(path: Path, dest: Path, *iso_paths_: str) -> None:
    argv = ["xorriso", "-osirrox", "on", "-indev", str(path)]
    for p in iso_paths_:
        argv += ["-extract", p, str(dest / p.lstrip("/"))]
    tool(*argv)


@pytest.fixture(scope="module")
def built(tmp_path_factory, el9, fixture_buildsystem):
    """One compose with two arches, extra files, and a DVD built per arch by the operator."""
    layout = new_compose(tmp_path_factory.mktemp("compose"), el9, fixture_buildsystem)
    extra = deploy_extra_files.extra_files_dir(layout)
    extra.mkdir(parents=True)
    (extra / "EULA").write_text("fixture EULA\n")
    (extra / "RPM-GPG-KEY-Rocky-9").write_text("fixture key\n")
    results = {arch: run_operator(layout, arch) for arch in ARCHES}
    return layout, results


def dvd(built, arch: str) -> Path:
    return Path(built[1][arch]["iso"])


# --- what the operator returns and writes -----------------------------------------------------------------


def test_xcom_and_names(built):
    layout, results = built
    for arch in ARCHES:
        result = results[arch]
        path = layout.work_isos(arch) / f"Rocky-9.7-{arch}-dvd.iso"
        assert result == {"arch": arch, "image": "dvd", "iso": str(path), "size": path.stat().st_size,
                          "sha256": checksums.hash_once(path, ["sha256"])["sha256"], "volid": f"Rocky-9-7-{arch}-dvd"}
        assert sorted(p.name for p in layout.work_isos(arch).iterdir()) == sorted([
            f"Rocky-9.7-{arch}-dvd.iso", f"Rocky-9.7-{arch}-dvd.iso.CHECKSUM", f"Rocky-9.7-{arch}-dvd.iso.manifest",
            f"Rocky-{arch}-dvd.iso", f"Rocky-{arch}-dvd.iso.CHECKSUM", f"Rocky-{arch}-dvd.iso.manifest",
            f"Rocky-9-latest-{arch}-dvd.iso", f"Rocky-9-latest-{arch}-dvd.iso.CHECKSUM",
            f"Rocky-9-latest-{arch}-dvd.iso.manifest"])
        for link in (f"Rocky-{arch}-dvd.iso", f"Rocky-9-latest-{arch}-dvd.iso"):
            assert os.readlink(layout.work_isos(arch) / link) == f"Rocky-9.7-{arch}-dvd.iso"  # relative


def test_x86_64_dvd_boots_bios_and_uefi_like_boot_iso(built):
    report = tool("xorriso", "-indev", str(dvd(built, "x86_64")), "-report_el_torito", "plain",
                  "-report_system_area", "plain").stdout
    assert re.search(r"El Torito boot img :\s+1\s+BIOS\s+y", report), report
    assert re.search(r"El Torito boot img :\s+2\s+UEFI\s+y", report), report
    assert re.search(r"El Torito img path :\s+1\s+/isolinux/isolinux.bin", report)
    assert re.search(r"El Torito img path :\s+2\s+/images/efiboot.img", report)
    assert "System area summary: MBR isohybrid cyl-align-on GPT" in report


def test_aarch64_dvd_is_uefi_only(built):
    report = tool("xorriso", "-indev", str(dvd(built, "aarch64")), "-report_el_torito", "plain").stdout
    assert re.search(r"El Torito boot img :\s+1\s+UEFI\s+y", report), report
    assert "BIOS" not in report


def test_implanted_md5_passes_and_catches_a_flipped_byte(built, tmp_path):
    path = dvd(built, "x86_64")
    assert tool(*build_dvd_iso.checkisomd5_argv(path), check=False).returncode == 0
    assert "Supported ISO: yes" in tool("checkisomd5", "--md5sumonly", str(path)).stdout
    copy = tmp_path / "flipped.iso"
    shutil.copyfile(path, copy)
    with open(copy, "r+b") as f:
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert tool(*build_dvd_iso.checkisomd5_argv(copy), check=False).returncode == 1


def test_volume_id_is_loraxs(built):
    layout, _ = built
    for arch in ARCHES:
        lorax = disc.read_volid(layout.lorax_dir(arch) / "lorax" / build_dvd_iso.BOOT_ISO)
        assert disc.read_volid(dvd(built, arch)) == lorax == layout.volid(arch, rc=False)
        assert f"Volume id: {lorax}" in tool("isoinfo", "-d", "-i", str(dvd(built, arch))).stdout


@pytest.mark.parametrize("arch", ARCHES)
def test_repos_on_the_dvd_are_repos_dnf_reads(built, tmp_path, arch):
    layout, _ = built
    out = tmp_path / "dvd"
    extract(dvd(built, arch), out, "/BaseOS", "/AppStream")
    for repo in ("BaseOS", "AppStream"):
        compose_tree = layout.repo_tree(repo, arch)
        expected = sorted(p.relative_to(compose_tree) for p in compose_tree.rglob("*") if p.is_file())
        assert sorted(p.relative_to(out / repo) for p in (out / repo).rglob("*") if p.is_file()) == expected
    assert list((out / "AppStream/Packages").glob("*/foo-app-*.rpm"))  # hashed subdirectories kept
    ws = dnf.DnfWorkspace(tmp_path / "dnf")
    ws.root.mkdir()
    repos = [dnf.DnfRepo(f"dvd-{r}", f"file://{out / r}") for r in ("BaseOS", "AppStream")]
    ws.config.write_text(dnf.dnf_config(ws, repos, [], gpgcheck=False))
    argv = dnf.repoclosure_argv(ws, "dvd-AppStream", ["dvd-BaseOS", "dvd-AppStream"], arch, major=9, disttag="el9")
    result = tool(*argv, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    query = tool(*dnf._dnf_base(ws, 9, "el9"), f"--forcearch={arch}", "repoquery", "--repo=dvd-AppStream",
                 "--qf", "%{name}", check=False)
    assert "foo-app" in query.stdout.split(), query.stdout + query.stderr


def test_treeinfo_on_the_dvd_is_the_rewritten_disc_treeinfo(built, tmp_path):
    layout, _ = built
    out = tmp_path / "dvd"
    extract(dvd(built, "x86_64"), out, "/.treeinfo", "/.discinfo", "/images", "/EULA")
    variant_tree = build_dvd_iso.variant_tree_dir(layout, "x86_64", "dvd")
    assert (out / ".treeinfo").read_bytes() == (variant_tree / ".treeinfo").read_bytes()
    ti = productmd.treeinfo.TreeInfo()
    ti.load(str(out / ".treeinfo"))
    assert (ti.media.discnum, ti.media.totaldiscs) == (1, 1)
    assert sorted(ti.variants) == ["AppStream", "BaseOS"]
    assert ti.variants["BaseOS"].paths.repository == "BaseOS"
    assert "boot.iso" not in ti.images.images["x86_64"]
    for rel, (algo, digest) in ti.checksums.checksums.items():  # they describe the files on this DVD
        assert checksums.hash_once(out / rel, [algo])[algo] == digest, rel
    assert (out / ".discinfo").read_text() == f"{EPOCH}\nRocky Linux 9.7\nx86_64\nALL\n"
    assert (out / "EULA").read_text() == "fixture EULA\n"


def test_manifest_is_sorted_and_lists_the_iso(built):
    layout, _ = built
    for arch in ARCHES:
        lines = (layout.work_isos(arch) / f"Rocky-9.7-{arch}-dvd.iso.manifest").read_text().splitlines()
        assert lines == sorted(lines)
        assert lines == iso_paths(dvd(built, arch))
        assert "/AppStream/repodata/repomd.xml" in lines and "/images/boot.iso" not in lines


def test_checksum_files_verify_with_sha256sum(built):
    layout, results = built
    directory = layout.work_isos("x86_64")
    sidecars = sorted(directory.glob("*.CHECKSUM"))
    assert len(sidecars) == 3
    text = "".join(p.read_text() for p in sidecars)
    assert {name for _, name, _ in parse_checksum_file(text)} == {
        "Rocky-9.7-x86_64-dvd.iso", "Rocky-x86_64-dvd.iso", "Rocky-9-latest-x86_64-dvd.iso"}
    assert {digest for _, _, digest in parse_checksum_file(text)} == {results["x86_64"]["sha256"]}
    (directory.parent / "CHECKSUM.x86_64").write_text(text)
    try:
        result = subprocess.run(["sha256sum", "-c", "--strict", "../CHECKSUM.x86_64"], cwd=directory,
                                capture_output=True, text=True)
    finally:
        (directory.parent / "CHECKSUM.x86_64").unlink()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == 3


def test_rerun_converges_to_the_same_dvd(built):
    layout, results = built
    before = {p.name: (p.is_symlink(), p.read_bytes() if not p.is_symlink() else os.readlink(p))
              for p in layout.work_isos("x86_64").iterdir() if not p.name.endswith(".iso")}
    again = run_operator(layout, "x86_64", summary={"rc": False})
    assert again == results["x86_64"]  # SOURCE_DATE_EPOCH: the same inputs give the same bytes
    after = {p.name: (p.is_symlink(), p.read_bytes() if not p.is_symlink() else os.readlink(p))
             for p in layout.work_isos("x86_64").iterdir() if not p.name.endswith(".iso")}
    assert after == before
    assert sorted(p.name for p in layout.lorax_dir("x86_64").iterdir()) == ["dvd", "lorax", "xorriso-dvd-x86_64.txt"]


def test_rebuild_after_the_inputs_were_touched_is_byte_identical(tmp_path, el9, fixture_buildsystem):
    layout = new_compose(tmp_path, el9, fixture_buildsystem, arches=("aarch64",))
    extra = deploy_extra_files.extra_files_dir(layout)
    extra.mkdir(parents=True)
    (extra / "EULA").write_text("fixture EULA\n")
    first = build_dvd_iso.build_dvd(layout, "aarch64", "dvd", rc=False)
    before = first.iso.read_bytes()
    # what a rerun meets: re-synced repos, redeployed extra files, a re-unpacked lorax tree (new mtimes)
    later = EPOCH + 86400
    for top in (layout.compose, extra, layout.lorax_dir("aarch64") / "lorax"):
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                os.utime(Path(dirpath) / name, (later, later))
            os.utime(dirpath, (later + 1, later + 1))
    again = build_dvd_iso.build_dvd(layout, "aarch64", "dvd", rc=False)
    assert again.iso == first.iso and again.sha256 == first.sha256
    assert again.iso.read_bytes() == before


def test_dialog_is_kept_for_inspection(built):
    layout, _ = built
    lines = build_dvd_iso.dialog_path(layout, "x86_64", "dvd").read_text().splitlines()
    assert lines[:8] == [f"-indev '{layout.lorax_dir('x86_64')}/lorax/images/boot.iso'", lines[1],
                         "-stdio_sync off", "-boot_image any replay", "-joliet on", "-system_id LINUX",
                         "-compliance joliet_long_names", "-volid 'Rocky-9-7-x86_64-dvd'"]
    assert lines[-1] == "-end"
    assert lines[-2].endswith(".rpm'")  # RPMs last
    assert any(line.startswith("-update ") and line.endswith("'/isolinux/isolinux.cfg'") for line in lines)
    assert not any("/images/install.img'" in line for line in lines)  # comes from boot.iso


def test_release_candidate_dvd_carries_the_rc_level(tmp_path, monkeypatch, el9, fixture_buildsystem):
    layout = new_compose(tmp_path, el9, fixture_buildsystem, arches=("aarch64",), lorax=False)
    make_lorax_tree(layout, "aarch64", rc=True)
    monkeypatch.setenv("RELENG_COMPOSE_ROOT", str(tmp_path))  # the compose given by id is found there
    op = BuildDvdIsoOperator(task_id="build_dvd_iso", arch="aarch64", image="dvd",
                            summary={"release": "el9", "compose_id": layout.compose_id, "rc": True})
    result = op.execute({})
    assert Path(result["iso"]).name == "Rocky-9.7-RC1-aarch64-dvd.iso"
    assert result["volid"] == disc.read_volid(Path(result["iso"])) == "Rocky-9-7-RC1-aarch64-dvd"
    assert os.readlink(layout.work_isos("aarch64") / "Rocky-9-latest-aarch64-dvd.iso") == Path(result["iso"]).name


# --- .treeinfo inside boot.iso ---------------------------------------------


def test_a_treeinfo_inside_boot_iso_is_replaced_by_the_rewritten_one(tmp_path, el9, fixture_buildsystem):
    layout = new_compose(tmp_path, el9, fixture_buildsystem, arches=("x86_64",))
    tree = layout.lorax_dir("x86_64") / "lorax"
    boot, with_ti = tree / build_dvd_iso.BOOT_ISO, tmp_path / "boot-with-treeinfo.iso"
    tool("xorriso", "-indev", str(boot), "-outdev", str(with_ti), "-boot_image", "any", "replay",
         "-map", str(tree / ".treeinfo"), "/.treeinfo")
    os.replace(with_ti, boot)
    write_boot_manifest(tree)
    assert "/.treeinfo" in (tree / build_dvd_iso.BOOT_MANIFEST).read_text().splitlines()
    result = build_dvd_iso.build_dvd(layout, "x86_64", "dvd", rc=False)
    out = tmp_path / "out"
    extract(result.iso, out, "/.treeinfo")
    assert "[media]" in (out / ".treeinfo").read_text()  # not lorax's copy from boot.iso
    rewritten = build_dvd_iso.variant_tree_dir(layout, "x86_64", "dvd") / ".treeinfo"
    assert (out / ".treeinfo").read_bytes() == rewritten.read_bytes()
    dialog = build_dvd_iso.dialog_path(layout, "x86_64", "dvd").read_text().splitlines()
    assert "-update" in next(line for line in dialog if line.endswith("'/.treeinfo'"))


# --- clear errors ---------------------------------------------------------------------------------------


def test_missing_boot_iso_is_a_clear_failure(tmp_path, el9, fixture_buildsystem):
    layout = new_compose(tmp_path, el9, fixture_buildsystem, arches=("x86_64",), lorax=False)
    with pytest.raises(AirflowFailException, match=r"lorax's boot.iso .*images/boot.iso is missing.*pull_unpack_tree"):
        run_operator(layout, "x86_64")
    assert not layout.work_isos("x86_64").exists()


def test_volume_id_of_another_rc_is_a_clear_failure(built):
    layout, _ = built
    with pytest.raises(AirflowFailException, match=r"volume id 'Rocky-9-7-x86_64-dvd' of .* is not "
                                                   r"'Rocky-9-7-RC1-x86_64-dvd'"):
        run_operator(layout, "x86_64", rc="True")


def test_volume_id_longer_than_32_is_a_clear_failure(built, el9):
    layout, _ = built
    long = ComposeLayout(dataclasses.replace(el9, shortname="RockyEnterpriseLinux"), layout.compose_root,
                         layout.compose_id)
    with pytest.raises(build_dvd_iso.IsoInputError, match=r"is 39 characters; ISO 9660 allows 32"):
        build_dvd_iso.build_dvd(long, "x86_64", "dvd", rc=True)


def test_unsynced_repo_is_a_clear_failure_and_leaves_nothing(tmp_path, el9, fixture_buildsystem):
    layout = new_compose(tmp_path, el9, fixture_buildsystem, arches=("x86_64",), repos=False)
    with pytest.raises(AirflowFailException, match=r"BaseOS/x86_64/os/Packages is missing; the BaseOS repo for "
                                                   r"x86_64 has not been synced"):
        run_operator(layout, "x86_64")
    assert not layout.work_isos("x86_64").exists()
    assert sorted(p.name for p in layout.lorax_dir("x86_64").iterdir()) == ["dvd", "lorax"]


def test_operator_contract():
    assert set(BuildDvdIsoOperator.template_fields) >= {"arch", "image", "compose", "rc", "lorax_tree", "summary"}
    with pytest.raises(TypeError):
        BuildDvdIsoOperator("build_dvd_iso")  # keyword-only
    with pytest.raises(AirflowFailException, match="no compose given"):
        BuildDvdIsoOperator(task_id="t", arch="x86_64", image="dvd").execute({})


# --- real boot ------------------------------------------------------------------------------------------


def test_x86_64_dvd_reaches_isolinux_in_qemu(built, tmp_path):
    assert_boots_to(dvd(built, "x86_64"), b"LORAX-STANDIN-ISOLINUX Rocky-9-7-x86_64-dvd", tmp_path / "serial.log")
