"""Which store reads a URI: the settings of every store, and the explicit table of schemes."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from kiln.artifacts import local, s3, uris
from kiln.artifacts.errors import UnsupportedURIError


class ArtifactStore(Protocol):
    """Reads artifacts of one URI scheme."""

    def chunks(self, uri: str) -> Iterator[bytes]:
        """The artifact's bytes, in chunks of at most a few MiB; ArtifactError when it cannot be read."""
        ...


@runtime_checkable
class WritableStore(ArtifactStore, Protocol):
    """A store the trainer uploads to (the local stores are written through their mounts instead)."""

    def write(self, uri: str, source: pathlib.Path | bytes) -> s3.Written:
        """Store `source` at `uri`, whole or not at all; its digest and size, computed as it was sent."""
        ...


@dataclass(frozen=True)
class Settings:
    """Where the local stores find their roots, and how the object stores are reached."""

    file_root: pathlib.Path = pathlib.Path("/")
    pvc_root: pathlib.Path | None = None
    pvc_layout: Literal["namespaced", "mounted"] = "namespaced"
    s3: s3.S3Settings = field(default_factory=s3.S3Settings)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """KILN_FILE_ROOT, KILN_PVC_ROOT, KILN_PVC_LAYOUT (`namespaced` or `mounted`) and the AWS_*
        variables of `kiln.artifacts.s3`. A wrong AWS_* setting is reported when an s3:// artifact
        is read, so a process that never reads one is not stopped by it."""
        layout = environ.get("KILN_PVC_LAYOUT", "namespaced")
        if layout not in ("namespaced", "mounted"):
            raise ValueError(f"KILN_PVC_LAYOUT must be namespaced or mounted, not {layout!r}")
        pvc_root = environ.get("KILN_PVC_ROOT")
        return cls(
            file_root=pathlib.Path(environ.get("KILN_FILE_ROOT", "/")),
            pvc_root=pathlib.Path(pvc_root) if pvc_root else None,
            pvc_layout="mounted" if layout == "mounted" else "namespaced",
            s3=s3.S3Settings.from_environment(environ),
        )


SCHEMES: Mapping[str, Callable[[Settings, str | None], ArtifactStore]] = {
    "file": lambda settings, _namespace: local.FileStore(settings.file_root),
    "pvc": lambda settings, namespace: local.PvcStore(settings.pvc_root, namespace, settings.pvc_layout),
    "s3": lambda settings, _namespace: s3.S3Store(settings.s3),
}
"""The store of each supported URI scheme, given the settings and the namespace of the reader."""


def store_for(uri: str, settings: Settings, namespace: str | None = None) -> ArtifactStore:
    """The store that reads `uri`; UnsupportedURIError names the schemes there are."""
    scheme, _ = uris.split(uri)
    factory = SCHEMES.get(scheme)
    if factory is None:
        raise UnsupportedURIError(f"{uri}: no artifact store for {scheme}:// yet; supported: {', '.join(SCHEMES)}")
    return factory(settings, namespace)
