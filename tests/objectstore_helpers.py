"""An S3 endpoint for tests: moto's server mode on a free loopback port.

moto is a stand-in for S3 (no S3-compatible server runs here): it speaks the same
HTTP API, including conditional puts and ranged gets, so the S3 backend is exercised
over real HTTP with the real client, but it is not Amazon's service.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
from moto.server import ThreadedMotoServer

from kernel.objectstore import S3Store

CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}


@contextmanager
def moto_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server running in a thread until the block ends."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_store(endpoint: str, prefix: str = "titles") -> S3Store:
    """A store on a fresh bucket of the moto server at ``endpoint``."""
    bucket = f"lm-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
    client.create_bucket(Bucket=bucket)
    return S3Store(bucket, prefix, client=client)
