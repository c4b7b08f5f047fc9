"""Primary as the change report reads it: rpm's version order, package changes by NEVRA, NEVRAs from primary in
every compression createrepo_c writes, and unreadable metadata named."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from releng.core.repo.primary import Nevra, package_changes, read_packages, rpmvercmp
from releng.core.repo.repomd import RepoError


def _zstd(data: bytes) -> bytes:
    if not shutil.which("zstd"):
        pytest.skip("zstd command not installed")
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("a,b,expected", [
    ("1.0", "1.0", 0), ("1.0", "1.0.1", -1), ("1.10", "1.9", 1), ("1.0~rc1", "1.0", -1), ("1.0^git1", "1.0", 1),
    ("1.0~rc1", "1.0~rc2", -1), ("1.0a", "1.0.1", -1), ("2.0.1a", "2.0.1", 1), ("1.001", "1.1", 0),
    ("5.1-1.el9", "5.1-1.el9_2", -1), ("abc", "abd", -1), ("1.0^", "1.0~", 1), ("el9", "el10", -1),
])
def test_rpmvercmp(a, b, expected):
    assert rpmvercmp(a, b) == expected
    assert rpmvercmp(b, a) == -expected


def _n(name: str, evr: str, arch: str = "x86_64") -> Nevra:
    epoch, _, vr = evr.rpartition(":")
    version, release = vr.split("-")
    return Nevra(name, arch, int(epoch or 0), version, release)


def test_package_changes_by_nevra():
    before = {_n("bash", "5.1-1"), _n("bash", "5.1-2"), _n("gone", "1-1"), _n("kernel", "1:5.14-1"),
              _n("same", "1-1", "noarch")}
    after = {_n("bash", "5.1-1"), _n("bash", "5.1-2"), _n("bash", "5.2-1"), _n("kernel", "1:5.14-2"),
             _n("same", "1-1", "noarch"), _n("new", "0.1-1", "noarch"), _n("same", "1-1", "i686")}
    diff = package_changes(before, after)
    assert [str(n) for n in diff.added] == ["new-0.1-1.noarch", "same-1-1.i686"]
    assert [(str(a), str(b)) for a, b in diff.updated] == [("bash-5.1-2.x86_64", "bash-5.2-1.x86_64"),
                                                           ("kernel-1:5.14-1.x86_64", "kernel-1:5.14-2.x86_64")]
    assert [str(n) for n in diff.removed] == ["gone-1-1.x86_64", "kernel-1:5.14-1.x86_64"]


PRIMARY = """<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="2">
<package type="rpm"><name>bash</name><arch>x86_64</arch><version epoch="0" ver="5.1" rel="1.el9"/>
  <checksum type="sha256">0</checksum><size package="1"/><location href="Packages/b/bash.rpm"/></package>
<package type="rpm"><name>kernel</name><arch>x86_64</arch><version epoch="1" ver="5.14" rel="2.el9"/>
  <checksum type="sha256">0</checksum><size package="1"/><location href="Packages/k/kernel.rpm"/></package>
</metadata>
"""


def _repo(tmp_path: Path, suffix: str) -> Path:
    repo = tmp_path / suffix.strip(".") / "repo"
    (repo / "repodata").mkdir(parents=True)
    name = f"abc-primary.xml{suffix}"
    data = PRIMARY.encode()
    blob = {".gz": gzip.compress, ".xz": lzma.compress, ".zst": _zstd, "": bytes}[suffix](data)
    (repo / "repodata" / name).write_bytes(blob)
    (repo / "repodata" / "repomd.xml").write_text(
        '<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary">'
        f'<checksum type="sha256">x</checksum><location href="repodata/{name}"/></data></repomd>')
    return repo


@pytest.mark.parametrize("suffix", [".gz", ".xz", ".zst", ""])
def test_read_packages_streams_primary(tmp_path, suffix):
    assert {str(n) for n in read_packages(_repo(tmp_path, suffix))} == {
        "bash-5.1-1.el9.x86_64", "kernel-1:5.14-2.el9.x86_64"}


def test_read_packages_from_real_createrepo_output(fixture_buildsystem, el9):
    repo = fixture_buildsystem.repo_dir(el9.project_id, "AppStream", "x86_64", hashed=True)
    names = {f"{n}.rpm" for n in map(str, read_packages(repo))}
    assert names == set(fixture_buildsystem.profiles["el9"]["repos"]["AppStream"]["x86_64"])


def test_unreadable_metadata_is_named(tmp_path):
    repo = _repo(tmp_path, ".gz")
    (repo / "repodata" / "abc-primary.xml.gz").write_bytes(b"not gzip")
    with pytest.raises(RepoError, match=r"abc-primary\.xml\.gz: cannot read primary metadata"):
        read_packages(repo)
    (repo / "repodata" / "repomd.xml").write_text(
        '<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary"><checksum type="sha256">x'
        '</checksum><location href="repodata/p.xml.zck"/></data></repomd>')
    with pytest.raises(RepoError, match="zchunk metadata cannot be read here"):
        read_packages(repo)
    (repo / "repodata" / "repomd.xml").write_text(
        '<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary"><checksum type="sha256">x'
        '</checksum><location href="../../etc/passwd"/></data></repomd>')
    with pytest.raises(RepoError, match="not a path inside the tree"):
        read_packages(repo)
