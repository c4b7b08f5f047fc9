"""dev/rpmfile.py writes packages the real tools accept: rpm -K (digests and the signature with the imported
key), rpm -qp, rpm2cpio, createrepo_c; and a tampered package fails rpm -K."""

from __future__ import annotations

import gzip
import os
import subprocess

import pytest

from dev.buildsystem import _gen_key
from dev.rpmfile import SENSE_EQUAL, RpmFile, RpmSpec, SigningKey, build_rpm
from releng.core.gpg import agent_session


@pytest.fixture
def key(tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    with agent_session(home):
        fpr = _gen_key(home)
        env = {**os.environ, "GNUPGHOME": str(home)}
        secret = subprocess.run(["gpg", "--batch", "--export-secret-keys", fpr], env=env, capture_output=True,
                                check=True).stdout
        public = subprocess.run(["gpg", "--batch", "--armor", "--export", fpr], env=env, capture_output=True,
                                check=True).stdout
    (tmp_path / "key.asc").write_bytes(public)
    return SigningKey(secret), tmp_path / "key.asc"


def _rpm(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["rpm", *argv], capture_output=True, text=True)


def test_written_packages_pass_the_real_tools(tmp_path, key):
    signing, public = key
    spec = RpmSpec("scale-demo", "1.2", "3.el9", "x86_64", "Demo", "A demo package.",
                   [RpmFile("/usr/share/scale-demo", directory=True), RpmFile("/usr/share/scale-demo/a.txt", b"a\n"),
                    RpmFile("/usr/bin/scale-demo", b"#!demo\n")],
                   requires=[("libdemo", SENSE_EQUAL, "1.0")],
                   changelog=[(1735689600, "A <a@b.invalid> - 1.2-3", "- x")])
    source = RpmSpec("scale-demo", "1.2", "3.el9", "src", "Demo", "Its source.", [RpmFile("scale-demo.spec", b"x")])
    repo = tmp_path / "repo"
    repo.mkdir()
    for s in (spec, source):
        (repo / s.filename).write_bytes(build_rpm(s, signing))
    binary = repo / spec.filename
    db = tmp_path / "rpmdb"
    assert _rpm("--dbpath", str(db), "--initdb").returncode == 0
    assert _rpm("--dbpath", str(db), "--import", str(public)).returncode == 0

    checked = _rpm("--dbpath", str(db), "-Kv", str(binary), str(repo / source.filename))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("Signature, key ID") == 2 and "NOT OK" not in checked.stdout
    assert "Payload SHA256 digest: OK" in checked.stdout
    query = _rpm("-qp", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH} %{SOURCERPM}\n", "--requires", str(binary))
    assert "scale-demo-1.2-3.el9.x86_64 scale-demo-1.2-3.el9.src.rpm" in query.stdout
    assert "libdemo = 1.0" in query.stdout
    payload = subprocess.run(["rpm2cpio", str(binary)], capture_output=True, check=True).stdout
    listing = subprocess.run(["cpio", "-t"], input=payload, capture_output=True)
    assert listing.stdout.decode().split() == ["./usr/bin/scale-demo", "./usr/share/scale-demo",
                                               "./usr/share/scale-demo/a.txt"]
    subprocess.run(["createrepo_c", "--quiet", str(repo)], check=True)
    filelists = gzip.decompress(next((repo / "repodata").glob("*-filelists.xml.gz")).read_bytes()).decode()
    assert '<file type="dir">/usr/share/scale-demo</file>' in filelists

    data = bytearray(binary.read_bytes())
    data[-200] ^= 0xFF  # a flipped payload byte
    binary.write_bytes(bytes(data))
    assert _rpm("--dbpath", str(db), "-K", str(binary)).returncode != 0
