"""Artifact stores: where model artifacts live, addressed by URI and identified by their sha256.

One protocol, `ArtifactStore`, with one implementation per URI scheme (`local` for `file://` and
`pvc://`, `s3` for `s3://`), chosen from an explicit table (`SCHEMES`); an unknown or not yet
supported scheme (`gs://`) is an error that says so, never a fallback. Every read checks the
digest, because the digest, not the URI, is the artifact's identity, and every transfer streams
(`transfer`): the registry verifies and a server downloads a 100 GB artifact in a few MiB of
memory.

This package is a leaf: the registry, the CLI and the runtimes use it, and it imports nothing of
Kiln, so a model server verifies what it loads with the same code the registry validated with.
"""

from __future__ import annotations

from kiln.artifacts.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    DigestMismatchError,
    StoreUnavailableError,
    UnsafeURIError,
    UnsupportedURIError,
)
from kiln.artifacts.s3 import S3Settings, Written
from kiln.artifacts.schemes import SCHEMES, ArtifactStore, Settings, WritableStore, store_for
from kiln.artifacts.transfer import cached, download_verified, sha256_of, verify, write
from kiln.artifacts.uris import CHUNK_SIZE

__all__ = [
    "CHUNK_SIZE",
    "SCHEMES",
    "ArtifactError",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "DigestMismatchError",
    "S3Settings",
    "Settings",
    "StoreUnavailableError",
    "UnsafeURIError",
    "UnsupportedURIError",
    "WritableStore",
    "Written",
    "cached",
    "download_verified",
    "sha256_of",
    "store_for",
    "verify",
    "write",
]
