"""A local S3-compatible server for tests (moto), on loopback only.

`LocalS3` starts moto's threaded server on a free 127.0.0.1 port and gives
the environment a subprocess needs to reach it through tensorflow-io's s3
filesystem (`env`), and a boto3 client for setting up and checking buckets.

tensorflow-io 0.37.1 reads `S3_ENDPOINT` (a full URL: with `http://` it
talks plain HTTP; there is no S3_USE_HTTPS switch in tensorflow-io, unlike
the old TensorFlow s3 filesystem) and the AWS SDK's usual
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_REGION`. Credentials
must be set (any value for moto); `AWS_EC2_METADATA_DISABLED` keeps the
SDK from looking for instance credentials elsewhere.
"""

from __future__ import annotations

import logging
import os
import socket

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalS3:
    """Context manager: a moto S3 server on 127.0.0.1 while inside."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None
        self.client = None

    def __enter__(self) -> "LocalS3":
        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(
            ip_address="127.0.0.1", port=self.port, verbose=False
        )
        self._server.start()
        self.client = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus what tensorflow-io's s3 needs for this server."""
        env = dict(os.environ)
        env.update(
            S3_ENDPOINT=self.endpoint,
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_REGION=REGION,
            AWS_EC2_METADATA_DISABLED="true",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY",
                     "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(name, None)
        return env

    def create_bucket(self, name: str) -> None:
        self.client.create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        found = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for o in found.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
