"""What can go wrong with an artifact; every message names the URI and what is wrong.

```
ArtifactError
├── UnsupportedURIError     no store for the scheme, or the URI is not one
├── UnsafeURIError          the URI climbs out of its root or names its root badly
├── StoreUnavailableError   the store is not configured here (the message names the setting) or
│                           cannot be reached: not the artifact's fault
├── ArtifactNotFoundError   the store answers, and holds nothing at the URI
└── DigestMismatchError     the bytes are not the ones the digest names
```
"""

from __future__ import annotations


class ArtifactError(Exception):
    """Base of every artifact store error; the message names the URI and what is wrong."""


class UnsupportedURIError(ArtifactError):
    """The scheme has no store here, or the store is not configured on this machine."""


class UnsafeURIError(ArtifactError):
    """The URI climbs out of its root (`..`, a symlink) or names its root badly."""


class StoreUnavailableError(ArtifactError):
    """The store cannot be used from here: a setting is missing or wrong (the message names it),
    the credentials are refused, or the endpoint does not answer."""


class ArtifactNotFoundError(ArtifactError):
    """The store is reachable but holds nothing at the URI."""


class DigestMismatchError(ArtifactError):
    """The bytes read are not the artifact the digest names."""

    def __init__(self, uri: str, expected: str, actual: str) -> None:
        super().__init__(f"the sha256 of {uri} is {actual}, not the {expected} the ModelVersion pins")
        self.expected = expected
        self.actual = actual
