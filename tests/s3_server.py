"""A real S3-protocol server on loopback for tests: moto in server mode (``ThreadedMotoServer``).

moto's server mode is a werkzeug HTTP server speaking the S3 REST protocol in a daemon thread of
the test process, so boto3 goes through its real HTTP stack (SigV4 signing, urllib3 pool) and a
presigned URL can be fetched over a socket like Telnyx would. moto does not check signatures or
expiry: tests check the presigned URL's shape instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import boto3
import botocore.config
from moto.server import ThreadedMotoServer

__all__ = ["BUCKET", "CREDENTIALS", "MotoS3", "running_moto"]

BUCKET = "centralita-test-replies"
CREDENTIALS = ("testing", "testing")
REGION = "us-east-1"


@attrs.define(eq=False)
class MotoS3:
    endpoint_url: str
    server: ThreadedMotoServer
    client: Any  # an admin client for assertions (list, get)

    def stop(self) -> None:
        """Stop the server (S3 down); idempotent."""
        self.server.stop()

    def objects(self, prefix: str = "") -> list[dict[str, Any]]:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return list(listed.get("Contents", []))


@contextmanager
def running_moto(*, bucket: str | None = BUCKET) -> Iterator[MotoS3]:
    """moto's S3 on 127.0.0.1 (OS-assigned port) with ``bucket`` created."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=CREDENTIALS[0],
        aws_secret_access_key=CREDENTIALS[1],
        config=botocore.config.Config(signature_version="s3v4"))
    if bucket is not None:
        client.create_bucket(Bucket=bucket)
    try:
        yield MotoS3(endpoint_url=endpoint, server=server, client=client)
    finally:
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - already stopped by the test (S3 down)
            pass
        client.close()
