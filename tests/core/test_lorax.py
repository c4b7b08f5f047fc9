"""releng.core.lorax: lorax's options, the per-arch job and pod kwargs, the script texts and results."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import jinja2
import pytest

from releng.core import disc, lorax, s3keys
from releng.core.layout import ComposeLayout
from releng.core.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
PERIDOT = "https://yumrepofs.example.org/v1/projects"


@pytest.fixture
def layout(el9, tmp_path):
    return ComposeLayout.new(el9, tmp_path, "20250101.000000")


def test_lorax_options_are_empanadas_options(el9, layout):
    sources = lorax.source_urls(el9, "x86_64", PERIDOT, hashed=False)
    assert sources == [f"{PERIDOT}/{el9.project_id}/repo/BaseOS/x86_64",
                       f"{PERIDOT}/{el9.project_id}/repo/AppStream/x86_64"]
    assert lorax.lorax_options(el9, "x86_64", volid=layout.volid("x86_64", False), sources=sources, rc=False) == [
        "--product=Rocky Linux", "--version=9.7", "--release=9.7", "--isfinal",
        f"--source={sources[0]}", f"--source={sources[1]}", "--squashfs-only",
        "--bugurl=https://bugs.rockylinux.org", "--variant=BaseOS", "--nomacboot", "--buildarch=x86_64",
        "--volid=Rocky-9-7-x86_64-dvd", "--rootfs-size=4"]


def test_rc_and_hashed_job(el9, layout):
    job = lorax.lorax_job(layout, "aarch64", rc=True, hashed=True, peridot_url=PERIDOT, bucket="resf-empanadas",
                          epoch=1735689600)
    assert "--isfinal" not in job.options and "--volid=Rocky-9-7-RC1-aarch64-dvd" in job.options
    assert f"--source={PERIDOT}/{el9.project_id}/repo/hashed-BaseOS/aarch64" in job.options
    assert job.key == "buildiso-9-arm64/1735689600/lorax-9.7-aarch64.tar.gz"
    assert job.env("/w") == {"LORAX_ARCH": "aarch64", "LORAX_REVISION": "9.7", "LORAX_S3_BUCKET": "resf-empanadas",
                             "LORAX_S3_KEY": job.key, "LORAX_WORK_DIR": "/w", "LORAX_REMOVES": ""}


def test_el8_removes_and_no_squashfs_only(tmp_path):
    el8 = load_profile(ROOT / "config" / "releases" / "el8.yaml")
    job = lorax.lorax_job(ComposeLayout.new(el8, tmp_path, "20250101.000000"), "x86_64", rc=False, hashed=False,
                          peridot_url=PERIDOT, bucket="b12", epoch=1)
    assert job.env("/w")["LORAX_REMOVES"] == "libreport-rhel-anaconda-bugzilla"
    assert "--squashfs-only" not in job.options


def test_unknown_arch_is_refused(layout):
    with pytest.raises(lorax.LoraxError, match="arch 'i686' is not an arch of el9"):
        lorax.lorax_job(layout, "i686", rc=False, hashed=False, peridot_url=PERIDOT, bucket="b12", epoch=1)


def test_compose_epoch_is_utc_and_shared_by_arches(layout):
    assert lorax.compose_epoch("Rocky-9.7-20250101.000000") == 1735689600
    assert lorax.compose_epoch("Rocky-9.7-20250101.000130") == 1735689690
    with pytest.raises(lorax.LoraxError, match="does not have the form"):
        lorax.compose_epoch("Rocky-9.7-latest")
    keys = {a: lorax.lorax_job(layout, a, rc=False, hashed=False, peridot_url=PERIDOT, bucket="b12",
                               epoch=lorax.compose_epoch(layout.compose_id)).key for a in ("x86_64", "s390x")}
    assert {s3keys.epoch_of(k) for k in keys.values()} == {1735689600}


@pytest.mark.parametrize("arch, kube", [("x86_64", "amd64"), ("aarch64", "arm64"), ("ppc64le", "ppc64le"),
                                        ("s390x", "s390x")])
def test_pod_kwargs_per_arch(layout, arch, kube):
    job = lorax.lorax_job(layout, arch, rc=False, hashed=False, peridot_url=PERIDOT, bucket="b12", epoch=1735689600)
    files = lorax.script_files()
    kwargs = lorax.pod_kwargs(job, 9, files)
    assert kwargs["node_selector"] == {"kubernetes.io/arch": kube}
    assert kwargs["labels"] == {"compose-arch": arch}
    assert kwargs["name"] == f"buildiso-9-{kube}"
    assert kwargs["arguments"] == list(job.options)
    assert kwargs["env_vars"]["LORAX_S3_KEY"] == f"buildiso-9-{kube}/1735689600/lorax-9.7-{arch}.tar.gz"
    assert kwargs["env_vars"]["LORAX_WORK_DIR"] == lorax.POD_WORK_DIR
    assert kwargs["env_vars"]["LORAX_BUILD_SH"] + "\n" == (ROOT / "include/lorax/build-lorax.sh").read_text()
    assert kwargs["env_vars"]["LORAX_S3_UPLOAD_PY"] + "\n" == (ROOT / "include/lorax/s3_upload.py").read_text()
    json.dumps(kwargs)  # plain values: they travel through XCom-like mapping


def test_script_texts_pass_through_jinja_unchanged():
    for keep in (True, False):  # DAG templates keep the final newline; a bare Jinja env drops it
        env = jinja2.Environment(keep_trailing_newline=keep)
        for name, text in lorax.script_files().items():
            assert env.from_string(text).render(task={}, params={}) == text, name
    assert env.from_string(lorax.POD_BOOTSTRAP).render() == lorax.POD_BOOTSTRAP


def test_script_with_jinja_markers_is_refused(tmp_path, monkeypatch):
    for name in lorax.SCRIPT_ENV:
        (tmp_path / name).write_text("echo ${#array[@]}\n")
    monkeypatch.setattr(lorax, "INCLUDE_DIR", tmp_path)
    with pytest.raises(lorax.LoraxError, match=r"build-lorax.sh contains '\{#'"):
        lorax.script_files()


def test_pod_bootstrap_runs_the_script_from_its_environment(tmp_path):
    """The pod's command writes both files from the env and runs the script with the options."""
    script = 'echo "args: $*"; od -c "$(dirname "$0")/s3_upload.py" | head -1'
    done = subprocess.run([*lorax.POD_COMMAND, "--one", "--two=2 words"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "LORAX_BUILD_SH": script, "LORAX_S3_UPLOAD_PY": "print(1)",
                               "TMPDIR": str(tmp_path)},  # the bootstrap's mktemp -d: a pod's own /tmp
                          check=True, timeout=10)
    assert done.stdout.split() == ["args:", "--one", "--two=2", "words", "0000000", "p", "r", "i", "n", "t", "(",
                                   "1", ")", "\\n"]


