"""What the registry's plan reads: one ModelVersion, the other versions of its model, its artifact.

Built from the raw objects the API server returned, so the plan itself never sees a dict.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pydantic

from kiln import semver
from kiln.api import modelversion
from kiln.api.modelversion import ModelVersionPhase, Stage

_EPOCH = datetime.datetime.min.replace(tzinfo=datetime.UTC)


class ArtifactOutcome(StrEnum):
    """What reading the artifact showed."""

    VERIFIED = "Verified"
    MISMATCH = "Mismatch"
    NOT_FOUND = "NotFound"
    UNSAFE = "Unsafe"
    UNREACHABLE = "Unreachable"
    """The store could not be read (not configured here, unsupported, timed out); not the
    version's fault, so it does not reject it."""


@dataclass(frozen=True)
class ArtifactCheck:
    outcome: ArtifactOutcome
    message: str


@dataclass(frozen=True)
class Sibling:
    """Another version of the same model, in the same namespace."""

    name: str
    version: semver.Version
    created: datetime.datetime
    phase: ModelVersionPhase
    stage: Stage
    wanted_stage: Stage
    stage_since: datetime.datetime
    metrics: Mapping[str, float]
    holds_version: bool
    """It was validated before and is not itself a duplicate, so its model and version are its."""


@dataclass(frozen=True)
class Observed:
    """One ModelVersion as the plan needs it."""

    name: str
    generation: int | None
    created: datetime.datetime
    spec: modelversion.ModelVersionSpec
    status: modelversion.ModelVersionStatus
    stage_request: modelversion.StageRequest | None
    siblings: tuple[Sibling, ...]
    artifact: ArtifactCheck | None = None
    """None until the artifact has been read for this validation."""

    @property
    def version(self) -> semver.Version:
        return semver.parse(self.spec.version)


def _created(body: Mapping[str, Any]) -> datetime.datetime:
    stamp = body.get("metadata", {}).get("creationTimestamp")
    return datetime.datetime.fromisoformat(stamp) if stamp else _EPOCH


def _stage_request(annotations: Mapping[str, str]) -> modelversion.StageRequest | None:
    raw = annotations.get(modelversion.STAGE_REQUEST_ANNOTATION)
    if raw is None:
        return None
    try:
        return modelversion.StageRequest.model_validate_json(raw)
    except pydantic.ValidationError:
        return None  # a hand-written annotation that says nothing usable: the requester is unknown


def parse(body: Mapping[str, Any]) -> modelversion.ModelVersion:
    """The typed ModelVersion; pydantic.ValidationError names the field and the rule it breaks."""
    return modelversion.ModelVersion.model_validate(body)


def holds_version(status: modelversion.ModelVersionStatus) -> bool:
    return status.validated_inputs is not None and status.duplicate_of is None


def sibling(body: Mapping[str, Any]) -> Sibling:
    parsed = parse(body)
    status = parsed.status or modelversion.ModelVersionStatus()
    return Sibling(
        name=parsed.metadata.name or "",
        version=semver.parse(parsed.spec.version),
        created=_created(body),
        phase=status.phase,
        stage=status.stage,
        wanted_stage=parsed.spec.stage,
        stage_since=status.stage_since or _EPOCH,
        metrics=parsed.spec.metrics,
        holds_version=holds_version(status),
    )


def observe(
    body: Mapping[str, Any], others: Iterable[Mapping[str, Any]], artifact: ArtifactCheck | None = None
) -> Observed:
    """The version in `body` with the other versions of its model among `others` (any ModelVersions
    of the namespace; the version itself and other models' versions are left out)."""
    parsed = parse(body)
    name = parsed.metadata.name or ""
    siblings = tuple(
        sibling(other)
        for other in others
        if other.get("metadata", {}).get("name") != name
        and other.get("spec", {}).get("modelName") == parsed.spec.model_name
    )
    return Observed(
        name=name,
        generation=parsed.metadata.generation,
        created=_created(body),
        spec=parsed.spec,
        status=parsed.status or modelversion.ModelVersionStatus(),
        stage_request=_stage_request(parsed.metadata.annotations),
        siblings=siblings,
        artifact=artifact,
    )
