"""Kiln: a Kubernetes operator for the whole ML lifecycle."""

from importlib import metadata

try:
    __version__ = metadata.version("kiln")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
