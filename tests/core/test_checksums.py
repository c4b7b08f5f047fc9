"""Checksum files: BSD format that sha256sum -c accepts, sorted, atomic."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from releng.core.checksums import checksum, parse_checksum_file, write_checksum_file


def test_blocks_verify_with_sha256sum(tmp_path):
    (tmp_path / "b.iso").write_bytes(b"b" * 5000)
    (tmp_path / "a.iso").write_bytes(b"a" * 10)
    (tmp_path / "latest.iso").symlink_to("a.iso")
    entries = [checksum(tmp_path / n) for n in ("b.iso", "latest.iso", "a.iso")]
    out = write_checksum_file(tmp_path / "CHECKSUM", entries)
    text = out.read_text()
    assert text.splitlines()[:2] == ["# a.iso: 10 bytes", f"SHA256 (a.iso) = {hashlib.sha256(b'a' * 10).hexdigest()}"]
    assert [name for _, name, _ in parse_checksum_file(text)] == ["a.iso", "b.iso", "latest.iso"]
    result = subprocess.run(["sha256sum", "-c", "--strict", "CHECKSUM"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / "b.iso").write_bytes(b"c" * 5000)
    assert subprocess.run(["sha256sum", "-c", "CHECKSUM"], cwd=tmp_path, capture_output=True).returncode == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_sha512_and_parse_errors(tmp_path):
    (tmp_path / "x").write_bytes(b"x")
    assert checksum(tmp_path / "x", "sha512").block().splitlines()[1].startswith("SHA512 (x) = ")
    with pytest.raises(ValueError, match="line 2 is not a BSD checksum line"):
        parse_checksum_file("# x: 1 bytes\nx  abcdef\n")
