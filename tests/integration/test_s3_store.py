"""The s3:// store against a real S3 protocol server (moto's server mode, a process on loopback):
uploads (multipart when large) and streamed reads digested as the bytes flow, downloads that land
only when their digest matches, the registry's ArtifactVerified check, HTTPS with a private CA, and
clear messages naming the setting when credentials are missing, the endpoint is wrong or its
certificate is not trusted. No secret reaches a message."""

from __future__ import annotations

import hashlib
import pathlib
import re
from collections.abc import Iterator

import pytest
import s3_server

from kiln import artifacts
from kiln.api import modelversion
from kiln.controllers import modelversion as modelversion_controller
from kiln.registry import observed

BUCKET = "models"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3_server.S3Server]:
    with s3_server.s3_server(tmp_path_factory.mktemp("s3")) as running:
        running.create_bucket(BUCKET)
        yield running


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_large_artifact_is_uploaded_in_parts_and_streamed_back_verified(server: s3_server.S3Server) -> None:
    data = bytes(range(256)) * ((20 << 20) // 256)  # 20 MiB: three 8 MiB parts
    uri = f"s3://{BUCKET}/iris/2.0.0/model.skops"
    written = artifacts.write(uri, data, server.settings())
    assert (written.sha256, written.size) == (digest(data), len(data))
    assert server.parts_of(BUCKET, "iris/2.0.0/model.skops") == 3
    chunks = list(artifacts.store_for(uri, server.settings()).chunks(uri))
    assert max(len(chunk) for chunk in chunks) <= 2 * artifacts.CHUNK_SIZE
    assert b"".join(chunks) == data
    assert artifacts.verify(uri, digest(data), server.settings()) == len(data)


def test_a_file_is_uploaded_from_disk_and_a_small_one_in_one_request(
    server: s3_server.S3Server, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(b"a small model")
    written = artifacts.write(f"s3://{BUCKET}/small/model.skops", path, server.settings())
    assert written.sha256 == digest(b"a small model")
    assert server.parts_of(BUCKET, "small/model.skops") == 0
    assert server.get(BUCKET, "small/model.skops") == b"a small model"


def test_a_download_lands_beside_its_destination_only_when_its_digest_matches(
    server: s3_server.S3Server, tmp_path: pathlib.Path
) -> None:
    server.put(BUCKET, "download/model.skops", b"the model")
    uri, destination = f"s3://{BUCKET}/download/model.skops", tmp_path / "cache" / "model.skops"
    artifacts.download_verified(uri, digest(b"the model"), destination, server.settings())
    assert destination.read_bytes() == b"the model"

    server.put(BUCKET, "download/model.skops", b"other bytes under the same key")
    with pytest.raises(artifacts.DigestMismatchError) as refused:
        artifacts.download_verified(uri, digest(b"the model"), tmp_path / "cache" / "again", server.settings())
    assert str(refused.value) == (
        f"the sha256 of {uri} is {digest(b'other bytes under the same key')}, "
        f"not the {digest(b'the model')} the ModelVersion pins"
    )
    assert sorted(path.name for path in destination.parent.iterdir()) == ["model.skops"]


def test_the_cache_downloads_once(server: s3_server.S3Server, tmp_path: pathlib.Path) -> None:
    server.put(BUCKET, "cached/model.skops", b"cached model")
    uri = f"s3://{BUCKET}/cached/model.skops"
    first = artifacts.cached(uri, digest(b"cached model"), tmp_path, server.settings())
    server.client().delete_object(Bucket=BUCKET, Key="cached/model.skops")
    assert artifacts.cached(uri, digest(b"cached model"), tmp_path, server.settings()) == first
    assert first.read_bytes() == b"cached model"


def check(server: s3_server.S3Server, uri: str, sha256: str, **environ: str) -> observed.ArtifactCheck:
    artifact = modelversion.Artifact(uri=uri, sha256=sha256)
    return modelversion_controller.check_artifact(artifact, "ml", server.settings(**environ), timeout=30)


def test_the_registry_verifies_an_s3_artifact_by_its_digest(server: s3_server.S3Server) -> None:
    server.put(BUCKET, "registry/model.skops", b"registered model")
    uri = f"s3://{BUCKET}/registry/model.skops"
    verified = check(server, uri, digest(b"registered model"))
    assert verified == observed.ArtifactCheck(
        observed.ArtifactOutcome.VERIFIED, f"{uri} has sha256 {digest(b'registered model')} (16 bytes)"
    )


def test_the_registry_refuses_a_tampered_object_naming_the_uri_and_both_digests(server: s3_server.S3Server) -> None:
    server.put(BUCKET, "tampered/model.skops", b"swapped in later")
    uri = f"s3://{BUCKET}/tampered/model.skops"
    refused = check(server, uri, digest(b"what was registered"))
    assert refused.outcome is observed.ArtifactOutcome.MISMATCH
    assert uri in refused.message
    assert digest(b"swapped in later") in refused.message
    assert digest(b"what was registered") in refused.message


def test_the_registry_refuses_an_object_that_does_not_exist(server: s3_server.S3Server) -> None:
    uri = f"s3://{BUCKET}/absent/model.skops"
    missing = check(server, uri, digest(b"x"))
    assert missing.outcome is observed.ArtifactOutcome.NOT_FOUND
    assert missing.message.startswith(f"{uri}: no such object (or bucket) in the store")
    other_bucket = check(server, "s3://no-such-bucket/model.skops", digest(b"x"))
    assert other_bucket.outcome is observed.ArtifactOutcome.NOT_FOUND


def test_missing_credentials_name_the_settings(server: s3_server.S3Server) -> None:
    settings = artifacts.Settings.from_environment({"AWS_ENDPOINT_URL": server.endpoint})
    artifact = modelversion.Artifact(uri=f"s3://{BUCKET}/registry/model.skops", sha256=digest(b"x"))
    unreachable = modelversion_controller.check_artifact(artifact, "ml", settings, timeout=30)
    assert unreachable.outcome is observed.ArtifactOutcome.UNREACHABLE
    assert "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in unreachable.message
    assert "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (IRSA)" in unreachable.message


def test_a_wrong_endpoint_is_named_with_its_setting(server: s3_server.S3Server) -> None:
    nowhere = f"http://127.0.0.1:{s3_server.free_port()}"
    unreachable = check(server, f"s3://{BUCKET}/registry/model.skops", digest(b"x"), AWS_ENDPOINT_URL=nowhere)
    assert unreachable.outcome is observed.ArtifactOutcome.UNREACHABLE
    assert re.search(rf"the endpoint {re.escape(nowhere)} \(AWS_ENDPOINT_URL\) could not be used", unreachable.message)
    with pytest.raises(artifacts.StoreUnavailableError, match=r"\(AWS_ENDPOINT_URL\) could not be used"):
        artifacts.write(f"s3://{BUCKET}/x", b"x", server.settings(AWS_ENDPOINT_URL=nowhere))


def test_no_message_shows_the_secret(server: s3_server.S3Server, tmp_path: pathlib.Path) -> None:
    nowhere = f"http://127.0.0.1:{s3_server.free_port()}"
    messages = [
        check(server, f"s3://{BUCKET}/absent", digest(b"x")).message,
        check(server, f"s3://{BUCKET}/x", digest(b"x"), AWS_ENDPOINT_URL=nowhere).message,
        check(server, f"s3://{BUCKET}/x", digest(b"x"), AWS_ACCESS_KEY_ID="").message,
        repr(server.settings()),
    ]
    assert all(s3_server.SECRET_ACCESS_KEY not in message for message in messages), messages


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3_server.S3Server]:
    with s3_server.s3_server(tmp_path_factory.mktemp("s3-tls"), tls=True) as running:
        running.create_bucket(BUCKET)
        yield running


def test_an_endpoint_behind_a_private_ca_is_trusted_through_aws_ca_bundle(tls_server: s3_server.S3Server) -> None:
    uri = f"s3://{BUCKET}/tls/model.skops"
    assert tls_server.endpoint.startswith("https://")
    written = artifacts.write(uri, b"over https", tls_server.settings())
    assert artifacts.verify(uri, written.sha256, tls_server.settings()) == len(b"over https")

    with pytest.raises(artifacts.StoreUnavailableError) as untrusted:
        artifacts.verify(uri, written.sha256, tls_server.settings(AWS_CA_BUNDLE=""))
    assert "its TLS certificate is not trusted here: name the CA's PEM file in AWS_CA_BUNDLE" in str(untrusted.value)
    with pytest.raises(artifacts.StoreUnavailableError, match=re.escape("AWS_CA_BUNDLE /absent/ca.pem cannot be read")):
        artifacts.verify(uri, written.sha256, tls_server.settings(AWS_CA_BUNDLE="/absent/ca.pem"))
