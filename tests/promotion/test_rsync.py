"""The rsync flag sets, argv builders and the itemized-output parser, against real rsync runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from releng.core import rsync


def test_dry_run_compares_the_whole_tree_with_deletions_and_changes_nothing():
    argv = rsync.dry_run_argv(Path("/s/9.7-RC1"), Path("/p/9.7"))
    assert argv[0] == "rsync" and argv[-2:] == ["/s/9.7-RC1/", "/p/9.7/"]
    assert {"--recursive", "--delete", "--dry-run", "--stats", "--hard-links", "--modify-window=-1"} <= set(argv)
    assert rsync.OUT_FORMAT in argv


@pytest.mark.parametrize("phase", ["payload", "metadata"])
def test_phases_copy_only_the_listed_paths_and_never_delete(phase):
    argv = rsync.phase_argv(phase, Path("/s/x"), Path("/p/x"), Path("/tmp/list"), bwlimit_kbps=100)
    assert not [a for a in argv if a.startswith("--delete") or a in ("--recursive", "-r", "-a")]
    assert "--files-from=/tmp/list" in argv and "--from0" in argv and "--bwlimit=100" in argv
    assert ("--delay-updates" in argv) == (phase == "metadata")
    assert "--hard-links" in argv and "--devices" not in argv and "-D" not in argv
    assert "--owner" not in argv and "--group" not in argv


def test_deletions_have_no_rsync_flag_set():
    with pytest.raises(rsync.RsyncError, match="deletions do not use rsync"):
        rsync.phase_argv("deletions", Path("/s/x"), Path("/p/x"), Path("/l"))


@pytest.mark.parametrize("src,dst", [(Path("/"), Path("/p/9.7")), (Path(""), Path("/p/9.7")),
                                     (Path("relative"), Path("/p/9.7")), (Path("/s/9.7"), Path("/"))])
def test_refuses_root_empty_or_relative_trees(src, dst):
    with pytest.raises(rsync.RsyncError, match="must be an absolute directory other than /"):
        rsync.dry_run_argv(src, dst)
    with pytest.raises(rsync.RsyncError, match="must be an absolute directory other than /"):
        rsync.phase_argv("payload", src, dst, Path("/l"))


def test_parse_change_lines():
    c = rsync.parse_change(b">f+++++++++\t123\tBaseOS/x86_64/os/Packages/f/foo.rpm\n")
    assert (c.code, c.path, c.size, c.is_new, c.transfers_data, c.file_type) == (
        ">f+++++++++", "BaseOS/x86_64/os/Packages/f/foo.rpm", 123, True, True, "f")
    d = rsync.parse_change(b"*deleting  \t0\told/dir/\n")
    assert d.is_delete and d.path == "old/dir" and d.file_type == "?"
    top = rsync.parse_change(b".d..t......\t4096\t./\n")
    assert top.path == "." and top.is_dir and not top.is_new
    link = rsync.parse_change(b"cL+++++++++\t5\tisos/latest.iso -> a -> b.iso\n")
    assert link.path == "isos/latest.iso" and link.link == "a -> b.iso"
    hard = rsync.parse_change(b"hf+++++++++\t6\tks/Packages/a.rpm => os/Packages/a.rpm\n")
    assert hard.path == "ks/Packages/a.rpm" and hard.link == "os/Packages/a.rpm" and not hard.transfers_data
    escaped = rsync.parse_change(b">f+++++++++\t1\tnew\\#012line\\#303\\#251\n")
    assert escaped.path == "new\nline\u00e9"
    for noise in (b"created directory /p/9.7\n", b"Number of files: 10 (reg: 5, dir: 4)\n", b"\n",
                  b"sent 293 bytes  received 97 bytes  780.00 bytes/sec\n"):
        assert rsync.parse_change(noise) is None


def test_parse_stats():
    stats = rsync.parse_stats(["Number of files: 1,234,567 (reg: 1,000,000, dir: 200,000, link: 34,567)",
                               "Number of created files: 6 (reg: 4, dir: 1, link: 1)",
                               "Number of deleted files: 3 (reg: 2, dir: 1)",
                               "Number of regular files transferred: 3"])
    assert stats.files == {"reg": 1_000_000, "dir": 200_000, "link": 34_567, "total": 1_234_567}
    assert stats.non_dirs("files") == 1_034_567 and stats.non_dirs("created") == 5
    assert stats.non_dirs("deleted") == 2 and stats.regular_transferred == 3


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a" / "Packages").mkdir(parents=True)
    (dst / "a" / "Packages").mkdir(parents=True)
    (dst / "old").mkdir()
    (src / "a" / "Packages" / "x.rpm").write_bytes(b"x" * 300)
    (src / "a" / "Packages" / "y.rpm").write_bytes(b"y" * 40)
    os.link(src / "a" / "Packages" / "y.rpm", src / "a" / "Packages" / "y => z.rpm")
    (src / "a" / "latest -> x").symlink_to("Packages/x.rpm")
    (src / "a" / "we\tird\nname").write_bytes(b"w")
    (dst / "old" / "f").write_bytes(b"old")
    (dst / "a" / "Packages" / "gone.rpm").write_bytes(b"gone")
    return src, dst


def test_real_dry_run_itemizes_everything_and_changes_nothing(tmp_path):
    src, dst = _tree(tmp_path)
    before = sorted(str(p.relative_to(dst)) for p in dst.rglob("*"))
    result = rsync.run(rsync.dry_run_argv(src, dst), source_root=src)
    by_path = {c.path: c for c in result.changes}
    assert by_path["a/Packages/x.rpm"].size == 300 and by_path["a/Packages/x.rpm"].transfers_data
    assert by_path["a/latest -> x"].link == "Packages/x.rpm"  # the name itself contains " -> "
    assert by_path["a/we\tird\nname"].is_new
    hard = [c for c in result.changes if c.code.startswith("h")]
    assert len(hard) == 1 and {hard[0].path, hard[0].link} == {"a/Packages/y.rpm", "a/Packages/y => z.rpm"}
    assert {c.path for c in result.changes if c.is_delete} == {"old", "old/f", "a/Packages/gone.rpm"}
    assert result.bytes == 300 + 40 + 1
    assert result.stats.non_dirs("files") == 5 and result.stats.non_dirs("deleted") == 2
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == before


def test_real_phase_copies_exactly_the_list_with_hard_links(tmp_path):
    src, dst = _tree(tmp_path)
    listing = tmp_path / "list"
    listing.write_bytes(b"a/Packages/y.rpm\0a/Packages/y => z.rpm\0a/latest -> x\0")
    result = rsync.run(rsync.phase_argv("payload", src, dst, listing), source_root=src)
    assert {c.path for c in result.changes if not c.is_dir} == {"a/Packages/y.rpm", "a/Packages/y => z.rpm",
                                                                "a/latest -> x"}
    assert {c.path for c in result.changes if c.is_dir} <= {"a", "a/Packages"}  # implied parents: times only
    assert (dst / "a" / "Packages" / "y.rpm").stat().st_ino == (dst / "a" / "Packages" / "y => z.rpm").stat().st_ino
    assert not (dst / "a" / "Packages" / "x.rpm").exists()  # not listed, not copied
    assert (dst / "old" / "f").exists() and (dst / "a" / "Packages" / "gone.rpm").exists()  # never deletes
    assert os.readlink(dst / "a" / "latest -> x") == "Packages/x.rpm"


def test_failure_names_the_exit_code_and_the_message(tmp_path):
    (tmp_path / "src").mkdir()
    listing = tmp_path / "list"
    listing.write_bytes(b"missing.rpm\0")
    with pytest.raises(rsync.RsyncError, match=r"exit code 23 \(partial transfer.*\n.*missing\.rpm"):
        rsync.run(rsync.phase_argv("payload", tmp_path / "src", tmp_path / "dst", listing))


def test_progress_is_logged_with_counts_and_rates(tmp_path):
    src, dst = _tree(tmp_path)
    lines: list[str] = []
    rsync.run(rsync.dry_run_argv(src, dst), log=lines.append, what="dry run", every=0)
    assert any("items" in line and "/s)" in line for line in lines[:-1])
    assert lines[-1].startswith("dry run: done, ") and "files" in lines[-1]


def test_rsync_is_the_real_tool():
    out = subprocess.run(["rsync", "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = (int(x) for x in out.split()[2].split(".")[:2])
    assert (major, minor) >= (3, 2)  # --modify-window=-1 (nanoseconds) needs a 3.1.3+ receiver
