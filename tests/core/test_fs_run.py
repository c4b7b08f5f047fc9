"""The file-system primitives and the tool runner every step uses."""

import os
import stat

import pytest

from releng.core import fs, run


def test_atomic_write_is_public_and_complete(tmp_path):
    old = os.umask(0o077)
    try:
        p = fs.atomic_write(tmp_path / "a", "hello")
    finally:
        os.umask(old)
    assert p.read_text() == "hello" and stat.S_IMODE(p.stat().st_mode) == 0o644
    assert [x.name for x in tmp_path.iterdir()] == ["a"]


def test_swap_symlink(tmp_path):
    link = tmp_path / "latest"
    assert fs.swap_symlink("a", link) and os.readlink(link) == "a"
    assert not fs.swap_symlink("a", link)
    assert fs.swap_symlink("b", link) and os.readlink(link) == "b"


def test_human_bytes():
    assert [fs.human_bytes(n) for n in (5, 2048, 3 * 1024**3, 5 * 1024**4)] == ["5 B", "2.0 KiB", "3.0 GiB", "5.0 TiB"]


def test_run_errors_name_the_tool():
    assert run.run(["true"]).returncode == 0
    with pytest.raises(run.ToolError, match="sh exited 3"):
        run.run(["sh", "-c", "echo boom >&2; exit 3"])
    with pytest.raises(run.ToolError, match="could not start"):
        run.run(["no-such-tool-x"])


def test_stream_yields_lines_and_fails_with_the_tail():
    with run.stream(["sh", "-c", "echo a; echo b"]) as lines:
        assert list(lines) == ["a", "b"]
    with pytest.raises(run.ToolError, match=r"(?s)exited 2.*oops"):
        with run.stream(["sh", "-c", "echo oops; exit 2"]) as lines:
            list(lines)
