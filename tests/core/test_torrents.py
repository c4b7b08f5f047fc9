"""Torrents of the published images: made with torf, read by a real BitTorrent client (transmission), the data
verified against the pieces, made once and kept while the image stays the same."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from releng.core import torrents
from releng.core.checksums import checksum, write_checksum_file
from releng.core.torrents import TorrentError, TorrentSettings, make_torrent, torrent_path, verify_data
from tests.realtools import section, transmission_show, transmission_verifies

WEBSEED = "https://dl.example.org/pub/rocky/9.7/isos/x86_64/Rocky-9.7-x86_64-dvd.iso"


@pytest.fixture
def image(tmp_path) -> Path:
    """A 3 MiB + 5 byte 'ISO' (the last piece is short) with its .CHECKSUM."""
    path = tmp_path / "isos" / "Rocky-9.7-x86_64-dvd.iso"
    path.parent.mkdir()
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    write_checksum_file(path.with_name(path.name + ".CHECKSUM"), [checksum(path)])
    return path


def _sha(path: Path) -> str:
    return checksum(path).hexdigest


def test_a_real_client_reads_the_torrent_and_verifies_the_data(image, tmp_path):
    settings = TorrentSettings("https://dl.example.org", ("udp://tracker.example.org:1337/announce",
                                                           "https://tracker2.example.org/announce"), 256 * 1024)
    assert make_torrent(image, _sha(image), WEBSEED, settings, creation_date=1767225600) is True
    torrent = torrent_path(image)
    assert torrent.name == "Rocky-9.7-x86_64-dvd.iso.torrent" and oct(torrent.stat().st_mode & 0o777) == "0o644"

    listing = transmission_show(torrent)
    assert "Name: Rocky-9.7-x86_64-dvd.iso" in listing
    assert "Piece Size: 256.0 KiB" in listing and "Piece Count: 13" in listing
    assert "Privacy: Public torrent" in listing
    assert section(listing, "WEBSEEDS") == [WEBSEED]
    trackers = [line for line in section(listing, "TRACKERS") if "://" in line]
    assert trackers == list(settings.trackers)
    (file_line,) = section(listing, "FILES")
    assert file_line.startswith("Rocky-9.7-x86_64-dvd.iso (3.15 MB)")  # 3145733 bytes in MB of 10^6 bytes

    assert verify_data(torrent, image)
    assert transmission_verifies(torrent, image.parent, tmp_path / "client")

    # one changed byte: torf and transmission both find the data does not match the pieces
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = bad_dir / image.name
    shutil.copyfile(image, bad)
    with open(bad, "r+b") as f:
        f.seek(1024 * 1024)
        byte = f.read(1)
        f.seek(1024 * 1024)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not verify_data(torrent, bad)
    assert not transmission_verifies(torrent, bad_dir, tmp_path / "client-bad", timeout=5)


def test_trackerless_with_automatic_piece_size(image):
    make_torrent(image, _sha(image), WEBSEED, TorrentSettings("https://dl.example.org"))
    listing = transmission_show(torrent_path(image))
    assert [line for line in section(listing, "TRACKERS") if "://" in line] == []
    assert section(listing, "WEBSEEDS") == [WEBSEED]
    t = torrents.read_torrent(torrent_path(image))
    assert t.piece_size == 16 * 1024 and t.trackers == [] and t.metainfo["x-sha256"] == _sha(image)


def test_made_once_kept_while_unchanged_and_remade_when_anything_changes(image):
    settings = TorrentSettings("https://dl.example.org", (), 64 * 1024)
    sha = _sha(image)
    assert make_torrent(image, sha, WEBSEED, settings, creation_date=1) is True
    torrent = torrent_path(image)
    before = torrent.read_bytes(), torrent.stat().st_ino, torrent.stat().st_mtime_ns
    assert make_torrent(image, sha, WEBSEED, settings, creation_date=2) is False  # kept, not rewritten
    assert (torrent.read_bytes(), torrent.stat().st_ino, torrent.stat().st_mtime_ns) == before

    other = TorrentSettings("https://dl.example.org", ("https://t.example.org/announce",), 64 * 1024)
    assert make_torrent(image, sha, WEBSEED, other) is True  # trackers changed
    assert make_torrent(image, sha, WEBSEED + ".x", other) is True  # web seed changed
    assert make_torrent(image, sha, WEBSEED + ".x", TorrentSettings("x", other.trackers, 128 * 1024)) is True

    image.write_bytes(os.urandom(1024 * 1024))  # a rebuilt image
    write_checksum_file(image.with_name(image.name + ".CHECKSUM"), [checksum(image)])
    assert make_torrent(image, _sha(image), WEBSEED, settings) is True
    assert verify_data(torrent, image)

    torrent.write_bytes(b"not a torrent")  # a damaged file is replaced
    assert make_torrent(image, _sha(image), WEBSEED, settings) is True
    assert verify_data(torrent, image)


def test_unreadable_torrent_and_empty_image_are_named(tmp_path):
    bad = tmp_path / "x.torrent"
    bad.write_bytes(b"d4:infoe")
    with pytest.raises(TorrentError, match=r"x\.torrent is not a readable torrent"):
        torrents.read_torrent(bad)
    empty = tmp_path / "empty.iso"
    empty.write_bytes(b"")
    with pytest.raises(TorrentError, match=r"empty\.iso is empty; a torrent needs at least one byte"):
        make_torrent(empty, "0" * 64, WEBSEED, TorrentSettings("https://dl.example.org"))


def test_web_seed_path_is_the_production_release_dir_under_the_download_url(el9, tmp_path):
    from releng.core.layout import ReleaseTrees, download_path

    trees = ReleaseTrees(el9, tmp_path / "staging", tmp_path / "production")
    assert download_path(el9) == "pub/rocky/9.7"
    assert trees.production_dir() == tmp_path / "production" / "mirror" / download_path(el9)
    assert TorrentSettings("https://dl.example.org/").webseed(f"/{download_path(el9)}/isos/x86_64/a.iso") == \
        "https://dl.example.org/pub/rocky/9.7/isos/x86_64/a.iso"
