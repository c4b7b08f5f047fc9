"""The S3 side of the local stack: real SeaweedFS, fixture cloud images in the pipeline's bucket layout."""

from __future__ import annotations

import hashlib

import pytest

from dev import stack
from releng.core import s3keys


def test_key_layout():
    assert s3keys.lorax_key(9, "9.7", "aarch64", 1763900000) == "buildiso-9-arm64/1763900000/lorax-9.7-aarch64.tar.gz"
    name = s3keys.cloud_image_name("Rocky", 9, "GenericCloud", "Base", "9.7", "20251123", 0, "x86_64")
    assert name == "Rocky-9-GenericCloud-Base-9.7-20251123.0.x86_64"
    assert s3keys.cloud_image_key(name, "9.7", "x86_64", 1763900000, "qcow2") == (
        "buildimage-9.7-x86_64/Rocky-9-GenericCloud-Base-9.7-20251123.0.x86_64/1763900000/"
        "Rocky-9-GenericCloud-Base-9.7-20251123.0.x86_64.qcow2")
    assert s3keys.cloud_image_name("Rocky", 9, "RPI", None, "9.7", "20251123", 2, "aarch64") == \
        "Rocky-9-RPI-9.7-20251123.2.aarch64"
    assert s3keys.epoch_of("buildiso-9-arm64/1763900000/lorax-9.7-aarch64.tar.gz") == 1763900000
    assert s3keys.epoch_of("buildiso-9-arm64/lorax-9.7-aarch64.tar.gz") is None
    with pytest.raises(ValueError, match="unknown arch 'sparc'"):
        s3keys.lorax_prefix(9, "sparc")


def test_seeded_bucket_lists_the_fixtures_with_checksums(s3_server, el9):
    url, datadir = s3_server
    client = stack.s3_client(url, datadir)
    keys = stack.seed_s3(client, "releng-test", [el9], arches=["x86_64", "aarch64"], log=lambda _m: None)
    listed = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="releng-test",
                                                                   Prefix="buildimage-9.7-x86_64/"):
        listed += [o["Key"] for o in page.get("Contents", [])]
    assert sorted(listed) == sorted(k for k in keys if k.startswith("buildimage-9.7-x86_64/"))
    # every type/variant of the profile, two uploads each, for x86_64
    expected = sum(len(i.variants or (None,)) for i in el9.cloud_images.values()) * 2
    assert len(listed) == expected
    key = next(k for k in listed if "GenericCloud-Base" in k)
    obj = client.get_object(Bucket="releng-test", Key=key)
    body = obj["Body"].read()
    assert obj["Metadata"][s3keys.CHECKSUM_METADATA] == hashlib.sha256(body).hexdigest()
    assert body.startswith(b"FIXTURE CLOUD IMAGE")


def test_s3_requires_credentials(s3_server):
    import boto3
    from botocore.exceptions import ClientError

    url, _ = s3_server
    anonymous = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="nobody",
                             aws_secret_access_key="wrong")
    with pytest.raises(ClientError):
        anonymous.list_buckets()


def test_airflow_connection_points_at_the_server(s3_server, monkeypatch):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    url, datadir = s3_server
    monkeypatch.setenv("AIRFLOW_CONN_RELENG_S3", stack.s3_connection(url, datadir))
    hook = S3Hook(aws_conn_id="releng_s3")
    hook.create_bucket(bucket_name="releng-conn-test")
    hook.load_string("hello", key="a/b.txt", bucket_name="releng-conn-test")
    assert hook.list_keys(bucket_name="releng-conn-test", prefix="a/") == ["a/b.txt"]
