"""Checkpoints in `KILN_CHECKPOINT_DIR`: a fitted estimator, and what it was fitted from.

After fitting, the trainer writes `trainer-estimator.skops` (the artifact bytes) and then
`trainer-checkpoint.json`, which names the key it was fitted for and the estimator's sha256. A pod
restarted with the same key (the same spec, dataset digest and framework version) loads that
estimator instead of fitting again, and writes the very same artifact bytes. A checkpoint that
does not match, is damaged or holds types the trainer does not load is ignored: it only costs a fit.

With `KILN_CHECKPOINT_URI` (an object store prefix, for workers on any node) the directory only
stages: `push` uploads the two files in the same order after saving, and `pull` downloads them
before loading, the estimator through a digest-checked download. A store that cannot be reached
likewise only costs a fit, or a resume.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass
from typing import Any

from kiln import artifacts
from kiln.api import trainingjob
from kiln.runtime.trainer import artifact

ESTIMATOR_FILE = "trainer-estimator.skops"
RECORD_FILE = "trainer-checkpoint.json"
FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    estimator: Any
    data: bytes


def key(spec: trainingjob.SklearnTrainer, dataset_sha256: str, framework_version: str) -> str:
    """What a fit depends on, as one digest."""
    inputs = {
        "format": FORMAT,
        "sklearn": spec.to_wire(),
        "dataset": dataset_sha256,
        "frameworkVersion": framework_version,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def save(directory: pathlib.Path, fit_key: str, data: bytes) -> None:
    """The estimator first, then the record naming it, so a record always has its estimator."""
    artifact.write_atomically(directory / ESTIMATOR_FILE, data)
    record = {"format": FORMAT, "key": fit_key, "estimatorSha256": artifact.sha256(data)}
    artifact.write_atomically(directory / RECORD_FILE, json.dumps(record).encode())


def load(directory: pathlib.Path, fit_key: str) -> tuple[Checkpoint | None, str]:
    """The checkpoint fitted for `fit_key`, or None and why not."""
    try:
        record = json.loads((directory / RECORD_FILE).read_text())
    except FileNotFoundError:
        return None, "no checkpoint yet"
    except (OSError, ValueError) as error:
        return None, f"the checkpoint record is unreadable ({error})"
    if not isinstance(record, dict) or record.get("key") != fit_key:
        return None, "the checkpoint is of another spec or dataset"
    try:
        data = (directory / ESTIMATOR_FILE).read_bytes()
    except OSError as error:
        return None, f"the checkpointed estimator is unreadable ({error.strerror})"
    if artifact.sha256(data) != record.get("estimatorSha256"):
        return None, "the checkpointed estimator does not match its recorded sha256"
    try:
        estimator = artifact.loads_trusted(data)
    except Exception as error:  # a damaged archive may fail in many ways; it only costs a refit
        return None, f"the checkpointed estimator cannot be loaded: {error}"
    return Checkpoint(estimator, data), "resumed"


def push(directory: pathlib.Path, uri: str, settings: artifacts.Settings) -> str | None:
    """Upload the checkpoint in `directory` below `uri`, estimator first; None, or why it failed."""
    try:
        for name in (ESTIMATOR_FILE, RECORD_FILE):
            artifacts.write(f"{uri}/{name}", directory / name, settings)
    except (artifacts.ArtifactError, OSError) as error:
        return str(error)
    return None


def pull(directory: pathlib.Path, uri: str, settings: artifacts.Settings) -> str | None:
    """Download the checkpoint below `uri` into `directory` for `load`; None, or why there is none."""
    try:
        record_bytes = b"".join(artifacts.store_for(f"{uri}/{RECORD_FILE}", settings).chunks(f"{uri}/{RECORD_FILE}"))
        record = json.loads(record_bytes)
        sha256 = str(record["estimatorSha256"])
        artifacts.download_verified(f"{uri}/{ESTIMATOR_FILE}", sha256, directory / ESTIMATOR_FILE, settings)
    except artifacts.ArtifactNotFoundError:
        return "no checkpoint yet"
    except (artifacts.ArtifactError, OSError, ValueError, KeyError, TypeError) as error:
        return f"the checkpoint at {uri} could not be read ({error})"
    artifact.write_atomically(directory / RECORD_FILE, record_bytes)
    return None
