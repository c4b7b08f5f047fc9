"""Mirror file lists: the quick-fedora-mirror format written, read back, and published atomically."""

from __future__ import annotations

import glob
import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from releng.core import filelist


def _category(tmp_path: Path) -> Path:
    cat = tmp_path / "mirror" / "pub" / "rocky"
    repo = cat / "9.7" / "BaseOS" / "x86_64" / "os"
    (repo / "Packages" / "b").mkdir(parents=True)
    (repo / "repodata").mkdir()
    (repo / "Packages" / "b" / "bash-5.1-1.el9.x86_64.rpm").write_bytes(b"b" * 1000)
    (repo / "repodata" / "repomd.xml").write_text("<repomd/>\n")
    (cat / "9.7" / "isos").mkdir()
    (cat / "9.7" / "isos" / "boot.iso").write_bytes(b"i" * 2048)
    (cat / "9.7" / "isos" / "latest.iso").symlink_to("boot.iso")
    (cat / "9").symlink_to("9.7")
    return cat


def _listed(cat: Path) -> dict[str, filelist.Entry]:
    text = (cat / "fullfiletimelist-rocky").read_text()
    return {e.path: e for e in filelist.parse_timelist(text).files}


def test_lists_every_entry_with_type_size_and_time(tmp_path):
    cat = _category(tmp_path)
    result = filelist.publish(cat, "rocky")
    assert result.changed == ["fullfilelist", "imagelist-rocky", "fullfiletimelist-rocky"]  # the time list last
    listed = _listed(cat)
    on_disk = {str(p.relative_to(cat)): p for p in cat.rglob("*") if not p.name.startswith(("fullfile", "imagelist"))}
    assert set(listed) == set(on_disk)
    for rel, path in on_disk.items():
        st = path.lstat()
        assert listed[rel].type == ("l" if path.is_symlink() else "d" if path.is_dir() else "f"), rel
        assert listed[rel].size == st.st_size  # a link's size is its target's length
        assert listed[rel].mtime == max(st.st_mtime_ns, st.st_ctime_ns) // 10**9
    assert listed["9"].size == len("9.7") and listed["9.7/isos/latest.iso"].type == "l"
    assert result.stats.files == 3 and result.stats.links == 2


def test_format_sections_order_and_checksums(tmp_path):
    cat = _category(tmp_path)
    filelist.publish(cat, "rocky")
    text = (cat / "fullfiletimelist-rocky").read_text()
    sha1 = hashlib.sha1(b"<repomd/>\n").hexdigest()
    assert text.startswith("[Version]\n2\n\n[Files]\n")
    assert text.endswith(f"\n[Checksums SHA1]\n{sha1}\t9.7/BaseOS/x86_64/os/repodata/repomd.xml\n\n[End]\n")
    paths = [e.path for e in filelist.parse_timelist(text).files]
    assert paths == sorted(paths, key=lambda p: p.split("/"))  # by path, a directory right before its contents
    assert paths.index("9.7") < paths.index("9.7/BaseOS") < paths.index("9.7/isos")
    assert all(len(line.split("\t")) == 4 for line in text.split("[Files]\n")[1].split("\n\n")[0].splitlines())
    plain = (cat / "fullfilelist").read_text().splitlines()
    assert plain == [f"./{p}" for p in paths]


def test_readability_suffixes_and_exclusions(tmp_path):
    cat = _category(tmp_path)
    (cat / "embargo").mkdir(mode=0o750)
    (cat / "embargo" / "secret.iso").write_bytes(b"s")
    (cat / "grouponly.txt").write_bytes(b"g")
    os.chmod(cat / "grouponly.txt", 0o640)
    (cat / "private.txt").write_bytes(b"p")
    os.chmod(cat / "private.txt", 0o600)
    (cat / "dangling").symlink_to("nowhere")
    (cat / "9.7" / ".~tmp~").mkdir()
    (cat / "9.7" / ".~tmp~" / "partial.rpm").write_bytes(b"x")
    (cat / ".nfs000123").write_bytes(b"n")
    os.mkfifo(cat / "fifo")
    (cat / "fullfiletimelist-rocky-old").write_text("old copy\n")
    (cat / "imagelist-rocky").write_text("./x\n")
    result = filelist.publish(cat, "rocky", log=lambda _m: None)
    listed = _listed(cat)
    assert listed["embargo"].type == "d-" and listed["embargo/secret.iso"].type == "f*"
    assert listed["grouponly.txt"].type == "f-"
    for absent in ("private.txt", "dangling", "9.7/.~tmp~", "9.7/.~tmp~/partial.rpm", ".nfs000123", "fifo",
                   "fullfiletimelist-rocky-old", "imagelist-rocky", "fullfilelist", "fullfiletimelist-rocky"):
        assert absent not in listed, absent
    assert result.stats.dangling_links == ["dangling"] and result.stats.excluded_unreadable == 1


def test_time_is_the_later_of_mtime_and_ctime(tmp_path):
    cat = _category(tmp_path)
    future = 4_000_000_000
    os.utime(cat / "9.7" / "isos" / "boot.iso", (future, future))
    filelist.publish(cat, "rocky")
    listed = _listed(cat)
    assert listed["9.7/isos/boot.iso"].mtime == future
    st = (cat / "9.7" / "BaseOS").lstat()
    assert listed["9.7/BaseOS"].mtime == st.st_ctime_ns // 10**9 >= st.st_mtime_ns // 10**9


