"""BitTorrent metainfo files for the published ISOs and images, made with ``torf``.

One single-file torrent per image, ``<image>.torrent`` beside it, with:

* ``url-list`` (BEP 19 web seed): the image's production download URL, so a client downloads from the
  mirrors' origin when no peer has a piece;
* ``announce``/``announce-list``: the configured trackers, one tier each; with none the torrent is
  trackerless and clients find peers through DHT and peer exchange, and the web seed alone is enough to
  download it;
* the piece size from the settings, or torf's choice for the image's size (16 KiB to 16 MiB, about 512 to
  2048 pieces);
* the image's SHA-256 (from its ``.CHECKSUM``) under the top-level key ``x-sha256``, outside the info
  dictionary, so the infohash depends on the data alone.

A torrent is written once: when the file beside the image already describes it (same name, size, SHA-256,
piece size, trackers and web seed), it is kept byte for byte and the image is not read again.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torf

from releng.core.fs import atomic_write
from releng.core.log import Logger

log = logging.getLogger(__name__)

SUFFIX = ".torrent"
SHA256_KEY = "x-sha256"
CREATED_BY = f"releng-airflow (torf {torf.__version__})"
PIECE_SIZE_MIN = 16 * 1024
PIECE_SIZE_MAX = 16 * 1024 * 1024


class TorrentError(RuntimeError):
    """A torrent could not be made or read."""


@dataclass(frozen=True)
class TorrentSettings:
    """What every torrent of a site carries.

    :param download_url: the URL production's ``mirror`` directory is served at (``RELENG_DOWNLOAD_URL``)
    :param trackers: announce URLs, one tier each; () for trackerless torrents
    :param piece_size: bytes, a power of two from 16 KiB to 16 MiB; None for torf's choice by image size
    """

    download_url: str
    trackers: tuple[str, ...] = ()
    piece_size: int | None = None

    def webseed(self, path: str) -> str:
        """The download URL of ``path`` (relative to production's ``mirror`` directory)."""
        return f"{self.download_url.rstrip('/')}/{path.lstrip('/')}"


def torrent_path(image: Path) -> Path:
    return image.with_name(image.name + SUFFIX)


def piece_size_for(size: int, settings: TorrentSettings) -> int:
    """The piece size a torrent of ``size`` bytes gets."""
    if settings.piece_size is not None:
        return settings.piece_size
    return torf.Torrent.calculate_piece_size(max(size, 1), PIECE_SIZE_MIN, PIECE_SIZE_MAX)


def read_torrent(path: Path) -> torf.Torrent:
    """A torrent file, validated; TorrentError naming the file when it is not one."""
    try:
        return torf.Torrent.read_stream(io.BytesIO(Path(path).read_bytes()))
    except (OSError, torf.TorfError) as exc:
        raise TorrentError(f"{path} is not a readable torrent: {exc}") from exc


def is_current(torrent: Path, image: Path, sha256: str, webseed: str, settings: TorrentSettings) -> bool:
    """``torrent`` exists and describes ``image`` (name, size, SHA-256) with these trackers, web seed and piece
    size. A file that is not a valid torrent is not current (it is replaced)."""
    if not torrent.is_file():
        return False
    try:
        t = read_torrent(torrent)
    except TorrentError:
        return False
    size = image.stat().st_size
    recorded = cast(dict, t.metainfo).get(SHA256_KEY)
    return (t.mode == "singlefile" and t.name == image.name and t.size == size
            and recorded == sha256
            and t.piece_size == piece_size_for(size, settings)
            and [url for tier in t.trackers for url in tier] == list(settings.trackers)
            and list(t.webseeds) == [webseed])


def make_torrent(image: Path, sha256: str, webseed: str, settings: TorrentSettings, *,
                 creation_date: int | None = None, comment: str | None = None, threads: int | None = None,
                 logger: Logger = log) -> bool:
    """Write ``<image>.torrent`` beside ``image`` atomically, unless the one there is current.

    ``sha256`` is the image's digest as its ``.CHECKSUM`` records it. Returns True when a torrent was written,
    False when the existing one was kept. TorrentError when hashing or writing fails.
    """
    image = Path(image)
    out = torrent_path(image)
    if is_current(out, image, sha256, webseed, settings):
        logger.info("torrent %s is current; kept", out.name)
        return False
    size = image.stat().st_size
    if size == 0:
        raise TorrentError(f"{image} is empty; a torrent needs at least one byte of data. Rebuild the image")
    try:
        t = torf.Torrent(path=image, trackers=list(settings.trackers) or None,
                         webseeds=[webseed], private=False, comment=comment, creation_date=creation_date,
                         created_by=CREATED_BY, piece_size=piece_size_for(size, settings),
                         piece_size_min=PIECE_SIZE_MIN, piece_size_max=PIECE_SIZE_MAX)
        t.generate(threads=threads)
        cast(dict, t.metainfo)[SHA256_KEY] = sha256  # top level, outside the infohash
        data = t.dump()
    except torf.TorfError as exc:
        raise TorrentError(f"cannot make a torrent of {image}: {exc}") from exc
    atomic_write(out, data)
    logger.info("torrent %s: %d pieces of %d KiB, web seed %s, %s", out.name, len(t.hashes),
                t.piece_size // 1024, webseed,
                f"trackers {', '.join(settings.trackers)}" if settings.trackers else "trackerless")
    return True


def verify_data(torrent: Path, data: Path) -> bool:
    """``data`` matches every piece of ``torrent`` (reads the whole file)."""
    try:
        return bool(read_torrent(torrent).verify(data))
    except torf.TorfError:
        return False
