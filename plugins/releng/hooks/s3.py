"""The one way to reach the site's S3 bucket: the amazon provider's S3Hook on the configured connection.

The amazon provider (boto3, botocore) is imported when a task asks for the hook, not when a DAG file
that uses an S3 operator is parsed: it is most of a parse's import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from releng.core.settings import settings

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook


def s3_hook(conn_id: str | None = None) -> S3Hook:
    """S3Hook for ``conn_id``, default the site's ``RELENG_S3_CONN_ID``."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id or settings().s3_conn_id)
