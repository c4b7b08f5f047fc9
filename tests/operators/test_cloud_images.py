"""pull_cloud_images against the real SeaweedFS holding fixture images in the pipeline's bucket layout."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from dev import stack
from releng.core import s3keys
from releng.core.layout import ComposeLayout
from releng.operators.pull_cloud_images import PullCloudImagesOperator
from tests.umask import not_public, private_umask

BUCKET = "releng-cloud-test"
TIMESTAMP = "20250101.000000"


@pytest.fixture(scope="module")
def s3(s3_server, el9):
    """The seeded bucket and a boto3 client for test-only uploads; the Airflow connection points at it."""
    url, datadir = s3_server
    client = stack.s3_client(url, datadir)
    stack.seed_s3(client, BUCKET, [el9], arches=["x86_64", "aarch64"], log=lambda _m: None)
    old = os.environ.get("AIRFLOW_CONN_RELENG_S3")
    os.environ["AIRFLOW_CONN_RELENG_S3"] = stack.s3_connection(url, datadir)
    yield client
    if old is None:
        os.environ.pop("AIRFLOW_CONN_RELENG_S3", None)
    else:
        os.environ["AIRFLOW_CONN_RELENG_S3"] = old


@pytest.fixture
def layout(el9, tmp_path):
    return ComposeLayout.new(el9, tmp_path, TIMESTAMP)


def upload(client, el9, image_type: str, variant: str | None, arch: str, date: str, build: int, epoch: int,
           fmt: str, body: bytes, sha: str | None = "auto") -> str:
    name = s3keys.cloud_image_name(el9.shortname, el9.major, image_type, variant, el9.revision, date, build, arch)
    key = s3keys.cloud_image_key(name, el9.revision, arch, epoch, fmt)
    metadata = {} if sha is None else {s3keys.CHECKSUM_METADATA: hashlib.sha256(body).hexdigest() if sha == "auto"
                                       else sha}
    client.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=metadata)
    return key


def pull(layout: ComposeLayout, arch: str, image_type: str) -> dict:
    op = PullCloudImagesOperator(task_id="pull_cloud_images", arch=arch, image_type=image_type,
                                summary={"release": "el9", "top": str(layout.top)}, bucket=BUCKET)
    return op.execute({})


def test_pulls_the_newer_upload_of_each_variant_with_checksums_and_latest_links(s3, layout):
    result = pull(layout, "x86_64", "GenericCloud")
    names = {v: f"Rocky-9-GenericCloud-{v}-9.7-20250101.1.x86_64.qcow2" for v in ("Base", "LVM")}
    assert result == {"arch": "x86_64", "type": "GenericCloud", "files": [names["Base"], names["LVM"]]}
    out = layout.work_images("x86_64")
    assert sorted(p.name for p in out.iterdir()) == sorted([
        names["Base"], f"{names['Base']}.CHECKSUM", names["LVM"], f"{names['LVM']}.CHECKSUM",
        "Rocky-9-GenericCloud-Base.latest.x86_64.qcow2", "Rocky-9-GenericCloud-Base.latest.x86_64.qcow2.CHECKSUM",
        "Rocky-9-GenericCloud-LVM.latest.x86_64.qcow2", "Rocky-9-GenericCloud-LVM.latest.x86_64.qcow2.CHECKSUM",
        "Rocky-9-GenericCloud.latest.x86_64.qcow2", "Rocky-9-GenericCloud.latest.x86_64.qcow2.CHECKSUM",
    ])
    # build 1 is the newer of the two fixture uploads
    assert b"/Rocky-9-GenericCloud-Base-9.7-20250101.1.x86_64/" in (out / names["Base"]).read_bytes()
    assert os.readlink(out / "Rocky-9-GenericCloud.latest.x86_64.qcow2") == names["Base"]
    assert os.readlink(out / "Rocky-9-GenericCloud-LVM.latest.x86_64.qcow2") == names["LVM"]
    link_sum = (out / "Rocky-9-GenericCloud.latest.x86_64.qcow2.CHECKSUM").read_text()
    assert link_sum.startswith("# Rocky-9-GenericCloud.latest.x86_64.qcow2: ")
    text = "".join(p.read_text() for p in sorted(out.glob("*.CHECKSUM")))
    (layout.work / "CHECKSUM").write_text(text)
    check = subprocess.run(["sha256sum", "-c", "--strict", str(layout.work / "CHECKSUM")], cwd=out,
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == 5, check.stdout + check.stderr
    assert [p.name for p in out.parent.iterdir()] == ["x86_64"]  # no partial downloads left


def test_pulled_images_are_world_readable_under_umask_077(s3, layout):
    """Issue 7 finding 4: the download goes through a NamedTemporaryFile (0600); what lands is 0644."""
    with private_umask():
        pull(layout, "x86_64", "GenericCloud")
    assert not_public(layout.work_images("x86_64")) == []


def test_bucket_connection_and_compose_root_come_from_the_site_settings(site, el9):
    layout = ComposeLayout.new(el9, Path(site["RELENG_COMPOSE_ROOT"]), TIMESTAMP)
    op = PullCloudImagesOperator(task_id="pull_cloud_images", arch="aarch64", image_type="Vagrant", release="el9",
                                compose=layout.compose_id)
    result = op.execute({})
    assert result["files"] == [f"Rocky-9-Vagrant-{v}-9.7-20250101.1.aarch64.box" for v in ("Libvirt", "Vbox", "VMware")]
    assert all((layout.work_images("aarch64") / name).is_file() for name in result["files"])


def test_build_10_is_newer_than_build_2(s3, el9, layout):
    later_epoch_older_build = upload(s3, el9, "EC2", "Base", "aarch64", "20250102", 2, 1735900000, "qcow2", b"two")
    upload(s3, el9, "EC2", "Base", "aarch64", "20250102", 10, 1735800000, "qcow2", b"ten")
    result = pull(layout, "aarch64", "EC2")
    assert result["files"][0] == "Rocky-9-EC2-Base-9.7-20250102.10.aarch64.qcow2"
    assert (layout.work_images("aarch64") / result["files"][0]).read_bytes() == b"ten"
    assert later_epoch_older_build.rsplit("/", 1)[1] not in result["files"]


def test_rerun_keeps_verified_files_and_drops_superseded_builds(s3, el9, layout):
    first = pull(layout, "x86_64", "OCP")
    out = layout.work_images("x86_64")
    old = out / first["files"][0]
    inode = old.stat().st_ino
    assert pull(layout, "x86_64", "OCP") == first
    assert old.stat().st_ino == inode  # verified in place, not downloaded again
    upload(s3, el9, "OCP", "Base", "x86_64", "20250201", 0, 1738400000, "qcow2", b"newer OCP image")
    newer = pull(layout, "x86_64", "OCP")
    assert newer["files"] == ["Rocky-9-OCP-Base-9.7-20250201.0.x86_64.qcow2"]
    assert not old.exists() and not Path(f"{old}.CHECKSUM").exists()
    assert os.readlink(out / "Rocky-9-OCP-Base.latest.x86_64.qcow2") == newer["files"][0]
    assert sorted(p.name for p in out.iterdir()) == sorted([
        newer["files"][0], f"{newer['files'][0]}.CHECKSUM", "Rocky-9-OCP-Base.latest.x86_64.qcow2",
        "Rocky-9-OCP-Base.latest.x86_64.qcow2.CHECKSUM"])


def test_object_not_matching_its_checksum_fails_and_leaves_nothing(s3, el9, layout):
    key = upload(s3, el9, "WSL", "Base", "x86_64", "20250301", 0, 1740800000, "wsl", b"corrupt",
                 sha=hashlib.sha256(b"what was built").hexdigest())
    with pytest.raises(AirflowFailException, match=rf"s3 object {key} does not match its sha256 metadata"):
        pull(layout, "x86_64", "WSL")
    out = layout.work_images("x86_64")
    assert not out.exists() or not list(out.iterdir())
    assert not list(out.parent.rglob("*"))  # the partial download is gone too


def test_object_without_checksum_metadata_fails_closed(s3, el9, layout):
    upload(s3, el9, "Vagrant", "Vbox", "aarch64", "20250301", 0, 1740800000, "box", b"unverifiable", sha=None)
    with pytest.raises(AirflowFailException, match=r"has no 'sha256' metadata, so the download cannot be verified"):
        pull(layout, "aarch64", "Vagrant")


def test_missing_images_fail_with_what_is_missing(s3, el9, layout):
    s3.delete_object(Bucket=BUCKET, Key=s3keys.cloud_image_key(
        s3keys.cloud_image_name("Rocky", 9, "Container", "UBI", "9.7", stack.FIXTURE_IMAGE_DATE, 0, "aarch64"),
        "9.7", "aarch64", stack.FIXTURE_EPOCHS[0], "tar.xz"))
    s3.delete_object(Bucket=BUCKET, Key=s3keys.cloud_image_key(
        s3keys.cloud_image_name("Rocky", 9, "Container", "UBI", "9.7", stack.FIXTURE_IMAGE_DATE, 1, "aarch64"),
        "9.7", "aarch64", stack.FIXTURE_EPOCHS[1], "tar.xz"))
    with pytest.raises(AirflowFailException, match=r"no tar.xz upload of Container-UBI for aarch64 under "
                                                   r"s3://releng-cloud-test/buildimage-9.7-aarch64/.*failable"):
        pull(layout, "aarch64", "Container")
    assert not layout.work_images("aarch64").exists()  # nothing pulled when the deliverable is incomplete


def test_unknown_type_or_arch_is_refused(s3, layout):
    with pytest.raises(AirflowFailException, match="no cloud image type 'Nope'"):
        pull(layout, "x86_64", "Nope")
    with pytest.raises(AirflowFailException, match=r"cloud image OCP of el9 is not built for riscv64"):
        pull(layout, "riscv64", "OCP")
