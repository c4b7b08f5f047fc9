"""pull_cloud_images: the newest cloud image builds of one (arch, type) from S3, verified."""

from __future__ import annotations

from collections.abc import Mapping

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from releng.core.settings import settings
from releng.hooks.s3 import s3_hook
from releng.operators.common import resolve_compose


class PullCloudImagesOperator(BaseOperator):
    """pull_cloud_images: the newest build of each variant of one cloud image type for one arch, verified.

    ``releng.core.compose.pull_cloud_images``: lists only ``buildimage-<revision>-<arch>/``; picks per
    variant the newest by (date, build number, upload epoch) compared as numbers; downloads into
    ``work/images/<arch>/``; checks the object's ``sha256`` metadata; writes ``.CHECKSUM`` files and the
    ``latest`` links. A missing variant, a missing or wrong checksum fail without retry; finalize_compose
    treats a failure as FINISHED_INCOMPLETE when the profile marks the type ``failable``.
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
        from releng.core.compose.pull_cloud_images import CloudImageError, pull_cloud_images
        layout = resolve_compose(self.summary, self.release, self.compose)
        bucket = self.bucket or settings().s3_bucket
        try:
            return pull_cloud_images(layout, self.image_type, self.arch, s3_hook(self.aws_conn_id), bucket, self.log)
        except CloudImageError as exc:
            raise AirflowFailException(str(exc)) from None
