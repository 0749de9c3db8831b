"""The pod contract: what the operator hands `kiln-trainer` through its environment.

Every variable is read here, once, into `Settings`; nothing else in the trainer reads the
environment (except the Kubernetes client's own KUBECONFIG), so the contract is this file. The
AWS_* variables of an object store are read by `kiln.artifacts.Settings`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import pydantic

from kiln import artifacts
from kiln.api import modelversion, trainingjob
from kiln.runtime.trainer import errors

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class Settings:
    """The trainer's inputs, parsed and checked."""

    sklearn: trainingjob.SklearnTrainer
    """`KILN_SKLEARN`: spec.sklearn of the TrainingJob, as JSON in wire (camelCase) form."""
    output: trainingjob.Output | None = None
    """`KILN_OUTPUT`: spec.output as JSON; unset when the job registers nothing."""
    training_job: str | None = None
    """`KILN_TRAINING_JOB`: the job's name (lineage, label and ownerReference)."""
    training_job_uid: str | None = None
    """`KILN_TRAINING_JOB_UID`: the job's uid, for the ModelVersion's ownerReference."""
    namespace: str | None = None
    """`KILN_NAMESPACE`: where the ModelVersion is created."""
    artifact_uri: str | None = None
    """The URI the ModelVersion records: `KILN_ARTIFACT_URI` (`pvc://kiln-models/iris/1.0.0/model.skops`),
    or the object store URI when the output's store.uri names one (`s3://models/iris/1.0.0/model.skops`)."""
    artifact_path: pathlib.Path | None = None
    """`KILN_ARTIFACT_PATH`: where that URI is on this machine (the claim is mounted); None when the
    artifact is uploaded to an object store."""
    artifact_settings: artifacts.Settings = dataclasses.field(default_factory=artifacts.Settings)
    """How object stores are reached: the AWS_* environment (`kiln.artifacts.s3`)."""
    dataset_path: pathlib.Path | None = None
    """`KILN_DATASET_PATH`: the local path of a `pvc://` dataset (its claim is mounted read-only)."""
    checkpoint_dir: pathlib.Path | None = None
    """`KILN_CHECKPOINT_DIR`: where checkpoints go; none are written when unset."""
    checkpoint_uri: str | None = None
    """`KILN_CHECKPOINT_URI`: the object store prefix checkpoints are uploaded to and resumed from,
    through checkpoint_dir."""
    result_file: pathlib.Path | None = None
    """`KILN_RESULT_FILE`: where the TrainingResult JSON goes (the container's terminationMessagePath)."""
    code: modelversion.CodeRef | None = None
    """`KILN_CODE_REPOSITORY` and `KILN_CODE_COMMIT`: the training code, for lineage."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings the environment gives; TrainerError names the variable that is wrong."""
        output = _model(environ, "KILN_OUTPUT", trainingjob.Output)
        uploaded_to = output.object_store_uri() if output is not None else None
        settings = cls(
            sklearn=_required(_model(environ, "KILN_SKLEARN", trainingjob.SklearnTrainer), "KILN_SKLEARN"),
            output=output,
            training_job=environ.get("KILN_TRAINING_JOB") or None,
            training_job_uid=environ.get("KILN_TRAINING_JOB_UID") or None,
            namespace=environ.get("KILN_NAMESPACE") or None,
            artifact_uri=uploaded_to or environ.get("KILN_ARTIFACT_URI") or None,
            artifact_path=None if uploaded_to else _path(environ, "KILN_ARTIFACT_PATH"),
            artifact_settings=_artifact_settings(environ),
            dataset_path=_path(environ, "KILN_DATASET_PATH"),
            checkpoint_dir=_path(environ, "KILN_CHECKPOINT_DIR"),
            checkpoint_uri=environ.get("KILN_CHECKPOINT_URI") or None,
            result_file=_path(environ, "KILN_RESULT_FILE"),
            code=_code(environ),
        )
        if output is not None:
            missing = [
                name
                for name, value in (
                    ("KILN_ARTIFACT_URI", settings.artifact_uri),
                    ("KILN_ARTIFACT_PATH", uploaded_to or settings.artifact_path),
                    ("KILN_NAMESPACE", settings.namespace),
                    ("KILN_TRAINING_JOB", settings.training_job),
                    ("KILN_TRAINING_JOB_UID", settings.training_job_uid),
                )
                if value is None
            ]
            if missing:
                raise errors.TrainerError(f"KILN_OUTPUT is set, so {', '.join(missing)} must be set too")
        return settings


def _artifact_settings(environ: Mapping[str, str]) -> artifacts.Settings:
    try:
        return artifacts.Settings.from_environment(environ)
    except ValueError as error:
        raise errors.TrainerError(str(error)) from None


def _required(value: T | None, name: str) -> T:
    if value is None:
        raise errors.TrainerError(f"{name} is not set; it carries the TrainingJob's spec.sklearn as JSON")
    return value


def _model(environ: Mapping[str, str], name: str, model: type[M]) -> M | None:
    text = environ.get(name)
    if not text:
        return None
    try:
        return model.model_validate(json.loads(text))
    except json.JSONDecodeError as error:
        raise errors.TrainerError(f"{name} is not JSON: {error}") from None
    except pydantic.ValidationError as error:
        raise errors.TrainerError(f"{name}: {_first_error(error, name)}") from None


def _first_error(error: pydantic.ValidationError, name: str) -> str:
    """The first problem, at its wire path: `sklearn.testSize: Input should be less than 1`."""
    first = error.errors()[0]
    prefix = {"KILN_SKLEARN": "sklearn", "KILN_OUTPUT": "output"}.get(name, name)
    where = ".".join([prefix, *(str(part) for part in first["loc"])])
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _path(environ: Mapping[str, str], name: str) -> pathlib.Path | None:
    value = environ.get(name)
    return pathlib.Path(value) if value else None


def _code(environ: Mapping[str, str]) -> modelversion.CodeRef | None:
    repository, commit = environ.get("KILN_CODE_REPOSITORY"), environ.get("KILN_CODE_COMMIT")
    if not repository and not commit:
        return None
    if not repository or not commit:
        raise errors.TrainerError("KILN_CODE_REPOSITORY and KILN_CODE_COMMIT go together: set both or neither")
    try:
        return modelversion.CodeRef(repository=repository, commit=commit)
    except pydantic.ValidationError:
        raise errors.TrainerError(f"KILN_CODE_COMMIT: {commit!r} is not a commit hash (7-64 hex digits)") from None
