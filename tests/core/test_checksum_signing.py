"""The per-arch CHECKSUM clear-signed in place with the release key: gpg --verify accepts it, sha256sum -c still
checks the files, a rerun keeps a good signature, and no gpg-agent is left running."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from releng.core.checksums import checksum, checksum_text, clearsigned_body, read_checksum_file
from releng.core.staging.signing import SigningError, clearsign_file, gpg_session
from tests.promotion.conftest import new_release_key
from tests.realtools import agent_running, check_signed_checksum


@pytest.fixture
def release_key(tmp_path):
    home = tmp_path / "gnupg"
    fpr = new_release_key(home)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=True)
    yield home, fpr
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


@pytest.fixture
def isos(tmp_path) -> Path:
    d = tmp_path / "isos"
    d.mkdir()
    for name in ("Rocky-9.7-x86_64-dvd.iso", "Rocky-9.7-x86_64-boot.iso"):
        (d / name).write_bytes(os.urandom(4096))
    return d


def test_clear_signed_checksum_verifies_with_gpg_and_sha256sum(isos, release_key):
    home, fpr = release_key
    entries = [checksum(p) for p in sorted(isos.iterdir())]
    body = checksum_text(entries)
    with gpg_session(home):
        assert clearsign_file(isos / "CHECKSUM", body, fpr, home) is True
    check_signed_checksum(isos, home, fpr)
    assert clearsigned_body((isos / "CHECKSUM").read_text()) == body
    assert read_checksum_file(isos / "CHECKSUM") == entries  # our own reader takes the signed file too
    assert oct((isos / "CHECKSUM").stat().st_mode & 0o777) == "0o644"
    assert not agent_running(home)  # the session stopped the agent gpg started
    assert [p.name for p in isos.iterdir() if p.name.startswith(".")] == []

    # a rerun with the same content keeps the file (and its signature) byte for byte
    before = (isos / "CHECKSUM").read_bytes()
    with gpg_session(home):
        assert clearsign_file(isos / "CHECKSUM", body, fpr, home) is False
    assert (isos / "CHECKSUM").read_bytes() == before
    # new content is signed again
    (isos / "Rocky-9.7-x86_64-minimal.iso").write_bytes(b"minimal")
    with gpg_session(home):
        assert clearsign_file(isos / "CHECKSUM", checksum_text([checksum(p) for p in sorted(isos.glob("*.iso"))]),
                              fpr, home) is True
    check_signed_checksum(isos, home, fpr)
    assert not agent_running(home)


def test_a_corrupt_file_fails_sha256sum_and_a_changed_checksum_fails_gpg(isos, release_key):
    home, fpr = release_key
    with gpg_session(home):
        clearsign_file(isos / "CHECKSUM", checksum_text([checksum(p) for p in sorted(isos.iterdir())]), fpr, home)
    (isos / "Rocky-9.7-x86_64-boot.iso").write_bytes(b"changed")
    check = subprocess.run(["sha256sum", "-c", "--ignore-missing", "CHECKSUM"], cwd=isos, capture_output=True,
                           text=True)
    assert check.returncode != 0 and "Rocky-9.7-x86_64-boot.iso: FAILED" in check.stdout
    text = (isos / "CHECKSUM").read_text()
    line = "SHA256 (Rocky-9.7-x86_64-boot.iso) = "
    (isos / "CHECKSUM").write_text(text.replace(line, line + "0"))
    verify = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--verify", str(isos / "CHECKSUM")],
                            capture_output=True, text=True)
    assert verify.returncode != 0 and "BAD signature" in verify.stderr
    with gpg_session(home):  # a tampered file is signed again from the real content
        assert clearsign_file(isos / "CHECKSUM", checksum_text([checksum(p) for p in sorted(isos.glob("*.iso"))]),
                              fpr, home) is True
    check_signed_checksum(isos, home, fpr)


def test_a_key_not_in_the_keyring_is_named_with_what_to_do(isos, release_key):
    home, _fpr = release_key
    with gpg_session(home), pytest.raises(SigningError) as err:
        clearsign_file(isos / "CHECKSUM", "x\n", "0123456789ABCDEF0123456789ABCDEF01234567", home)
    assert "RELENG_REPO_SIGNING_KEY=0123456789ABCDEF0123456789ABCDEF01234567 has no secret key in" in str(err.value)
    assert "import the key there, or unset RELENG_REPO_SIGNING_KEY" in str(err.value)
    assert not (isos / "CHECKSUM").exists()
    assert not agent_running(home)


def test_an_agent_already_running_is_left_running(release_key):
    home, _fpr = release_key
    subprocess.run(["gpg-connect-agent", "--homedir", str(home), "/bye"], check=True, capture_output=True)
    assert agent_running(home)
    with gpg_session(home):
        pass
    assert agent_running(home)
