"""RELENG_DOWNLOAD_URL, RELENG_TORRENT_TRACKERS and RELENG_TORRENT_PIECE_SIZE: defaults, forms, clear errors."""

from __future__ import annotations

import pytest

from releng.core.settings import Settings, SettingsError


def test_defaults_make_trackerless_torrents_seeded_from_the_download_site():
    s = Settings.from_env({})
    assert s.download_url == "https://download.rockylinux.org"
    assert s.torrent_trackers == ()
    assert s.torrent_piece_size is None


def test_values_are_read_and_round_trip():
    s = Settings.from_env({
        "RELENG_DOWNLOAD_URL": "https://dl.example.org/",
        "RELENG_TORRENT_TRACKERS": " udp://tracker.example.org:1337/announce, https://t.example.org/announce ,",
        "RELENG_TORRENT_PIECE_SIZE": "4 MiB",
    })
    assert s.download_url == "https://dl.example.org"
    assert s.torrent_trackers == ("udp://tracker.example.org:1337/announce", "https://t.example.org/announce")
    assert s.torrent_piece_size == 4 * 1024 * 1024
    assert Settings.from_env(s.as_env()) == s


@pytest.mark.parametrize("raw, size", [("16KiB", 16384), ("256k", 262144), ("1048576", 1048576), ("16MiB", 2 ** 24),
                                       ("2mb", 2 ** 21)])
def test_piece_sizes(raw, size):
    assert Settings.from_env({"RELENG_TORRENT_PIECE_SIZE": raw}).torrent_piece_size == size


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RELENG_DOWNLOAD_URL": "ftp://dl.example.org"},
         "RELENG_DOWNLOAD_URL='ftp://dl.example.org' is not an http(s) URL; set it to the URL that serves "
         "RELENG_PRODUCTION_ROOT/mirror"),
        ({"RELENG_DOWNLOAD_URL": "https://dl.example.org/?x=1"}, "has a query or fragment"),
        ({"RELENG_DOWNLOAD_URL": "/"}, "RELENG_DOWNLOAD_URL='/' is empty; set it to the URL"),
        ({"RELENG_TORRENT_TRACKERS": "tracker.example.org"},
         "'tracker.example.org' is not an http, https or udp announce URL; set it to announce URLs separated by "
         "commas"),
        ({"RELENG_TORRENT_TRACKERS": "udp://tracker.example.org/announce"},
         "'udp://tracker.example.org/announce' has no port; a UDP tracker needs one"),
        ({"RELENG_TORRENT_TRACKERS": "https://t.example.org/a,https://t.example.org/a"},
         "names https://t.example.org/a more than once"),
        ({"RELENG_TORRENT_PIECE_SIZE": "big"},
         "RELENG_TORRENT_PIECE_SIZE='big' is not a size; set it to a power of two"),
        ({"RELENG_TORRENT_PIECE_SIZE": "3MiB"}, "(3145728 bytes) is not a power of two from 16 KiB to 16 MiB"),
        ({"RELENG_TORRENT_PIECE_SIZE": "8KiB"}, "(8192 bytes) is not a power of two from 16 KiB to 16 MiB"),
        ({"RELENG_TORRENT_PIECE_SIZE": "32MiB"}, "is not a power of two from 16 KiB to 16 MiB"),
    ],
)
def test_unusable_values_are_refused_saying_what_to_set(env, message):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert message in str(err.value)
