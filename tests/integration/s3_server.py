"""A real S3 protocol server for tests: moto's server mode (`moto_server`) as a process on
127.0.0.1 at a free port, killed when the block ends (or by the kernel, when the test run dies).
With `tls`, it serves HTTPS with a certificate from a CA made for the run, as a MinIO behind a
private CA does.

Tests reach it with the standard AWS_* environment, as a pod reaches MinIO. Buckets are created
and objects tampered with through boto3 (which moto brings), not through the store under test.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import ipaddress
import pathlib
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
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
    ca_bundle: pathlib.Path | None = None
    """The PEM of the CA that signed the server's certificate, when it serves HTTPS."""

    def env(self) -> dict[str, str]:
        """The AWS_* environment of a process that uses this server with static credentials."""
        env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        }
        if self.ca_bundle is not None:
            env["AWS_CA_BUNDLE"] = str(self.ca_bundle)
        return env

    def settings(self, **environ: str) -> artifacts.Settings:
        return artifacts.Settings.from_environment({**self.env(), **environ})

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            verify=str(self.ca_bundle) if self.ca_bundle else None,
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


def _answers(endpoint: str, ca_bundle: pathlib.Path | None) -> bool:
    try:
        verify = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        return httpx.get(f"{endpoint}/moto-api/", timeout=1, verify=verify).is_success
    except httpx.TransportError:
        return False


def _certificates(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A CA, and a certificate for 127.0.0.1 that it signed, valid for a day: (ca, cert, key) PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Kiln test CA")])

    def certificate(subject: x509.Name, public_key: Any, serial: int) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca = (
        certificate(ca_name, ca_key.public_key(), 1)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    server = (
        certificate(server_name, key.public_key(), 2)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return paths


@contextlib.contextmanager
def s3_server(directory: pathlib.Path, *, tls: bool = False) -> Iterator[S3Server]:
    port = free_port()
    command = [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)]
    ca_bundle = None
    if tls:
        ca_bundle, cert, key = _certificates(directory)
        command += ["--ssl", "--ssl-cert", str(cert), "--ssl-key", str(key)]
    endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    log = directory / f"moto-server-{port}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (prctl only, no locks taken before exec)
        )
    try:
        eventually(lambda: process.poll() is None and _answers(endpoint, ca_bundle), f"moto_server on {endpoint}", 30)
        yield S3Server(endpoint, log, ca_bundle)
    finally:
        process.kill()
        process.wait(timeout=10)
