"""Moving artifacts: every read and write streams in chunks and digests the bytes as they flow, so
memory stays bounded whatever the artifact's size, and nothing unverified is left where a reader
would take it for the artifact."""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
from collections.abc import Iterable

from kiln.artifacts import schemes, uris
from kiln.artifacts.errors import DigestMismatchError, UnsupportedURIError
from kiln.artifacts.s3 import Written


def sha256_of(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def verify(uri: str, sha256: str, settings: schemes.Settings, namespace: str | None = None) -> int:
    """Read the whole artifact and check its digest; its size in bytes. DigestMismatchError (or
    another ArtifactError) when it is not the artifact the digest names."""
    digest, size = hashlib.sha256(), 0
    for chunk in schemes.store_for(uri, settings, namespace).chunks(uri):
        digest.update(chunk)
        size += len(chunk)
    if digest.hexdigest() != sha256:
        raise DigestMismatchError(uri, sha256, digest.hexdigest())
    return size


def download_verified(
    uri: str, sha256: str, destination: pathlib.Path, settings: schemes.Settings, namespace: str | None = None
) -> None:
    """Copy the artifact to `destination` through a temporary file beside it, renamed into place
    only when its sha256 matches; on a mismatch (or any failure) the temporary file is deleted."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(descriptor, "wb") as stream:
            for chunk in schemes.store_for(uri, settings, namespace).chunks(uri):
                digest.update(chunk)
                stream.write(chunk)
            stream.flush()
            os.fsync(stream.fileno())
        if digest.hexdigest() != sha256:
            raise DigestMismatchError(uri, sha256, digest.hexdigest())
        os.replace(temporary, destination)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


def cached(
    uri: str, sha256: str, cache_dir: pathlib.Path, settings: schemes.Settings, namespace: str | None = None
) -> pathlib.Path:
    """The verified artifact as a file in `cache_dir`, named by its digest: downloaded when it is
    not there yet. A file already there is digested again before it is trusted (a container
    restarted over the same emptyDir reads its disk, not the network); one that no longer matches
    is replaced."""
    path = cache_dir / sha256
    if path.is_file() and _sha256_of_file(path) == sha256:
        return path
    path.unlink(missing_ok=True)
    download_verified(uri, sha256, path, settings, namespace)
    return path


def _sha256_of_file(path: pathlib.Path) -> str:
    with path.open("rb") as stream:
        return sha256_of(iter(lambda: stream.read(uris.CHUNK_SIZE), b""))


def write(uri: str, source: pathlib.Path | bytes, settings: schemes.Settings) -> Written:
    """Upload `source` to `uri`; what was sent, digested as it flowed."""
    store = schemes.store_for(uri, settings)
    if not isinstance(store, schemes.WritableStore):
        scheme, _ = uris.split(uri)
        raise UnsupportedURIError(f"{uri}: {scheme}:// artifacts are written through a mounted volume, not uploaded")
    return store.write(uri, source)
