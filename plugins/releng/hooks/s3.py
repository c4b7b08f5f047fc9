"""The one way to reach the site's S3 bucket: the amazon provider's S3Hook on the configured connection."""

from __future__ import annotations

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from releng.core.settings import settings


def s3_hook(conn_id: str | None = None) -> S3Hook:
    """S3Hook for ``conn_id``, default the site's ``RELENG_S3_CONN_ID``."""
    return S3Hook(aws_conn_id=conn_id or settings().s3_conn_id)
