"""What every store shares: the chunk size of a stream, and a URI split into scheme and rest."""

from __future__ import annotations

from kiln.artifacts.errors import UnsupportedURIError

CHUNK_SIZE = 1 << 20
"""Bytes per chunk of a read: what a stream holds in memory at a time."""


def split(uri: str) -> tuple[str, str]:
    """`("s3", "bucket/key")` from `s3://bucket/key`; UnsupportedURIError when it is no URI."""
    scheme, separator, rest = uri.partition("://")
    if not separator or not scheme:
        raise UnsupportedURIError(
            f"{uri!r} is not an artifact URI such as file:///path, pvc://claim/path or s3://bucket/key"
        )
    return scheme, rest