def test_uploader_uses_the_checksum_metadata_name():
    tree = ast.parse((ROOT / "include/lorax/s3_upload.py").read_text())
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    assert consts["CHECKSUM_METADATA"] == s3keys.CHECKSUM_METADATA


def test_parse_result(layout):
    job = lorax.lorax_job(layout, "x86_64", rc=False, hashed=False, peridot_url=PERIDOT, bucket="b12", epoch=1)
    good = {"arch": "x86_64", "key": job.key, "sha256": "a" * 64, "size": 10}
    assert lorax.parse_result(json.dumps(good), job) == good
    for bad, message in [("s3_upload: done", "not JSON"), (json.dumps({**good, "extra": 1}), "expected the keys"),
                         (json.dumps({**good, "arch": "aarch64"}), "for arch 'aarch64', not 'x86_64'"),
                         (json.dumps({**good, "key": "other"}), "is not the job's key"),
                         (json.dumps({**good, "sha256": "xyz"}), "not a SHA-256"),
                         (json.dumps({**good, "size": 0}), "not a positive number")]:
        with pytest.raises(lorax.LoraxError, match=message):
            lorax.parse_result(bad, job)


def test_installer_image_and_volid_of_a_non_iso(el9, tmp_path):
    assert lorax.installer_image(el9).name == "BaseOS" and lorax.installer_image(el9).repos == ("BaseOS", "AppStream")
    junk = tmp_path / "boot.iso"
    junk.write_bytes(b"\0" * 40000)
    with pytest.raises(disc.NotAnIsoError, match="no ISO 9660 primary volume descriptor"):
        disc.read_volid(junk)
