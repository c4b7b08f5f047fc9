"""Issue 7 finding 4: every writer of a published tree leaves world-readable files (0644) and directories
(0755) under umask 077 and whatever temp-file API it used; the rsyncs into staging and production publish
0644/0755 even from a 0600 source."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import productmd.images
import pytest

from releng.core import checksums, metadata, modes, rsync, tarsafe, treeinfo
from releng.core.compose import build_dvd_iso, pull_cloud_images
from releng.core.compose.prepare_compose import start_compose
from releng.core.layout import ComposeLayout
from releng.core.profile import CloudImage
from releng.core.staging import sync_to_staging as staging
from releng.core.updates import update_repodata as updates
from tests.umask import not_public, umask077  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("umask077")
STAMP = "20251123.143015"


def _mode(path: Path) -> int:
    return os.lstat(path).st_mode & 0o7777


def test_helpers_set_published_modes(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    os.chmod(tool, 0o700)
    (tmp_path / "link").symlink_to("plain")
    assert _mode(plain) == 0o600 and modes.make_public(plain) and _mode(plain) == 0o644
    assert not modes.make_public(plain)
    modes.make_public_tree(tmp_path)
    assert _mode(tool) == 0o755 and _mode(tmp_path) == 0o755
    made = modes.public_dirs(tmp_path / "a" / "b" / "c")
    assert made == tmp_path / "a" / "b" / "c" and made.is_dir()
    assert not_public(tmp_path) == []


def test_checksum_file(tmp_path):
    path = checksums.write_checksum_file(tmp_path / "CHECKSUM", [checksums.Checksum("x", 1, "sha256", "0" * 64)])
    assert _mode(path) == 0o644


def test_repo_treeinfo_discinfo_media_repo(tmp_path, el9):
    tree = tmp_path / "os"
    tree.mkdir(mode=0o755)
    treeinfo.write_repo_treeinfo(tree, el9, "x86_64", "BaseOS", 1715000000)
    assert {p.name: _mode(p) for p in tree.iterdir()} == {".treeinfo": 0o644, ".discinfo": 0o644,
                                                          "media.repo": 0o644}


def test_productmd_metadata(tmp_path, el9):
    layout = ComposeLayout.new(el9, tmp_path, STAMP)
    path = metadata.dump(metadata.images_manifest(layout, [], "20251123"), tmp_path / "images.json")
    assert _mode(path) == 0o644
    productmd.images.Images().load(str(path))


def test_compose_id_files(tmp_path, el9):
    layout = ComposeLayout.new(el9, tmp_path, STAMP)
    start_compose(layout)
    assert _mode(layout.metadata / "COMPOSE_ID") == 0o644


def test_cloud_image_from_a_named_temporary_file(tmp_path, el9):
    """The reported case: a download through NamedTemporaryFile is 0600 whatever the umask."""
    layout = ComposeLayout.new(el9, tmp_path, STAMP)
    image = CloudImage(type="GenericCloud", format="qcow2", variants=("Base",), arches=("x86_64",),
                       primary_variant="Base")
    name = "Rocky-9-GenericCloud-Base-9.7-20250101.1.x86_64"
    build = pull_cloud_images.CloudBuild("20250101", 1, 1735700000,
                                         f"buildimage-9.7-x86_64/{name}/1735700000/{name}.qcow2", "Base")
    partial = pull_cloud_images.cloud_partial_dir(layout, "x86_64")
    partial.mkdir(parents=True)
    with tempfile.NamedTemporaryFile(dir=partial, delete=False) as f:
        f.write(b"qcow2")
    assert _mode(Path(f.name)) == 0o600
    pull_cloud_images.install_cloud_image(layout, image, build, "x86_64", Path(f.name), "0" * 64)
    out = layout.work_images("x86_64")
    assert {p.name for p in out.iterdir()} >= {build.filename, f"{build.filename}.CHECKSUM"}
    assert not_public(out) == []


def test_iso_side_files_and_variant_tree(tmp_path, el9):
    from tests.core.test_iso import _fake_lorax

    layout = ComposeLayout.new(el9, tmp_path, STAMP)
    lorax = _fake_lorax(layout, "x86_64")
    modes.make_public_tree(lorax)  # what tarsafe leaves
    tree, _stamp = build_dvd_iso.build_variant_tree(layout, "x86_64", el9.iso_images["dvd"], lorax)
    assert not_public(tree) == []


def test_tar_extraction_of_private_members_and_implied_dirs(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, mode in (("lorax/images/install.img", 0o600), ("lorax/EFI/BOOT/grubx64.efi", 0o700)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 3, mode
            tar.addfile(info, io.BytesIO(b"abc"))
        info = tarfile.TarInfo("lorax/private")
        info.type, info.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(info)
    (tmp_path / "l.tar.gz").write_bytes(buf.getvalue())
    done = tarsafe.safe_extract(tmp_path / "l.tar.gz", tmp_path / "out" / "x86_64")
    assert not_public(done.path) == []
    assert _mode(done.path / "lorax/EFI/BOOT/grubx64.efi") == 0o755


def test_updates_repodata_swap(tmp_path, fixture_buildsystem, el9):
    """createrepo_c's output in the scratch dir is 0600 under umask 077; the published repodata is not."""
    source = fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64", hashed=True)
    new = tmp_path / "new"
    shutil.copytree(source / "repodata", new / "repodata", copy_function=shutil.copyfile)
    assert _mode(new / "repodata" / "repomd.xml") == 0o600
    tree = tmp_path / "tree"
    updates.swap_repodata(new, tree)
    assert not_public(tree / "repodata") == []


def _private_tree(root: Path) -> Path:
    (root / "BaseOS" / "x86_64" / "os" / "repodata").mkdir(parents=True)
    (root / "BaseOS" / "x86_64" / "os" / "repodata" / "repomd.xml").write_text("<repomd/>")
    (root / "images").mkdir()
    (root / "images" / "Rocky-9-GenericCloud.qcow2").write_bytes(b"img")
    (root / "images" / "latest.qcow2").symlink_to("Rocky-9-GenericCloud.qcow2")
    assert _mode(root / "images" / "Rocky-9-GenericCloud.qcow2") == 0o600
    return root


def test_staging_rsync_publishes_a_private_compose_readable(tmp_path):
    compose = _private_tree(tmp_path / "compose")
    dest = tmp_path / "staging" / "mirror" / "pub" / "rocky" / "9.7"
    modes.public_dirs(dest)
    for step in staging.STEPS:
        subprocess.run(staging.staging_argv(step, compose, dest), check=True, capture_output=True)
    assert not_public(tmp_path / "staging") == []


def test_promotion_rsync_publishes_a_private_staging_tree_readable(tmp_path):
    stage = _private_tree(tmp_path / "staging")
    production = tmp_path / "production"
    production.mkdir()
    result = rsync.run(rsync.dry_run_argv(stage, production))
    files_from = tmp_path / "files"
    files_from.write_bytes(b"".join(c.path.encode() + b"\0" for c in result.changes))
    rsync.run(rsync.phase_argv("payload", stage, production, files_from))
    assert not_public(production) == []
