"""Artifact stores: where model artifacts live, addressed by URI and identified by their sha256.

One protocol, `ArtifactStore`, with one implementation per URI scheme, chosen from an explicit
table (`SCHEMES`); an unknown or not yet supported scheme (`s3://`, `gs://`) is an error that says
so, never a fallback. Every read checks the digest, because the digest, not the URI, is the
artifact's identity.

- `file:///abs/path` reads below a file root (`/` unless `KILN_FILE_ROOT` says otherwise).
- `pvc://claim/path` reads below the claim's directory. Outside a pod the claims of namespace
  `ns` live in `$KILN_PVC_ROOT/<ns>/<claim>` (the dev cluster's layout); inside a pod each claim is
  mounted at `$KILN_PVC_ROOT/<claim>` (`KILN_PVC_LAYOUT=mounted`).

A URI may never leave its root: a `..` segment is refused outright, and the path is resolved,
symlinks included, and must still lie within the root.

This module is a leaf: the registry, the CLI and the runtimes use it, and it imports nothing of
Kiln, so a model server can verify what it loads with the same code the registry validated with.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

CHUNK_SIZE = 1 << 20
_CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class ArtifactError(Exception):
    """Base of every artifact store error; the message names the URI and what is wrong."""


class UnsupportedURIError(ArtifactError):
    """The scheme has no store here, or the store is not configured on this machine."""


class UnsafeURIError(ArtifactError):
    """The URI climbs out of its root (`..`, a symlink) or names its root badly."""


class ArtifactNotFoundError(ArtifactError):
    """The store is reachable but holds nothing at the URI."""


class DigestMismatchError(ArtifactError):
    """The bytes read are not the artifact the digest names."""

    def __init__(self, uri: str, expected: str, actual: str) -> None:
        super().__init__(f"the sha256 of {uri} is {actual}, not the {expected} the ModelVersion pins")
        self.expected = expected
        self.actual = actual


class ArtifactStore(Protocol):
    """Reads artifacts of one URI scheme. `s3://` and `gs://` stores implement the same method."""

    def chunks(self, uri: str) -> Iterator[bytes]:
        """The artifact's bytes, in chunks; ArtifactError when it cannot be read."""
        ...


@dataclass(frozen=True)
class Settings:
    """Where the local stores find their roots."""

    file_root: pathlib.Path = pathlib.Path("/")
    pvc_root: pathlib.Path | None = None
    pvc_layout: Literal["namespaced", "mounted"] = "namespaced"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """KILN_FILE_ROOT, KILN_PVC_ROOT and KILN_PVC_LAYOUT (`namespaced` or `mounted`)."""
        layout = environ.get("KILN_PVC_LAYOUT", "namespaced")
        if layout not in ("namespaced", "mounted"):
            raise ValueError(f"KILN_PVC_LAYOUT must be namespaced or mounted, not {layout!r}")
        pvc_root = environ.get("KILN_PVC_ROOT")
        return cls(
            file_root=pathlib.Path(environ.get("KILN_FILE_ROOT", "/")),
            pvc_root=pathlib.Path(pvc_root) if pvc_root else None,
            pvc_layout="mounted" if layout == "mounted" else "namespaced",
        )


def _scheme_and_rest(uri: str) -> tuple[str, str]:
    scheme, separator, rest = uri.partition("://")
    if not separator or not scheme:
        raise UnsupportedURIError(f"{uri!r} is not an artifact URI such as file:///path or pvc://claim/path")
    return scheme, rest


def _contained(root: pathlib.Path, relative: str, uri: str, base: pathlib.Path | None = None) -> pathlib.Path:
    """The file `relative` names below `base` (the root itself unless given), which must lie within
    `root` once every symlink is resolved."""
    segments = [segment for segment in relative.split("/") if segment not in ("", ".")]
    if ".." in segments:
        raise UnsafeURIError(f"{uri} has a '..' segment; an artifact URI may not climb out of its root")
    if not segments:
        raise UnsafeURIError(f"{uri} names a directory, not a file")
    real_root = root.resolve()
    path = (base or real_root).joinpath(*segments).resolve()
    if not path.is_relative_to(real_root):
        raise UnsafeURIError(f"{uri} resolves to {path}, outside its root {real_root}")
    return path