def test_unchanged_lists_are_left_in_place_and_never_list_themselves(tmp_path):
    cat = _category(tmp_path)
    filelist.publish(cat, "rocky")
    inodes = {n: (cat / n).stat().st_ino for n in ("fullfilelist", "fullfiletimelist-rocky")}
    again = filelist.publish(cat, "rocky")
    assert again.changed == []
    assert {n: (cat / n).stat().st_ino for n in inodes} == inodes  # not even renamed over
    (cat / "9.7" / "isos" / "new.iso").write_bytes(b"n")
    changed = filelist.publish(cat, "rocky")
    assert changed.changed == ["fullfilelist", "imagelist-rocky", "fullfiletimelist-rocky"]
    assert "9.7/isos/new.iso" in _listed(cat)
    assert glob.glob(str(cat / "fullfiletimelist-*")) == [str(cat / "fullfiletimelist-rocky")]
    assert not [p for p in cat.iterdir() if p.name.startswith(".fullfile")]  # no temp files left


def test_image_list_names_the_images_as_create_filelist_does(tmp_path):
    """``imagelist-<category>``: create-filelist ``-i``: ``./path`` of every listed entry whose name ends in one
    of productmd's image formats (links too), in the lists' order; the other files are not in it."""
    cat = _category(tmp_path)
    (cat / "9.7" / "images").mkdir()
    for name in ("Rocky-9-GenericCloud-Base-9.7-20251123.0.x86_64.qcow2", "Rocky-9-Vagrant-Libvirt.x86_64.vagrant-"
                 "libvirt.box", "Rocky-9-Container-Base.x86_64.tar.xz", "CHECKSUM", "x.qcow2.torrent"):
        (cat / "9.7" / "images" / name).write_bytes(b"i")
    filelist.publish(cat, "rocky")
    assert (cat / "imagelist-rocky").read_text().splitlines() == [
        "./9.7/images/Rocky-9-Container-Base.x86_64.tar.xz",
        "./9.7/images/Rocky-9-GenericCloud-Base-9.7-20251123.0.x86_64.qcow2",
        "./9.7/images/Rocky-9-Vagrant-Libvirt.x86_64.vagrant-libvirt.box",
        "./9.7/isos/boot.iso", "./9.7/isos/latest.iso"]
    assert filelist.imagelist_name("rocky") == "imagelist-rocky"


def test_a_name_that_cannot_be_listed_fails_and_leaves_the_old_lists(tmp_path):
    cat = _category(tmp_path)
    filelist.publish(cat, "rocky")
    before = (cat / "fullfiletimelist-rocky").read_bytes()
    (cat / "9.7" / "bad\nname.rpm").write_bytes(b"x")
    with pytest.raises(filelist.FileListError, match=r"newline, CR or TAB .* rename or remove it in staging"):
        filelist.publish(cat, "rocky")
    assert (cat / "fullfiletimelist-rocky").read_bytes() == before
    assert not [p for p in cat.iterdir() if p.name.startswith(".fullfile")]


@pytest.mark.parametrize("text,message", [
    ("[Version]\n2\n\n[Files]\n1\tf\t1\ta\n", "does not end with \\[End\\]"),
    ("[Version]\n2\n\n[Files]\n1\tf\ta\n\n[End]\n", "line 5: not <time>"),
    ("[Version]\n2\n\n[Files]\nx\tf\t1\ta\n\n[End]\n", "line 5: not <time>"),
    ("[Version]\n2\n\n[Files]\n1\tz\t1\ta\n\n[End]\n", "unknown type 'z'"),
    ("[Version]\n4\n\n[Files]\n\n[End]\n", "clients accept 1 to 3"),
])
def test_parser_is_strict(text, message):
    with pytest.raises(filelist.FileListError, match=message):
        filelist.parse_timelist(text)


def test_parser_ignores_unknown_checksum_sections():
    text = "[Version]\n3\n\n[Files]\n1\td\t4096\ta\n\n[Checksums SHA256]\nabc\ta/repomd.xml\n\n[End]\n"
    parsed = filelist.parse_timelist(text)
    assert parsed.version == 3 and parsed.checksums == {"SHA256": {"a/repomd.xml": "abc"}}


def test_category_names_are_checked():
    assert filelist.timelist_name("rocky") == "fullfiletimelist-rocky"
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(filelist.FileListError):
            filelist.timelist_name(bad)


def _flat_tree(root: Path, dirs: int, per_dir: int) -> None:
    for d in range(dirs):
        sub = root / f"d{d:04d}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            (sub / f"package-{i:05d}-1.0-1.el9.x86_64.rpm").touch()


def test_memory_does_not_grow_with_the_number_of_entries(tmp_path):
    peaks = []
    for dirs in (5, 40):
        root = tmp_path / f"t{dirs}"
        _flat_tree(root, dirs, 500)
        tracemalloc.start()
        filelist.publish(root, "rocky")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < peaks[0] * 1.5, peaks  # 8x the entries, about the same peak: one directory at a time
