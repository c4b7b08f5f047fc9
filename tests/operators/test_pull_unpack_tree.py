"""pull_unpack_tree against the real SeaweedFS, with a tarball made by the build script and the stand-in."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import productmd.treeinfo
import pytest
from airflow.sdk.exceptions import AirflowFailException

from dev import stack
from releng.core import lorax, s3keys
from releng.core.layout import ComposeLayout
from releng.operators.pull_unpack_tree import PullUnpackTreeOperator, pull_unpack_kwargs
from tests.umask import not_public, private_umask

BUCKET = "releng-lorax-pull"
COMPOSE_ID = "Rocky-9.7-20250103.040506"
ARCH = "x86_64"


@pytest.fixture(scope="module")
def built(s3_server, el9, tmp_path_factory):
    """One real lorax result: build-lorax.sh with the stand-in, uploaded to SeaweedFS like the pod does."""
    url, datadir = s3_server
    client = stack.s3_client(url, datadir)
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    tmp = tmp_path_factory.mktemp("lorax-build")
    layout = ComposeLayout(el9, tmp, COMPOSE_ID)
    job = lorax.lorax_job(layout, ARCH, rc=False, hashed=False, peridot_url="http://127.0.0.1:9/v1/projects",
                          bucket=BUCKET, epoch=lorax.compose_epoch(COMPOSE_ID))
    (tmp / "xcom").mkdir()
    env = {**os.environ, **job.env(str(tmp / "work")), "LORAX_PYTHON": sys.executable, "LORAX_ALLOW_STANDIN": "1",
           "LORAX_XCOM_DIR": str(tmp / "xcom"), "AWS_ACCESS_KEY_ID": stack.S3_ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": stack.s3_secret(datadir), "AWS_ENDPOINT_URL": url}
    done = subprocess.run(["bash", str(lorax.BUILD_SCRIPT), *job.options], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    last = done.stdout.strip().splitlines()[-1]
    assert (tmp / "xcom" / "return.json").read_text().strip() == last  # what the KPO sidecar would read
    result = lorax.parse_result(last, job)
    return client, result, client.get_object(Bucket=BUCKET, Key=result["key"])["Body"].read()


@pytest.fixture
def compose(el9, tmp_path, s3_server, monkeypatch):
    """A prepared compose whose BaseOS os/kickstart trees already hold synced packages."""
    url, datadir = s3_server
    monkeypatch.setenv("AIRFLOW_CONN_RELENG_S3", stack.s3_connection(url, datadir))
    layout = ComposeLayout(el9, tmp_path / "compose", COMPOSE_ID)
    for kind in ("os", "kickstart"):
        tree = layout.repo_tree("BaseOS", ARCH, kind)
        (tree / "Packages" / "b").mkdir(parents=True)
        (tree / "Packages" / "b" / "bash-5.1-1.el9.x86_64.rpm").write_bytes(b"rpm")
        (tree / "repodata").mkdir()
        (tree / "repodata" / "repomd.xml").write_text("<repomd/>")
    return layout


def operator(layout: ComposeLayout, result: dict | None, **kwargs) -> PullUnpackTreeOperator:
    return PullUnpackTreeOperator(task_id="pull_unpack_tree", arch=ARCH, release="el9", compose_id=COMPOSE_ID,
                                  compose_root=str(layout.compose_root), lorax_result=result, bucket=BUCKET,
                                  aws_conn_id="releng_s3", **kwargs)


def put(client, epoch: int, body: bytes, sha: str | None = None) -> dict:
    """Upload ``body`` at the arch's lorax key for ``epoch`` with ``sha`` (default: its own) as metadata."""
    key = s3keys.lorax_key(9, "9.7", ARCH, epoch)
    sha = sha or hashlib.sha256(body).hexdigest()
    client.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata={s3keys.CHECKSUM_METADATA: sha})
    return {"arch": ARCH, "key": key, "sha256": sha, "size": len(body)}


