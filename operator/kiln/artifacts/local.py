"""The local stores: `file://` and `pvc://` artifacts, read from directories on this machine.

- `file:///abs/path` reads below a file root (`/` unless `KILN_FILE_ROOT` says otherwise).
- `pvc://claim/path` reads below the claim's directory. Outside a pod the claims of namespace
  `ns` live in `$KILN_PVC_ROOT/<ns>/<claim>` (the dev cluster's layout); inside a pod each claim is
  mounted at `$KILN_PVC_ROOT/<claim>` (`KILN_PVC_LAYOUT=mounted`).

A URI may never leave its root: a `..` segment is refused outright, and the path is resolved,
symlinks included, and must still lie within the root.
"""

from __future__ import annotations

import os
import pathlib
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from kiln.artifacts import uris
from kiln.artifacts.errors import ArtifactNotFoundError, UnsafeURIError, UnsupportedURIError

_CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


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
        while chunk := stream.read(uris.CHUNK_SIZE):
            yield chunk


@dataclass(frozen=True)
class FileStore:
    """`file:///abs/path`, below `root`."""

    root: pathlib.Path

    def chunks(self, uri: str) -> Iterator[bytes]:
        _, rest = uris.split(uri)
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
        _, rest = uris.split(uri)
        claim, _, path = rest.partition("/")
        claim_dir = self.claim_dir(claim, uri)
        if not claim_dir.is_dir():
            raise ArtifactNotFoundError(f"{uri}: claim {claim} has no directory at {claim_dir}")
        return _read_chunks(_contained(claim_dir, path, uri), uri)