def _read_chunks(path: pathlib.Path, uri: str) -> Iterator[bytes]:
    try:
        # O_NOFOLLOW: a symlink swapped in after the containment check is refused, not followed.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ArtifactNotFoundError(f"{uri}: no file at {path}") from None
    except OSError as error:
        raise UnsafeURIError(f"{uri}: {path} cannot be opened safely: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ArtifactNotFoundError(f"{uri}: {path} is not a file")
    with os.fdopen(descriptor, "rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            yield chunk


@dataclass(frozen=True)
class FileStore:
    """`file:///abs/path`, below `root`."""

    root: pathlib.Path

    def chunks(self, uri: str) -> Iterator[bytes]:
        _, rest = _scheme_and_rest(uri)
        host, _, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise UnsupportedURIError(f"{uri} names host {host!r}; file URIs are local: file:///abs/path")
        if not self.root.is_dir():
            raise UnsupportedURIError(f"{uri}: the file root {self.root} is not a directory here")
        return _read_chunks(_contained(self.root, path, uri, base=pathlib.Path("/")), uri)


@dataclass(frozen=True)
class PvcStore:
    """`pvc://claim/path`, below the claim's directory."""

    root: pathlib.Path | None
    namespace: str | None
    layout: Literal["namespaced", "mounted"]

    def claim_dir(self, claim: str, uri: str) -> pathlib.Path:
        if self.root is None:
            raise UnsupportedURIError(f"{uri}: KILN_PVC_ROOT is not set, so claims cannot be read here")
        if not _CLAIM_NAME.fullmatch(claim) or len(claim) > 253:
            raise UnsafeURIError(f"{uri}: {claim!r} is not a PersistentVolumeClaim name (a DNS-1123 subdomain)")
        if self.layout == "mounted":
            return self.root / claim
        if not self.namespace:
            raise UnsupportedURIError(f"{uri}: the namespace of the claim is not known")
        return self.root / self.namespace / claim

    def chunks(self, uri: str) -> Iterator[bytes]:
        _, rest = _scheme_and_rest(uri)
        claim, _, path = rest.partition("/")
        claim_dir = self.claim_dir(claim, uri)
        if not claim_dir.is_dir():
            raise ArtifactNotFoundError(f"{uri}: claim {claim} has no directory at {claim_dir}")
        return _read_chunks(_contained(claim_dir, path, uri), uri)


SCHEMES: Mapping[str, Callable[[Settings, str | None], ArtifactStore]] = {
    "file": lambda settings, _namespace: FileStore(settings.file_root),
    "pvc": lambda settings, namespace: PvcStore(settings.pvc_root, namespace, settings.pvc_layout),
}
"""The store of each supported URI scheme, given the settings and the namespace of the reader."""


def store_for(uri: str, settings: Settings, namespace: str | None = None) -> ArtifactStore:
    """The store that reads `uri`; UnsupportedURIError names the schemes there are."""
    scheme, _ = _scheme_and_rest(uri)
    factory = SCHEMES.get(scheme)
    if factory is None:
        raise UnsupportedURIError(f"{uri}: no artifact store for {scheme}:// yet; supported: {', '.join(SCHEMES)}")
    return factory(settings, namespace)


def sha256_of(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def verify(uri: str, sha256: str, settings: Settings, namespace: str | None = None) -> None:
    """Read the whole artifact and check its digest; DigestMismatchError (or another ArtifactError) if not."""
    actual = sha256_of(store_for(uri, settings, namespace).chunks(uri))
    if actual != sha256:
        raise DigestMismatchError(uri, sha256, actual)


def read_verified(uri: str, sha256: str, settings: Settings, namespace: str | None = None) -> bytes:
    """The artifact's bytes, only if they are the ones the digest names."""
    data = b"".join(store_for(uri, settings, namespace).chunks(uri))
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DigestMismatchError(uri, sha256, actual)
    return data
