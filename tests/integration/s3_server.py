"""A real S3 protocol server for tests: moto's server mode (`moto_server`) as a process on
127.0.0.1 at a free port, killed when the block ends (or by the kernel, when the test run dies).

Tests reach it with the standard AWS_* environment, as a pod reaches MinIO. Buckets are created
and objects tampered with through boto3 (which moto brings), not through the store under test.
"""

from __future__ import annotations

import contextlib
import ctypes
import pathlib
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
from polling import eventually

from kiln import artifacts

MOTO_SERVER = pathlib.Path(sys.executable).with_name("moto_server")
ACCESS_KEY_ID = "kiln-test-access-key"
SECRET_ACCESS_KEY = "kiln-test-secret-key-do-not-log"
REGION = "eu-west-1"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    log: pathlib.Path

    def env(self) -> dict[str, str]:
        """The AWS_* environment of a process that uses this server with static credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        }

    def settings(self, **environ: str) -> artifacts.Settings:
        return artifacts.Settings.from_environment({**self.env(), **environ})

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """Write an object behind the store's back (a tampering hand, or a file someone uploaded)."""
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def get(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def parts_of(self, bucket: str, key: str) -> int:
        """How many multipart parts the object was uploaded in (0 for a single PUT)."""
        head = self.client().head_object(Bucket=bucket, Key=key, PartNumber=1)
        return int(head.get("PartsCount", 0))


def _answers(endpoint: str) -> bool:
    try:
        return httpx.get(f"{endpoint}/moto-api/", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def s3_server(directory: pathlib.Path) -> Iterator[S3Server]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = directory / f"moto-server-{port}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (prctl only, no locks taken before exec)
        )
    try:
        eventually(lambda: process.poll() is None and _answers(endpoint), f"moto_server on {endpoint}", 30)
        yield S3Server(endpoint, log)
    finally:
        process.kill()
        process.wait(timeout=10)
