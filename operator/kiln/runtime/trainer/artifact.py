"""The model artifact: skops bytes that are the same for the same fitted model, written atomically
to a mounted claim or uploaded to an object store.

skops names the arrays of its zip archive after Python object ids (`139724176785200.npy`), records
those ids in its schema, and stamps each entry with the current time, so two dumps of one model
differ. `canonical` renumbers the ids and entries in the order skops wrote them and fixes the
timestamps: the model's sha256 then depends on the model alone, a rerun of the same seeded spec
on the same data writes the same artifact, and a restarted pod finds the ModelVersion it already
registered identical rather than conflicting.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import tempfile
import zipfile
from typing import Any

from skops import io as skops_io

from kiln import artifacts
from kiln.api import modelversion
from kiln.runtime.trainer import errors

SCHEMA = "schema.json"
EPOCH = (1980, 1, 1, 0, 0, 0)
TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy", "xgboost", "lightgbm", "catboost", "builtins", "collections")
"""Types from these packages may be loaded back from a checkpoint the trainer wrote itself."""


def dumps(estimator: Any) -> bytes:
    """The fitted estimator as canonical skops bytes."""
    return canonical(skops_io.dumps(estimator))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(data: bytes) -> bytes:
    """The same skops archive with ids, entry names and timestamps that depend on its content only."""
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        entries = [info for info in source.infolist() if info.filename != SCHEMA]
        names = {
            info.filename: f"{index}{pathlib.PurePosixPath(info.filename).suffix}" for index, info in enumerate(entries)
        }
        schema = _renumbered(json.loads(source.read(SCHEMA)), names, {})
        contents = [(names[info.filename], info.compress_type, source.read(info.filename)) for info in entries]
    contents.append((SCHEMA, zipfile.ZIP_STORED, json.dumps(schema, indent=2).encode()))
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w") as target:
        for name, compression, content in contents:
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.compress_type = compression
            info.external_attr = 0o644 << 16
            target.writestr(info, content)
    return output.getvalue()


def _renumbered(node: Any, names: dict[str, str], ids: dict[int, int]) -> Any:
    """The schema with every `__id__` numbered by first appearance and every entry name replaced."""
    if isinstance(node, dict):
        renumbered = {}
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int):
                renumbered[key] = ids.setdefault(value, len(ids) + 1)
            else:
                renumbered[key] = _renumbered(value, names, ids)
        return renumbered
    if isinstance(node, list):
        return [_renumbered(item, names, ids) for item in node]
    if isinstance(node, str):
        return names.get(node, node)
    return node


def loads_trusted(data: bytes) -> Any:
    """An estimator the trainer wrote, loaded back if every type in it is from TRUSTED_PACKAGES;
    ValueError names the first that is not."""
    untrusted = skops_io.get_untrusted_types(data=data)
    foreign = [name for name in untrusted if name.split(".", 1)[0] not in TRUSTED_PACKAGES]
    if foreign:
        raise ValueError(f"it holds type {foreign[0]}, which the trainer does not load")
    return skops_io.loads(data, trusted=untrusted)


def save(recorded: modelversion.Artifact, data: bytes, path: pathlib.Path | None, settings: artifacts.Settings) -> None:
    """Write the artifact where the ModelVersion says it is: to `path` (its claim is mounted here),
    or, with no path, uploaded to its object store URI, where the digest of what was sent must be
    the one recorded."""
    if path is not None:
        write_atomically(path, data)
        return
    try:
        sent = artifacts.write(recorded.uri, data, settings)
    except artifacts.ArtifactError as error:
        raise errors.TrainerError(f"uploading the artifact failed: {error}") from None
    if sent.sha256 != recorded.sha256:
        raise errors.TrainerError(f"{recorded.uri}: sent bytes with sha256 {sent.sha256}, not {recorded.sha256}")


def write_atomically(path: pathlib.Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`, so a
    reader sees the old file or the whole new one, never part of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise
