"""`s3://bucket/key`: artifacts in any S3-compatible object store (AWS S3, MinIO, Ceph RGW,
Cloudflare R2, the interoperability endpoint of Google Cloud Storage), through obstore.

Why obstore rather than boto3: obstore (Python bindings of the Rust `object_store` crate, which
Arrow, Polars and DataFusion read their data through) is one 16 MB wheel with no dependencies,
imports and builds a client in under 20 ms and adds about 12 MB to a process; boto3 with
botocore and s3transfer installs 34 MB of Python, takes about 210 ms and 41 MB for the same (both
measured on this project's machine). Its transfers run in Rust, outside the GIL: a GET body
arrives as a stream of chunks of the size we ask for, and a multipart upload sends its parts
concurrently. `tests/benchmarks/bench_artifacts.py` moves one object with both: obstore downloads
and digests it about twice as fast; uploads are about even, bound by the test server. boto3's
advantage, the whole AWS credential chain (profiles, SSO, config files), does not matter in a
pod, where credentials come from the environment (a Secret) or the pod's web identity (IRSA on
EKS), and object_store implements both.

Configuration is the standard AWS environment, read into `S3Settings`:

- `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`: the service, for anything but AWS itself
  (`http://minio.storage:9000`); plain `http://` is allowed only when the endpoint says so;
- `AWS_REGION` or `AWS_DEFAULT_REGION` (`us-east-1` when neither is set);
- credentials, one of: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (with `AWS_SESSION_TOKEN`
  for temporary ones), typically from a Secret; `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`,
  which EKS sets for a service account with an IAM role (IRSA), exchanged at STS
  (`AWS_ENDPOINT_URL_STS` to name another one); `AWS_CONTAINER_CREDENTIALS_FULL_URI` (EKS Pod
  Identity). With none of them the store refuses to start and names them: it never falls back to
  an instance metadata service, so a misconfigured pod fails with a reason instead of a timeout;
- `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true` for `bucket.host/key` requests; path-style
  (`host/bucket/key`), which MinIO and Ceph expect, is the default;
- `AWS_CA_BUNDLE`: a PEM file of the CA that signed a private endpoint's certificate (a MinIO
  behind your own CA), trusted beside the system's roots.

Secrets never reach a message, a log or a repr: errors carry the first line of what the service
answered (a URL and a status) and the names of settings, not their values.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import pathlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import obstore
import obstore.exceptions
import obstore.store

from kiln.artifacts import uris
from kiln.artifacts.errors import ArtifactError, ArtifactNotFoundError, StoreUnavailableError, UnsupportedURIError

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

DEFAULT_REGION = "us-east-1"
MIN_PART_SIZE = 8 << 20
"""The smallest multipart part (S3 wants at least 5 MiB); parts grow for objects over 80 GB."""
MAX_PARTS = 10_000
"""S3's limit on the parts of one upload."""
UPLOAD_CONCURRENCY = 4
"""Parts in flight at once: what an upload holds in memory is about this many parts."""
CREDENTIAL_SETTINGS = (
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (from a Secret), "
    "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (IRSA), or AWS_CONTAINER_CREDENTIALS_FULL_URI"
)


@dataclass(frozen=True)
class S3Settings:
    """The AWS_* environment, as read; `problem` says which setting is wrong, if one is."""

    endpoint: str | None = None
    endpoint_setting: str = "AWS_ENDPOINT_URL"
    """Which variable named the endpoint, for messages."""
    region: str = DEFAULT_REGION
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    web_identity_token_file: str | None = None
    role_arn: str | None = None
    role_session_name: str | None = None
    sts_endpoint: str | None = None
    container_credentials_uri: str | None = None
    container_token_file: str | None = None
    virtual_hosted_style: bool = False
    ca_bundle: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> S3Settings:
        def get(*names: str) -> str | None:
            return next((environ[name] for name in names if environ.get(name)), None)

        endpoint_setting = "AWS_ENDPOINT_URL_S3" if environ.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
        return cls(
            endpoint=get("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            endpoint_setting=endpoint_setting,
            region=get("AWS_REGION", "AWS_DEFAULT_REGION") or DEFAULT_REGION,
            access_key_id=get("AWS_ACCESS_KEY_ID"),
            secret_access_key=get("AWS_SECRET_ACCESS_KEY"),
            session_token=get("AWS_SESSION_TOKEN"),
            web_identity_token_file=get("AWS_WEB_IDENTITY_TOKEN_FILE"),
            role_arn=get("AWS_ROLE_ARN"),
            role_session_name=get("AWS_ROLE_SESSION_NAME"),
            sts_endpoint=get("AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"),
            container_credentials_uri=get("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            container_token_file=get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            virtual_hosted_style=(get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST") or "false").lower() in ("true", "1"),
            ca_bundle=get("AWS_CA_BUNDLE"),
        )

    @property
    def credential_source(self) -> str:
        """Where the credentials come from, by the settings that give them (never their values)."""
        if self.access_key_id:
            return "AWS_ACCESS_KEY_ID"
        if self.web_identity_token_file:
            return "AWS_WEB_IDENTITY_TOKEN_FILE"
        return "AWS_CONTAINER_CREDENTIALS_FULL_URI"

    @property
    def problem(self) -> str | None:
        """What keeps the store from being used, naming the setting; None when nothing does."""
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            return f"{self.endpoint_setting} must be an http:// or https:// URL, not {self.endpoint!r}"
        if bool(self.access_key_id) != bool(self.secret_access_key):
            present, missing = (
                ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
                if self.access_key_id
                else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
            )
            return f"{present} is set but {missing} is not; set both (from the same Secret)"
        if bool(self.web_identity_token_file) != bool(self.role_arn):
            return "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN go together (IRSA sets both); one is missing"
        if not (self.access_key_id or self.web_identity_token_file or self.container_credentials_uri):
            return f"no S3 credentials: set {CREDENTIAL_SETTINGS}"
        return None

    def config(self) -> S3Config:
        config: S3Config = {"region": self.region, "virtual_hosted_style_request": self.virtual_hosted_style}
        optional: dict[str, str | None] = {
            "endpoint": self.endpoint,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "session_token": self.session_token,
            "web_identity_token_file": self.web_identity_token_file,
            "role_arn": self.role_arn,
            "role_session_name": self.role_session_name,
            "aws_endpoint_url_sts": self.sts_endpoint if self.web_identity_token_file else None,
            "container_credentials_full_uri": self.container_credentials_uri,
            "container_authorization_token_file": self.container_token_file,
        }
        config.update({key: value for key, value in optional.items() if value})  # type: ignore[typeddict-item]
        return config

    def client_options(self) -> ClientConfig:
        """The HTTP client's options; StoreUnavailableError when AWS_CA_BUNDLE cannot be read."""
        options: ClientConfig = {
            "allow_http": bool(self.endpoint and self.endpoint.startswith("http://")),
            "connect_timeout": datetime.timedelta(seconds=5),
            # A stalled connection fails after a minute without bytes; a whole transfer, which may be
            # 100 GB, has no deadline of its own.
            "read_timeout": datetime.timedelta(seconds=60),
            "timeout": datetime.timedelta(hours=24),
        }
        if self.ca_bundle:
            try:
                options["root_certificate"] = pathlib.Path(self.ca_bundle).read_text()
            except (OSError, UnicodeDecodeError) as error:
                raise StoreUnavailableError(f"AWS_CA_BUNDLE {self.ca_bundle} cannot be read: {error}") from None
        return options


RETRIES: RetryConfig = {
    "max_retries": 3,
    "retry_timeout": datetime.timedelta(seconds=60),
    "backoff": {"init_backoff": datetime.timedelta(milliseconds=100), "max_backoff": datetime.timedelta(seconds=5)},
}
"""A wrong endpoint answers within a second or two, not after obstore's default three minutes."""


@dataclass(frozen=True)
class Written:
    """What an upload sent, digested while it flowed."""

    sha256: str
    size: int


def part_size(size: int) -> int:
    """The multipart part size for an object of `size` bytes: at least MIN_PART_SIZE, and large
    enough that the object fits in MAX_PARTS parts, in whole MiB."""
    needed = math.ceil(size / MAX_PARTS)
    return max(MIN_PART_SIZE, math.ceil(needed / (1 << 20)) << 20)


def bucket_and_key(uri: str) -> tuple[str, str]:
    _, rest = uris.split(uri)
    bucket, _, key = rest.partition("/")
    if not bucket or not key or key.endswith("/"):
        raise UnsupportedURIError(f"{uri} names no object; an S3 artifact URI is s3://bucket/key")
    return bucket, key


@dataclass(frozen=True)
class S3Store:
    """`s3://bucket/key`, through the S3 API the settings describe."""

    settings: S3Settings

    def _store(self, uri: str) -> tuple[obstore.store.S3Store, str]:
        bucket, key = bucket_and_key(uri)
        problem = self.settings.problem
        if problem is not None:
            raise StoreUnavailableError(f"{uri} cannot be read or written here: {problem}")
        try:
            store = obstore.store.S3Store(
                bucket,
                config=self.settings.config(),
                client_options=self.settings.client_options(),
                retry_config=RETRIES,
            )
        except StoreUnavailableError as error:
            raise StoreUnavailableError(f"{uri} cannot be read or written here: {error}") from None
        except Exception as error:
            raise self._translated(uri, error) from None
        return store, key

    def chunks(self, uri: str) -> Iterator[bytes]:
        store, key = self._store(uri)
        try:
            result = obstore.get(store, key)
        except Exception as error:
            raise self._translated(uri, error) from None
        return self._stream(uri, result)

    def _stream(self, uri: str, result: Any) -> Iterator[bytes]:
        try:
            for chunk in result.stream(min_chunk_size=uris.CHUNK_SIZE):
                yield bytes(chunk)
        except Exception as error:
            raise self._translated(uri, error) from None

    def write(self, uri: str, source: pathlib.Path | bytes) -> Written:
        """Upload `source` (a file, or bytes) to `uri`, multipart when it is larger than one part;
        the object appears whole or not at all."""
        store, key = self._store(uri)
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        digest = hashlib.sha256()
        chunk_size = part_size(size)

        def digested() -> Iterator[bytes]:
            for chunk in _chunks_of(source):
                digest.update(chunk)
                yield chunk

        try:
            if size <= chunk_size:
                obstore.put(store, key, b"".join(digested()), use_multipart=False)
            else:
                obstore.put(store, key, digested(), chunk_size=chunk_size, max_concurrency=UPLOAD_CONCURRENCY)
        except ArtifactError:
            raise
        except Exception as error:
            raise self._translated(uri, error) from None
        return Written(digest.hexdigest(), size)

    def _translated(self, uri: str, error: Exception) -> ArtifactError:
        """The obstore error as an ArtifactError whose message names the settings to look at."""
        answer = str(error).split("\n", 1)[0].strip()
        if isinstance(error, FileNotFoundError | obstore.exceptions.NotFoundError):
            return ArtifactNotFoundError(f"{uri}: no such object (or bucket) in the store: {answer}")
        if isinstance(error, obstore.exceptions.PermissionDeniedError | obstore.exceptions.UnauthenticatedError):
            return StoreUnavailableError(
                f"{uri}: the store refused the credentials of {self.settings.credential_source}: {answer}"
            )
        where = (
            f"the endpoint {self.settings.endpoint} ({self.settings.endpoint_setting})"
            if self.settings.endpoint
            else f"AWS S3 in region {self.settings.region} (AWS_REGION; set AWS_ENDPOINT_URL for another service)"
        )
        if "InvalidCertificate" in str(error):
            answer += "; its TLS certificate is not trusted here: name the CA's PEM file in AWS_CA_BUNDLE"
        return StoreUnavailableError(f"{uri}: {where} could not be used: {answer}")


def _chunks_of(source: pathlib.Path | bytes) -> Iterator[bytes]:
    if isinstance(source, bytes):
        view = memoryview(source)
        for start in range(0, len(view), uris.CHUNK_SIZE):
            yield bytes(view[start : start + uris.CHUNK_SIZE])
        return
    with source.open("rb") as stream:
        while chunk := stream.read(uris.CHUNK_SIZE):
            yield chunk