def crafted(*members: tuple[str, str, bytes | str]) -> bytes:
    """A gzip tarball with a lorax/.treeinfo plus the given (kind, name, data-or-linkname) members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for kind, name, data in [("file", "lorax/.treeinfo", b"[header]\n"), *members]:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
    return buf.getvalue()


def tree_snapshot(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return out


def assert_untouched(layout: ComposeLayout) -> None:
    assert not layout.lorax_dir(ARCH).exists() and not layout.work_isos(ARCH).exists()
    assert leftovers(layout) == []
    for kind in ("os", "kickstart"):
        assert sorted(p.name for p in layout.repo_tree("BaseOS", ARCH, kind).iterdir()) == ["Packages", "repodata"]


def leftovers(layout: ComposeLayout) -> list[str]:
    return sorted(str(p.relative_to(layout.top)) for p in layout.top.rglob(".*") if ".tmp" in p.name
                  or ".download" in p.name or ".extract-" in p.name or ".old-" in p.name)


def test_pull_unpack_tree_success_and_rerun(built, compose):
    _, result, _ = built
    out = operator(compose, result).execute({})

    isos = compose.work_isos(ARCH)
    iso = isos / "Rocky-9.7-x86_64-boot.iso"
    assert out == {"arch": ARCH, "volid": "Rocky-9-7-x86_64-dvd", "boot_iso": str(iso),
                   "lorax_dir": str(compose.lorax_dir(ARCH)), "tree_files": out["tree_files"]}
    lorax_tree = compose.lorax_dir(ARCH) / "lorax"
    assert (compose.lorax_dir(ARCH) / "lorax-x86_64.log").is_file()
    assert iso.read_bytes() == (lorax_tree / "images/boot.iso").read_bytes()
    for alias in ("Rocky-x86_64-boot.iso", "Rocky-9-latest-x86_64-boot.iso"):
        assert os.readlink(isos / alias) == iso.name and (isos / alias).resolve() == iso.resolve()
        assert os.readlink(isos / f"{alias}.manifest") == f"{iso.name}.manifest"
    assert (isos / f"{iso.name}.manifest").read_text() == (lorax_tree / "images/boot.iso.manifest").read_text()
    checksums = sorted(p.name for p in isos.glob("*.CHECKSUM"))
    assert checksums == sorted(f"{n}.CHECKSUM" for n in ("Rocky-9.7-x86_64-boot.iso", "Rocky-x86_64-boot.iso",
                                                          "Rocky-9-latest-x86_64-boot.iso"))
    verify = subprocess.run(["sha256sum", "-c", "--strict", *checksums], cwd=isos, capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stdout.count(": OK") == 3, verify.stdout + verify.stderr
    generic = (isos / "Rocky-x86_64-boot.iso.CHECKSUM").read_text()
    assert generic.startswith(f"# Rocky-x86_64-boot.iso: {iso.stat().st_size} bytes\n")

    for kind in ("os", "kickstart"):
        tree = compose.repo_tree("BaseOS", ARCH, kind)
        for rel in ("images/boot.iso", "images/install.img", "images/efiboot.img", "isolinux/isolinux.bin",
                    "EFI/BOOT/BOOTX64.EFI", ".discinfo"):
            assert (tree / rel).is_file(), rel
        assert (tree / "Packages/b/bash-5.1-1.el9.x86_64.rpm").read_bytes() == b"rpm"
        assert (tree / "repodata/repomd.xml").read_text() == "<repomd/>"
        ti = productmd.treeinfo.TreeInfo()
        ti.load(str(tree / ".treeinfo"))
        assert (ti.release.name, ti.release.short, ti.release.version) == ("Rocky Linux", "Rocky", "9.7")
        assert ti.checksums.checksums and ti.stage2.mainimage == "images/install.img"
        for rel, (algo, digest) in ti.checksums.checksums.items():
            assert algo == "sha256" and hashlib.sha256((tree / rel).read_bytes()).hexdigest() == digest, rel
        assert "images/boot.iso" in ti.checksums.checksums
        assert ti.variants["AppStream"].paths.repository == f"../../../AppStream/{ARCH}/{kind}"
        assert ti.variants["BaseOS"].paths.packages == "Packages"
        assert "lorax-standin" not in (tree / ".treeinfo").read_text()  # rewritten, not copied
    assert out["tree_files"] == len([p for p in lorax_tree.rglob("*") if p.is_file()]) - 1  # all but .treeinfo

    (compose.lorax_dir(ARCH) / "dvd").mkdir()  # the DVD step's variant tree lives beside lorax/
    (compose.lorax_dir(ARCH) / "dvd" / ".treeinfo").write_text("dvd tree")
    before = tree_snapshot(compose.top)
    again = operator(compose, result).execute({})
    assert again == out and tree_snapshot(compose.top) == before
    assert leftovers(compose) == []


def test_unpacked_tree_is_world_readable_under_umask_077(built, compose):
    """Issue 7 finding 4: the tarball's members, the directories the merge makes and the boot ISO files are
    0644/0755 in the repo trees and work/isos whatever the umask."""
    _, result, _ = built
    with private_umask():
        operator(compose, result).execute({})
    for kind in ("os", "kickstart"):
        tree = compose.repo_tree("BaseOS", ARCH, kind)
        assert not_public(*(tree / name for name in ("images", "isolinux", "EFI", ".discinfo", ".treeinfo"))) == []
    assert not_public(compose.work_isos(ARCH), compose.lorax_dir(ARCH)) == []


def test_newest_is_chosen_by_numeric_epoch(built, compose):
    client, result, body = built
    put(client, 999_999_999, b"an older upload that sorts last as a string")
    newest = put(client, 1_000_000_000, body)
    out = operator(compose, None, newest=True).execute({})
    assert out["volid"] == "Rocky-9-7-x86_64-dvd" and newest["sha256"] == result["sha256"]
    with pytest.raises(AirflowFailException, match="wire build_lorax's output into lorax_result"):
        operator(compose, None).execute({})


def test_corrupt_tarball_fails_the_checksum(built, compose):
    client, result, body = built
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0xFF
    bad = put(client, 1_100_000_001, bytes(flipped), sha=result["sha256"])  # metadata claims the good digest
    with pytest.raises(AirflowFailException, match=r"is corrupt: its sha256 is [0-9a-f]{64} but the object metadata"):
        operator(compose, bad).execute({})
    assert_untouched(compose)


def test_truncated_gzip_is_refused(built, compose):
    client, _, body = built
    truncated = put(client, 1_100_000_002, body[: len(body) // 2])  # a consistent checksum of a broken archive
    with pytest.raises(AirflowFailException, match=r"cannot be read as a tar archive.*truncated or corrupt"):
        operator(compose, truncated).execute({})
    assert_untouched(compose)


def test_missing_key(compose, built):
    result = {"arch": ARCH, "key": s3keys.lorax_key(9, "9.7", ARCH, 1_100_000_003), "sha256": "0" * 64, "size": 9}
    with pytest.raises(AirflowFailException, match=f"s3://{BUCKET}/{result['key']} does not exist; rerun build_lorax"):
        operator(compose, result).execute({})
    assert_untouched(compose)


def test_replaced_object_and_missing_metadata(built, compose):
    client, result, body = built
    replaced = {**put(client, 1_100_000_004, body), "sha256": "f" * 64}
    with pytest.raises(AirflowFailException, match="the object was replaced, rerun build_lorax"):
        operator(compose, replaced).execute({})
    key = s3keys.lorax_key(9, "9.7", ARCH, 1_100_000_005)
    client.put_object(Bucket=BUCKET, Key=key, Body=body)
    unverified = {**result, "key": key}
    with pytest.raises(AirflowFailException, match="has no sha256 metadata"):
        operator(compose, unverified).execute({})
    assert_untouched(compose)


@pytest.mark.parametrize("epoch, member, reason", [
    (1_100_000_010, ("file", "lorax/../../../evil", b"x"), r"member 'lorax/\.\./\.\./\.\./evil'.*contains '\.\.'"),
    (1_100_000_011, ("file", "/tmp/evil-absolute", b"x"), "member '/tmp/evil-absolute' has the absolute"),
    (1_100_000_012, ("symlink", "lorax/images/escape", "../../../../../../etc"),
     "member 'lorax/images/escape' is a symlink to '../../../../../../etc', which points outside"),
])
def test_unsafe_tarballs_are_refused(built, compose, epoch, member, reason):
    client, _, _ = built
    bad = put(client, epoch, crafted(member))
    with pytest.raises(AirflowFailException, match=reason) as err:
        operator(compose, bad).execute({})
    assert str(err.value).startswith(f"s3://{BUCKET}/{bad['key']} was not unpacked")
    assert_untouched(compose)
    assert not (compose.top.parent / "evil").exists() and not Path("/tmp/evil-absolute").exists()


def test_tarball_for_another_volume_id(built, compose):
    _, result, _ = built
    with pytest.raises(AirflowFailException,
                       match="volume id 'Rocky-9-7-x86_64-dvd', expected 'Rocky-9-7-RC1-x86_64-dvd'"):
        operator(compose, result, rc=True).execute({})


def test_result_for_another_arch_or_key(compose):
    good = {"arch": ARCH, "key": s3keys.lorax_key(9, "9.7", ARCH, 1_100_000_020), "sha256": "0" * 64, "size": 9}
    with pytest.raises(AirflowFailException, match="is for arch 'aarch64', not 'x86_64'"):
        operator(compose, {**good, "arch": "aarch64"}).execute({})
    with pytest.raises(AirflowFailException, match="is not a el9 x86_64 lorax tarball"):
        operator(compose, {**good, "key": s3keys.lorax_key(9, "9.6", ARCH, 1_100_000_020)}).execute({})


def test_pull_unpack_kwargs_pairs_result_and_item():
    result = {"arch": ARCH, "key": "k", "sha256": "0" * 64, "size": 1}
    summary = {"release": "el9", "compose_id": COMPOSE_ID, "compose_root": "/c", "rc": True, "full_run": False}
    assert pull_unpack_kwargs((result, {"arch": ARCH, "summary": summary})) == {
        "arch": ARCH, "release": "el9", "compose_id": COMPOSE_ID, "compose_root": "/c", "rc": True,
        "kickstart": False, "lorax_result": result}
    assert json.dumps(pull_unpack_kwargs((result, {"arch": ARCH, "summary": summary})))
