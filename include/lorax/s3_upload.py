"""Upload one file to S3 with its SHA-256 in the object metadata, verify the upload, print the result.

Usage: python3 s3_upload.py --arch ARCH --bucket BUCKET --key KEY FILE

Run by build-lorax.sh, in the lorax pod (the image's python3 with boto3; EL8 images have Python 3.6,
so this file avoids newer syntax) and on the Airflow worker. Credentials come from the usual AWS
variables; AWS_ENDPOINT_URL is passed to boto3 explicitly because older boto3 releases ignore it.

After the upload a HEAD request must show the same size and ``sha256`` metadata (the name
releng.core.s3keys.CHECKSUM_METADATA), otherwise the exit status is 1. On success the only stdout
line is the JSON {"arch", "key", "sha256", "size"}; progress goes to stderr.
"""

import argparse
import hashlib
import json
import os
import sys
import threading
import time

CHECKSUM_METADATA = "sha256"  # releng.core.s3keys.CHECKSUM_METADATA; a test keeps them equal
CHUNK = 4 * 1024 * 1024
PROGRESS_EVERY = 10.0  # seconds between progress lines


def log(message):
    print("s3_upload: " + message, file=sys.stderr, flush=True)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        chunk = f.read(CHUNK)
        while chunk:
            digest.update(chunk)
            chunk = f.read(CHUNK)
    return digest.hexdigest()


class Progress:
    """boto3 transfer callback: a line every PROGRESS_EVERY seconds with bytes, percent and rate."""

    def __init__(self, size):
        self.size = size
        self.done = 0
        self.started = time.monotonic()
        self.last = self.started
        self.lock = threading.Lock()

    def __call__(self, amount):
        with self.lock:
            self.done += amount
            now = time.monotonic()
            if now - self.last >= PROGRESS_EVERY or self.done >= self.size:
                self.last = now
                rate = self.done / max(now - self.started, 1e-6) / 1e6
                percent = 100.0 * self.done / self.size if self.size else 100.0
                log(f"uploaded {self.done} of {self.size} bytes ({percent:.0f} percent, {rate:.1f} MB/s)")


def client():
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("file")
    args = parser.parse_args(argv)

    try:
        size = os.stat(args.file).st_size
    except OSError as exc:
        log(f"ERROR: cannot read {args.file}: {exc}")
        return 1
    started = time.monotonic()
    digest = sha256_of(args.file)
    log(f"sha256 {digest} of {args.file} ({size} bytes, {time.monotonic() - started:.1f} s)")

    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"s3://{args.bucket}/{args.key}"
    s3 = client()
    started = time.monotonic()
    try:
        s3.upload_file(args.file, args.bucket, args.key,
                       ExtraArgs={"Metadata": {CHECKSUM_METADATA: digest}},
                       Config=TransferConfig(multipart_chunksize=64 * 1024 * 1024),
                       Callback=Progress(size))
        head = s3.head_object(Bucket=args.bucket, Key=args.key)
    except (BotoCoreError, ClientError) as exc:
        log(f"ERROR: upload to {where} failed: {exc}; check the S3 credentials, endpoint and bucket")
        return 1
    elapsed = max(time.monotonic() - started, 1e-6)
    got_size = head.get("ContentLength")
    got_digest = head.get("Metadata", {}).get(CHECKSUM_METADATA)
    if got_size != size or got_digest != digest:
        log(f"ERROR: {where} does not match the upload: size {got_size} (expected {size}), "
            f"{CHECKSUM_METADATA} metadata {got_digest} (expected {digest}); retry the task")
        return 1
    log(f"uploaded {where} ({size} bytes in {elapsed:.1f} s, {size / elapsed / 1e6:.1f} MB/s), "
        "verified size and sha256 metadata")
    print(json.dumps({"arch": args.arch, "key": args.key, "sha256": digest, "size": size}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
