"""releng.core.tarsafe: each refusal with a crafted tarball, and nothing written when refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from releng.core.tarsafe import Limits, TarSafetyError, safe_extract


def make_tar(path: Path, members: list[tuple[str, str, bytes | str]], mode: str = "w:gz") -> Path:
    """members: (kind, name, data) with kind file|dir|symlink|hardlink|fifo|chr|blk; data is content or link target."""
    with tarfile.open(path, mode) as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = data
            tar.addfile(info)
    return path


GOOD = [("dir", "lorax", b""), ("dir", "lorax/images", b""), ("file", "lorax/.treeinfo", b"[tree]\n"),
        ("file", "lorax/images/boot.iso", b"ISO" * 100), ("symlink", "lorax/images/latest.iso", "boot.iso"),
        ("hardlink", "lorax/images/same.iso", "lorax/images/boot.iso"), ("file", "lorax-x86_64.log", b"log\n")]


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_good_tarball_extracts_completely(tmp_path):
    tarball = make_tar(tmp_path / "good.tar.gz", GOOD)
    dest = tmp_path / "out" / "x86_64"
    done = safe_extract(tarball, dest)
    assert (dest / "lorax/.treeinfo").read_bytes() == b"[tree]\n"
    assert (dest / "lorax/images/latest.iso").is_symlink()
    assert (dest / "lorax/images/latest.iso").read_bytes() == b"ISO" * 100
    assert (dest / "lorax/images/same.iso").stat().st_ino == (dest / "lorax/images/boot.iso").stat().st_ino
    assert done.members == len(GOOD) and done.bytes == 300 + 7 + 4
    assert leftovers(dest.parent) == ["x86_64"]


def test_existing_destination_needs_replace_and_is_replaced_whole(tmp_path):
    tarball = make_tar(tmp_path / "good.tar.gz", GOOD)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale").write_text("old")
    with pytest.raises(TarSafetyError, match="already exists"):
        safe_extract(tarball, dest)
    safe_extract(tarball, dest, replace=True)
    assert not (dest / "stale").exists() and (dest / "lorax/.treeinfo").is_file()
    assert leftovers(tmp_path) == ["good.tar.gz", "out"]


def test_merge_replaces_the_archive_entries_and_keeps_the_others(tmp_path):
    tarball = make_tar(tmp_path / "good.tar.gz", GOOD)
    dest = tmp_path / "x86_64"
    (dest / "lorax").mkdir(parents=True)
    (dest / "lorax" / "stale").write_text("old")
    (dest / "dvd").mkdir()
    (dest / "dvd" / ".treeinfo").write_text("kept")
    safe_extract(tarball, dest, merge=True)
    assert sorted(p.name for p in dest.iterdir()) == ["dvd", "lorax", "lorax-x86_64.log"]
    assert not (dest / "lorax" / "stale").exists() and (dest / "dvd" / ".treeinfo").read_text() == "kept"
    assert (dest / "lorax/images/boot.iso").read_bytes() == b"ISO" * 100
    assert (dest / "lorax").stat().st_mode & 0o777 == 0o755
    assert leftovers(tmp_path) == ["good.tar.gz", "x86_64"]


def test_destination_gets_normal_permissions(tmp_path):
    done = safe_extract(make_tar(tmp_path / "good.tar.gz", GOOD), tmp_path / "out")
    assert done.path.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("members, reason", [
    ([("file", "/etc/passwd", b"x")], "absolute"),
    ([("file", "lorax/../../evil", b"x")], r"contains '\.\.'"),
    ([("file", "../evil", b"x")], r"contains '\.\.'"),
    ([("symlink", "lorax/escape", "../../etc")], "points outside the destination"),
    ([("symlink", "lorax/abs", "/etc/passwd")], "points outside the destination"),
    ([("dir", "lorax", b""), ("symlink", "lorax/here", "."), ("symlink", "lorax/here/up", "../x")],
     "lies under the symlink 'lorax/here'"),
    ([("hardlink", "lorax/hl", "/etc/shadow")], "absolute"),
    ([("hardlink", "lorax/hl", "lorax/never-seen")], "not an earlier file"),
    ([("fifo", "lorax/pipe", b"")], "is a fifo"),
    ([("chr", "lorax/null", b"")], "is a character device"),
    ([("blk", "lorax/sda", b"")], "is a block device"),
])
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, members, reason):
    tarball = make_tar(tmp_path / "bad.tar.gz", [("file", "lorax/ok", b"fine"), *members])
    dest = tmp_path / "out" / "x86_64"
    with pytest.raises(TarSafetyError, match=reason) as err:
        safe_extract(tarball, dest)
    assert str(tarball) in str(err.value)
    assert members[-1][1] in str(err.value)  # the message names the member
    assert leftovers(dest.parent) == []


def test_size_and_count_limits(tmp_path):
    tarball = make_tar(tmp_path / "big.tar.gz", [("file", f"f{i}", b"x" * 100) for i in range(5)])
    dest = tmp_path / "out"
    with pytest.raises(TarSafetyError, match="'f0' is 100 bytes, more than the per-member limit of 99"):
        safe_extract(tarball, dest, Limits(max_member_size=99))
    with pytest.raises(TarSafetyError, match=r"more than the limit of 450 bytes \(at 'f4'\)"):
        safe_extract(tarball, dest, Limits(max_total_size=450))
    with pytest.raises(TarSafetyError, match="has 5 members, more than the limit of 4"):
        safe_extract(tarball, dest, Limits(max_members=4))
    assert not dest.exists()
    assert safe_extract(tarball, dest, Limits(max_member_size=100, max_total_size=500, max_members=5)).members == 5


def test_truncated_and_garbage_archives_are_unreadable(tmp_path):
    good = make_tar(tmp_path / "good.tar.gz", [("file", "lorax/big", bytes(range(256)) * 4096)])
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not a tarball" * 50)
    for bad in (truncated, garbage):
        with pytest.raises(TarSafetyError, match=r"cannot be read as a tar archive.*truncated or corrupt"):
            safe_extract(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.tar.gz", "good.tar.gz", "truncated.tar.gz"]
