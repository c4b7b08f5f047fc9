"""pull_cloud_images: the newest cloud image builds of one (arch, type) from S3, verified.

The newest upload per (type, variant, arch) is ordered by (date, build number, upload epoch)
compared as numbers, so build ``.10`` wins over ``.2``. An object without ``sha256`` metadata
cannot be verified and is never published.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from releng.core import checksums, modes, s3keys
from releng.core.fs import swap_symlink
from releng.core.layout import ComposeLayout
from releng.core.log import Logger
from releng.core.profile import CloudImage, ReleaseProfile

log = logging.getLogger(__name__)


class CloudImageError(ValueError):
    """The profile or the bucket does not hold a verifiable image of this kind; retrying will not help."""


@dataclass(frozen=True, order=True)
class CloudBuild:
    """One uploaded cloud image; orders by (date, build, epoch) as numbers, newest last."""

    date: str
    build: int
    epoch: int
    key: str
    variant: str | None

    @property
    def filename(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def cloud_kind(image_type: str, variant: str | None) -> str:
    return f"{image_type}-{variant}" if variant else image_type


def cloud_image(profile: ReleaseProfile, image_type: str, arch: str) -> CloudImage:
    image = profile.cloud_images.get(image_type)
    if image is None:
        raise CloudImageError(f"{profile.name} has no cloud image type {image_type!r}; "
                            f"types: {', '.join(profile.cloud_images) or 'none'}")
    if arch not in image.arches:
        raise CloudImageError(f"cloud image {image_type} of {profile.name} is not built for {arch} "
                            f"(arches: {', '.join(image.arches)})")
    return image


def _name_re(profile: ReleaseProfile, kind: str, arch: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(f'{profile.shortname}-{profile.major}-{kind}-{profile.revision}-')}"
                      rf"(?P<date>\d{{8}})\.(?P<build>\d+)\.{re.escape(arch)}$")


def parse_cloud_key(profile: ReleaseProfile, image: CloudImage, variant: str | None, arch: str,
                    key: str) -> CloudBuild | None:
    """The build a key holds when it is ``<prefix><name>/<epoch>/<name>.<format>`` of this kind, else None."""
    parts = key.split("/")
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    _, name, epoch, filename = parts
    if filename != f"{name}.{image.format}":
        return None
    m = _name_re(profile, cloud_kind(image.type, variant), arch).match(name)
    if not m:
        return None
    return CloudBuild(m["date"], int(m["build"]), int(epoch), key, variant)


def select_cloud_builds(profile: ReleaseProfile, image: CloudImage, arch: str,
                        keys: Iterable[str]) -> tuple[dict[str | None, CloudBuild], list[str | None]]:
    """The newest build per variant among ``keys``, and the variants that have none."""
    keys = list(keys)
    chosen: dict[str | None, CloudBuild] = {}
    missing: list[str | None] = []
    for variant in image.variants or (None,):
        builds = [b for k in keys if (b := parse_cloud_key(profile, image, variant, arch, k))]
        if builds:
            chosen[variant] = max(builds)
        else:
            missing.append(variant)
    return chosen, missing


def cloud_latest_names(profile: ReleaseProfile, image: CloudImage, variant: str | None, arch: str) -> list[str]:
    """``Rocky-9-<Type>-<Variant>.latest.<arch>.<fmt>``, plus ``Rocky-9-<Type>.latest...`` for the primary."""
    stem = f"{profile.shortname}-{profile.major}"
    names = [f"{stem}-{cloud_kind(image.type, variant)}.latest.{arch}.{image.format}"]
    if variant is not None and variant == image.primary_variant:
        names.append(f"{stem}-{image.type}.latest.{arch}.{image.format}")
    return names


def cloud_partial_dir(layout: ComposeLayout, arch: str) -> Path:
    """Downloads land here first: beside ``work/images/<arch>`` (same filesystem), never inside it."""
    return layout.work_images(arch).parent / f".{arch}.partial"


def verify_cloud_download(path: Path, key: str, expected: str) -> str:
    """Hash a downloaded image once; CloudImageError when it is not what the upload recorded."""
    digest = checksums.hash_once(path, ("sha256",))["sha256"]
    if digest != expected.lower():
        raise CloudImageError(f"s3 object {key} does not match its sha256 metadata: expected {expected}, downloaded "
                            f"{digest}; the upload is corrupt, re-upload the image (or fix its metadata)")
    return digest


def install_cloud_image(layout: ComposeLayout, image: CloudImage, build: CloudBuild, arch: str, downloaded: Path,
                        digest: str) -> list[str]:
    """Move a verified download into ``work/images/<arch>``; write its ``.CHECKSUM``, the latest links
    (each with a ``.CHECKSUM`` under the link's own name), and drop older builds of the same kind.
    Returns the names written.
    """
    profile = layout.profile
    out = modes.public_dirs(layout.work_images(arch))
    final = out / build.filename
    modes.make_public(downloaded)  # a NamedTemporaryFile download is 0600
    if downloaded != final:
        os.replace(downloaded, final)
    size = final.stat().st_size
    written = [final.name]
    checksums.write_checksum_file(out / f"{final.name}.CHECKSUM",
                                  [checksums.Checksum(final.name, size, "sha256", digest)])
    for link in cloud_latest_names(profile, image, build.variant, arch):
        swap_symlink(final.name, out / link)
        checksums.write_checksum_file(out / f"{link}.CHECKSUM", [checksums.Checksum(link, size, "sha256", digest)])
        written.append(link)
    pattern = _name_re(profile, cloud_kind(image.type, build.variant), arch)
    suffix = f".{image.format}"
    for old in out.iterdir():
        stem = old.name.removesuffix(".CHECKSUM").removesuffix(suffix)
        if old.name.startswith(final.name) or not pattern.match(stem) or old.is_symlink():
            continue
        old.unlink()
    return written


def local_cloud_digest(path: Path, size: int) -> str | None:
    """The sha256 of an image already downloaded by an earlier try (None when absent or of another size)."""
    if not path.is_file() or path.is_symlink() or path.stat().st_size != size:
        return None
    return checksums.hash_once(path, ("sha256",))["sha256"]


class _Progress:
    """boto3 transfer callback: logs bytes and rate at most every ``every`` seconds (threads call it)."""

    def __init__(self, logger: Logger, name: str, total: int, every: float = 10.0):
        self.log, self.name, self.total, self.every = logger, name, total, every
        self.done = 0
        self.started = self.last = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, chunk: int) -> None:
        with self.lock:
            self.done += chunk
            now = time.monotonic()
            if now - self.last < self.every and self.done < self.total:
                return
            self.last = now
            rate = self.done / max(now - self.started, 1e-6) / 2**20
            self.log.info("%s: %.1f/%.1f MiB (%.0f%%), %.1f MiB/s", self.name, self.done / 2**20,
                          self.total / 2**20, 100 * self.done / max(self.total, 1), rate)


def pull_cloud_images(layout: ComposeLayout, image_type: str, arch: str, hook: Any, bucket: str,
                      logger: Logger = log) -> dict:
    """Pull the newest build of each variant of ``image_type`` for ``arch`` into ``work/images/<arch>``.

    ``hook`` is an Airflow S3Hook (``iter_file_metadata``, ``get_key``, ``transfer_config``).
    Returns ``{"arch", "type", "files"}``; CloudImageError when a variant has no upload or an upload
    cannot be verified.
    """
    profile = layout.profile
    image = cloud_image(profile, image_type, arch)
    prefix = s3keys.cloud_image_prefix(profile.revision, arch)
    keys = [obj["Key"] for obj in hook.iter_file_metadata(prefix=prefix, bucket_name=bucket)]
    chosen, missing = select_cloud_builds(profile, image, arch, keys)
    logger.info("s3://%s/%s: %d objects; chosen: %s", bucket, prefix, len(keys),
                ", ".join(b.key for b in chosen.values()) or "none")
    if missing:
        names = ", ".join(cloud_kind(image.type, v) for v in missing)
        raise CloudImageError(
            f"no {image.format} upload of {names} for {arch} under s3://{bucket}/{prefix} "
            f"(expected <name>/<epoch>/<name>.{image.format} with name "
            f"{profile.shortname}-{profile.major}-<Type>[-<Variant>]-{profile.revision}-<YYYYMMDD>.<build>."
            f"{arch}); build and upload it, or drop it from this compose"
            f"{' (failable: the compose finishes incomplete)' if image.failable else ''}")
    files = [_pull(hook, bucket, layout, image, build, arch, logger) for build in chosen.values()]
    return {"arch": arch, "type": image.type, "files": files}


def _pull(hook: Any, bucket: str, layout: ComposeLayout, image: CloudImage, build: CloudBuild, arch: str,
          logger: Logger) -> str:
    obj = hook.get_key(build.key, bucket)
    expected = (obj.metadata or {}).get(s3keys.CHECKSUM_METADATA)
    if not expected:
        raise CloudImageError(
            f"s3://{bucket}/{build.key} has no {s3keys.CHECKSUM_METADATA!r} metadata, so the download cannot be "
            f"verified; re-upload it with --metadata {s3keys.CHECKSUM_METADATA}=<hex digest>")
    final = layout.work_images(arch) / build.filename
    digest = local_cloud_digest(final, obj.content_length)
    if digest is not None and digest == expected.lower():
        logger.info("%s already downloaded and verified; keeping it", final)
        install_cloud_image(layout, image, build, arch, final, digest)
        return final.name
    partial_dir = cloud_partial_dir(layout, arch)
    partial_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=partial_dir, prefix=f".{build.filename}.", delete=False) as f:
        tmp = Path(f.name)
    try:
        logger.info("downloading s3://%s/%s (%.1f MiB)", bucket, build.key, obj.content_length / 2**20)
        with open(tmp, "wb") as f:
            obj.download_fileobj(f, Config=hook.transfer_config,
                                 Callback=_Progress(logger, build.filename, obj.content_length))
        digest = verify_cloud_download(tmp, build.key, expected)
        names = install_cloud_image(layout, image, build, arch, tmp, digest)
    finally:
        tmp.unlink(missing_ok=True)
        try:
            partial_dir.rmdir()  # only when empty: another variant's download may still use it
        except OSError:
            pass
    logger.info("%s verified (sha256 %s); wrote %s", build.filename, digest, ", ".join(names[1:]) or "no links")
    return final.name
