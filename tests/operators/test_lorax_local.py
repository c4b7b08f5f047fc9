"""The local lorax backend and the build script, for real: the stand-in, tar, xorriso and SeaweedFS."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException

from dev import stack
from releng.core import lorax, s3keys
from releng.core.layout import ComposeLayout
from releng.core.settings import settings
from releng.operators.build_lorax import LoraxLocalOperator, lorax_local_kwargs, lorax_task

BUCKET = "releng-lorax-local"
SUMMARY = {"release": "el9", "compose_id": "Rocky-9.7-20250102.030405", "compose_root": "/srv/compose", "rc": False,
           "hashed": False}
FAKE_LORAX = """#!/bin/bash
printf '%s\\n' "$@" >"$RECORD"
for arg; do case $arg in --logfile=*) log=${arg#--logfile=};; esac; done
echo "Error: fake lorax: package dependency check failed" | tee -a "$log" >&2
exit 7
"""


@pytest.fixture
def s3(s3_server, monkeypatch):
    url, datadir = s3_server
    client = stack.s3_client(url, datadir)
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("AIRFLOW_CONN_RELENG_S3", stack.s3_connection(url, datadir))
    monkeypatch.setenv("RELENG_S3_BUCKET", BUCKET)
    monkeypatch.setenv("RELENG_LORAX_BACKEND", "local")
    settings.cache_clear()
    yield client, url, datadir
    settings.cache_clear()


def s3_env(url: str, datadir: Path) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": stack.S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": stack.s3_secret(datadir),
            "AWS_ENDPOINT_URL": url, "LORAX_PYTHON": sys.executable}


def objects(client, prefix: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


@pytest.fixture(autouse=True)
def _test_site(monkeypatch):
    """The stand-in builds the boot trees here, as on any test site."""
    monkeypatch.setenv("RELENG_TEST_SITE", "true")


def test_the_stand_in_is_refused_unless_the_site_is_a_test_site(s3, tmp_path, monkeypatch):
    """Issue 10 finding 5: nothing stopped a production worker without lorax from using the stand-in."""
    client, _, _ = s3
    monkeypatch.setenv("RELENG_TEST_SITE", "false")
    kwargs = lorax_local_kwargs({"arch": "x86_64", "summary": SUMMARY})
    op = LoraxLocalOperator(task_id="build_lorax", aws_conn_id="releng_s3", work_root=str(tmp_path), **kwargs)
    with pytest.raises(AirflowException, match=r"build-lorax\.sh failed for x86_64"):
        op.execute({})
    assert objects(client, kwargs["key"]) == []
    script_job = lorax.LoraxJob(kwargs["arch"], kwargs["revision"], tuple(kwargs["options"]), kwargs["bucket"],
                                kwargs["key"], ())
    env = {k: v for k, v in os.environ.items() if k != "LORAX_ALLOW_STANDIN"} | script_job.env(str(tmp_path / "w"))
    done = subprocess.run(["bash", str(lorax.BUILD_SCRIPT), *kwargs["options"]], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 1 and "lorax is not installed here" in done.stderr
    assert "only on a test site (RELENG_TEST_SITE=true)" in done.stderr and "STAND-IN" not in done.stderr


def job(el9, arch: str = "x86_64", epoch: int = 1735787045) -> lorax.LoraxJob:
    layout = ComposeLayout(el9, Path("/srv/compose"), SUMMARY["compose_id"])
    return lorax.lorax_job(layout, arch, rc=False, hashed=False, peridot_url="http://127.0.0.1:9/v1/projects",
                           bucket=BUCKET, epoch=epoch)


def test_local_operator_builds_uploads_and_reports(s3, tmp_path, capsys):
    client, _, _ = s3
    kwargs = lorax_local_kwargs({"arch": "x86_64", "summary": SUMMARY})
    op = LoraxLocalOperator(task_id="build_lorax", aws_conn_id="releng_s3", work_root=str(tmp_path), **kwargs)
    result = op.execute({})

    key = s3keys.lorax_key(9, "9.7", "x86_64", lorax.compose_epoch(SUMMARY["compose_id"]))
    assert result["key"] == key and result["arch"] == "x86_64"
    head = client.head_object(Bucket=BUCKET, Key=key)
    assert head["Metadata"][s3keys.CHECKSUM_METADATA] == result["sha256"]
    assert head["ContentLength"] == result["size"]
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result["sha256"]
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = set(tar.getnames())
        manifest = tar.extractfile("lorax/images/boot.iso.manifest").read().decode().splitlines()
        treeinfo = tar.extractfile("lorax/.treeinfo").read().decode()
    assert {"lorax/.treeinfo", "lorax/images/boot.iso", "lorax/images/boot.iso.manifest",
            "lorax-x86_64.log"} <= names
    assert "[images-x86_64]" in treeinfo and "lorax-standin" in treeinfo  # the stand-in marks its output
    assert manifest == sorted(manifest) and "/isolinux/isolinux.bin" in manifest and "/" not in manifest
    assert "/images/efiboot.img" in manifest and not any(p.startswith("'") for p in manifest)
    assert list(tmp_path.iterdir()) == []  # the scratch dir is gone
    assert "USING THE LORAX STAND-IN" in capsys.readouterr().out  # the task log says loudly it is not lorax


def test_lorax_task_uses_the_local_operator(s3):
    from airflow.sdk import DAG, task

    with DAG("lorax_local_wiring", schedule=None) as dag:
        @task
        def plan() -> list[dict]:
            return [{"arch": "x86_64", "summary": SUMMARY}]

        lorax_task(plan())
    mapped = dag.get_task("build_lorax")
    assert mapped.operator_class is LoraxLocalOperator
    assert mapped.partial_kwargs["aws_conn_id"] == "releng_s3"
    op = mapped.unmap(lorax_local_kwargs({"arch": "x86_64", "summary": SUMMARY}))
    assert op.render_template(op.map_index_template, {"task": op}) == "x86_64"


@pytest.fixture
def fake_lorax(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "lorax").write_text(FAKE_LORAX)
    (bindir / "lorax").chmod(0o755)
    record = tmp_path / "argv"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RECORD", str(record))
    return record


def test_script_passes_lorax_exactly_the_options_and_fails_with_lorax(el9, s3, fake_lorax, tmp_path):
    client, url, datadir = s3
    j = job(el9, epoch=1735787046)
    work = tmp_path / "work"
    done = subprocess.run(["bash", str(lorax.BUILD_SCRIPT), *j.options], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **j.env(str(work)), **s3_env(url, datadir)})

    assert fake_lorax.read_text().splitlines() == [*j.options, f"--logfile={work}/lorax-x86_64.log", f"{work}/lorax"]
    assert done.returncode == 1
    assert "fake lorax: package dependency check failed" in done.stderr  # the log tail is shown
    assert "lorax failed for x86_64 with exit status 7; nothing was uploaded" in done.stderr
    assert "STAND-IN" not in done.stderr  # a real lorax on PATH wins
    assert done.stdout == "" and objects(client, j.key) == []


def test_local_operator_fails_when_lorax_fails(el9, s3, fake_lorax, tmp_path):
    client, _, _ = s3
    j = job(el9, epoch=1735787047)
    op = LoraxLocalOperator(task_id="build_lorax", arch="x86_64", revision="9.7", options=list(j.options),
                            bucket=BUCKET, key=j.key, work_root=str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    with pytest.raises(AirflowException, match=r"build-lorax\.sh failed for x86_64 with exit status 1"):
        op.execute({})
    assert objects(client, j.key) == [] and list((tmp_path / "w").iterdir()) == []


@pytest.mark.parametrize("change, message", [
    ({"LORAX_S3_KEY": ""}, "LORAX_S3_KEY is not set"),
    ({"LORAX_S3_KEY": "buildiso-9-amd64/1/lorax-9.6-x86_64.tar.gz"}, "does not end with /lorax-9.7-x86_64.tar.gz"),
    ({"LORAX_ARCH": "x86 64"}, "is not an RPM arch name"),
    ({"LORAX_ARCH": "aarch64", "LORAX_S3_KEY": "buildiso-9-arm64/1/lorax-9.7-aarch64.tar.gz"},
     "the lorax options say --buildarch='x86_64' but LORAX_ARCH='aarch64'"),
])
def test_script_refuses_bad_inputs(el9, tmp_path, change, message):
    j = job(el9)
    done = subprocess.run(["bash", str(lorax.BUILD_SCRIPT), *j.options], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **j.env(str(tmp_path / "w")), **change})
    assert done.returncode == 1 and message in done.stderr
    assert not (tmp_path / "w").exists()


def test_real_lorax_refuses_a_foreign_arch(el9, fake_lorax, tmp_path):
    foreign = "aarch64" if os.uname().machine != "aarch64" else "x86_64"
    j = job(el9, arch=foreign)
    done = subprocess.run(["bash", str(lorax.BUILD_SCRIPT), *j.options], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **j.env(str(tmp_path / "w"))})
    assert done.returncode == 1
    assert f"lorax builds only this machine's arch ({os.uname().machine}), not {foreign}" in done.stderr
    assert not fake_lorax.exists()  # lorax never ran
