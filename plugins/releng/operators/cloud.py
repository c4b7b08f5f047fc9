"""pull_cloud_images: the newest cloud image builds of one (arch, type) from S3, verified."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from releng.core import iso, s3keys
from releng.core.layout import ComposeLayout
from releng.core.profile import CloudImage
from releng.core.settings import settings
from releng.operators.iso import resolve_compose


class _Progress:
    """boto3 transfer callback: logs bytes and rate at most every ``every`` seconds (threads call it)."""

    def __init__(self, log, name: str, total: int, every: float = 10.0):
        self.log, self.name, self.total, self.every = log, name, total, every
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


class CloudImagePullOperator(BaseOperator):
    """Pull the newest build of each variant of one cloud image type for one arch from S3, verified.

    Lists only ``buildimage-<revision>-<arch>/``; picks per variant the newest by (date, build number,
    upload epoch) compared as numbers; downloads through S3Hook into ``work/images/<arch>/``; checks
    the object's ``sha256`` metadata (an object without it fails: unverifiable images are not
    published); writes ``.CHECKSUM`` files and the ``latest`` links. A missing variant, a missing or
    wrong checksum fail without retry; finalize_compose treats a failure as FINISHED_INCOMPLETE
    when the profile marks the type ``failable``.
    Returns ``{"arch", "type", "files"}``.

    :param arch: the arch (templated)
    :param image_type: the profile's ``cloud_images`` key, e.g. ``GenericCloud`` (templated)
    :param summary: prepare_compose's summary (release, top); fills release and compose (templated)
    :param release: release profile name, e.g. ``el9`` (templated)
    :param compose: compose id or the compose's top directory (templated)
    :param aws_conn_id: Airflow AWS connection; default RELENG_S3_CONN_ID
    :param bucket: bucket; default RELENG_S3_BUCKET (templated)
    """

    template_fields = ("arch", "image_type", "summary", "release", "compose", "bucket")
    ui_color = "#e3eefc"

    def __init__(self, *, arch: str, image_type: str, summary: Mapping | None = None, release: str | None = None,
                 compose: str | None = None, aws_conn_id: str | None = None, bucket: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.arch = arch
        self.image_type = image_type
        self.summary = summary
        self.release = release
        self.compose = compose
        self.aws_conn_id = aws_conn_id
        self.bucket = bucket

    def execute(self, context: Context) -> dict:
        layout = resolve_compose(self.summary, self.release, self.compose)
        profile = layout.profile
        try:
            image = iso.cloud_image(profile, self.image_type, self.arch)
        except iso.IsoInputError as exc:
            raise AirflowFailException(str(exc)) from None
        bucket = self.bucket or settings().s3_bucket
        hook = S3Hook(aws_conn_id=self.aws_conn_id or settings().s3_conn_id)
        prefix = s3keys.cloud_image_prefix(profile.revision, self.arch)
        keys = [obj["Key"] for obj in hook.iter_file_metadata(prefix=prefix, bucket_name=bucket)]
        chosen, missing = iso.select_cloud_builds(profile, image, self.arch, keys)
        self.log.info("s3://%s/%s: %d objects; chosen: %s", bucket, prefix, len(keys),
                      ", ".join(b.key for b in chosen.values()) or "none")
        if missing:
            names = ", ".join(iso.cloud_kind(image.type, v) for v in missing)
            raise AirflowFailException(
                f"no {image.format} upload of {names} for {self.arch} under s3://{bucket}/{prefix} "
                f"(expected <name>/<epoch>/<name>.{image.format} with name "
                f"{profile.shortname}-{profile.major}-<Type>[-<Variant>]-{profile.revision}-<YYYYMMDD>.<build>."
                f"{self.arch}); build and upload it, or drop it from this compose"
                f"{' (failable: the compose finishes incomplete)' if image.failable else ''}")
        files = []
        for build in chosen.values():
            files.append(self._pull(hook, bucket, layout, image, build))
        return {"arch": self.arch, "type": image.type, "files": files}

    def _pull(self, hook: S3Hook, bucket: str, layout: ComposeLayout, image: CloudImage, build: iso.CloudBuild) -> str:
        obj = hook.get_key(build.key, bucket)
        expected = (obj.metadata or {}).get(s3keys.CHECKSUM_METADATA)
        if not expected:
            raise AirflowFailException(
                f"s3://{bucket}/{build.key} has no {s3keys.CHECKSUM_METADATA!r} metadata, so the download cannot be "
                f"verified; re-upload it with --metadata {s3keys.CHECKSUM_METADATA}=<hex digest>")
        final = layout.work_images(self.arch) / build.filename
        digest = iso.local_cloud_digest(final, obj.content_length)
        if digest == expected.lower():
            self.log.info("%s already downloaded and verified; keeping it", final)
            iso.install_cloud_image(layout, image, build, self.arch, final, digest)
            return final.name
        partial_dir = iso.cloud_partial_dir(layout, self.arch)
        partial_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=partial_dir, prefix=f".{build.filename}.", delete=False) as f:
            tmp = Path(f.name)
        try:
            self.log.info("downloading s3://%s/%s (%.1f MiB)", bucket, build.key, obj.content_length / 2**20)
            with open(tmp, "wb") as f:
                obj.download_fileobj(f, Config=hook.transfer_config,
                                     Callback=_Progress(self.log, build.filename, obj.content_length))
            try:
                digest = iso.verify_cloud_download(tmp, build.key, expected)
            except iso.IsoInputError as exc:
                raise AirflowFailException(str(exc)) from None
            names = iso.install_cloud_image(layout, image, build, self.arch, tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
            try:
                partial_dir.rmdir()  # only when empty: another variant's download may still use it
            except OSError:
                pass
        self.log.info("%s verified (sha256 %s); wrote %s", build.filename, digest, ", ".join(names[1:]) or "no links")
        return final.name
