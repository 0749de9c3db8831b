"""Validation: is this version unique, is its artifact the one its digest names, do its gates hold?

The outcome is a Verdict: Validated or Rejected, with every reason for a rejection, so a user
sees all that is wrong at once rather than one problem per attempt.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass

from kiln.api import base
from kiln.api.modelversion import GateResult, ModelVersionPhase, ModelVersionSpec, Stage
from kiln.registry import gates, reasons
from kiln.registry.observed import ArtifactCheck, ArtifactOutcome, Observed, Sibling, holds_version

_ARTIFACT_CONDITIONS: dict[ArtifactOutcome, tuple[base.ConditionStatus, str]] = {
    ArtifactOutcome.VERIFIED: (base.ConditionStatus.TRUE, reasons.DIGEST_MATCHES),
    ArtifactOutcome.MISMATCH: (base.ConditionStatus.FALSE, reasons.DIGEST_MISMATCH),
    ArtifactOutcome.NOT_FOUND: (base.ConditionStatus.FALSE, reasons.ARTIFACT_NOT_FOUND),
    ArtifactOutcome.UNSAFE: (base.ConditionStatus.FALSE, reasons.UNSAFE_ARTIFACT_URI),
    ArtifactOutcome.UNREACHABLE: (base.ConditionStatus.UNKNOWN, reasons.ARTIFACT_UNREACHABLE),
}


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str


@dataclass(frozen=True)
class ArtifactVerdict:
    status: base.ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class Verdict:
    phase: ModelVersionPhase
    duplicate_of: str | None
    reason: str
    message: str
    gate_results: list[GateResult]
    artifact: ArtifactVerdict
    failures: tuple[Failure, ...]


def inputs_digest(spec: ModelVersionSpec) -> str:
    """A short digest of what the phase is decided from besides the immutable identity."""
    payload = {"gates": [gate.to_wire() for gate in spec.gates], "metrics": spec.metrics}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _claim(holds: bool, created: datetime.datetime, name: str) -> tuple[bool, datetime.datetime, str]:
    """Who has the better claim to a model and version, smallest first: the version validated
    before keeps it; between new ones the first created (then the first name, since creation
    timestamps have a resolution of a second) gets it."""
    return (not holds, created, name)


def version_holder(observed: Observed) -> Sibling | None:
    """The other version with the better claim to this one's model and version, if there is one.

    Equal precedence is what counts, so `1.0.0+a` duplicates `1.0.0+b`: the two could not be ordered.
    """
    mine = _claim(holds_version(observed.status), observed.created, observed.name)
    rivals = [sibling for sibling in observed.siblings if sibling.version == observed.version]
    first = min(rivals, key=lambda s: _claim(s.holds_version, s.created, s.name), default=None)
    if first is None or _claim(first.holds_version, first.created, first.name) > mine:
        return None
    return first


def champion(siblings: tuple[Sibling, ...]) -> gates.Champion | None:
    """The model's Production version: the most recently promoted when a promotion is under way."""
    serving = [sibling for sibling in siblings if sibling.stage == Stage.PRODUCTION]
    if not serving:
        return None
    latest = max(serving, key=lambda sibling: (sibling.stage_since, sibling.version))
    return gates.Champion(name=latest.name, version=str(latest.version), metrics=latest.metrics)


def _artifact(check: ArtifactCheck | None) -> ArtifactVerdict:
    if check is None:
        return ArtifactVerdict(
            base.ConditionStatus.UNKNOWN, reasons.NOT_CHECKED, "not read: the version is a duplicate"
        )
    status, reason = _ARTIFACT_CONDITIONS[check.outcome]
    return ArtifactVerdict(status, reason, check.message)


def validate(observed: Observed) -> Verdict:
    """Decide the phase; the artifact must have been checked unless the version is a duplicate."""
    spec = observed.spec
    results = gates.evaluate(spec.gates, spec.metrics, champion(observed.siblings))
    artifact = _artifact(observed.artifact)
    failures: list[Failure] = []
    holder = version_holder(observed)
    if holder is not None:
        message = (
            f"version {spec.version} of model {spec.model_name} is already registered by ModelVersion "
            f"{holder.name} ({holder.version}), created first; delete this one or give it another version"
        )
        failures.append(Failure(reasons.DUPLICATE_VERSION, message))
    if artifact.status == base.ConditionStatus.FALSE:
        failures.append(Failure(artifact.reason, artifact.message))
    failed = [result.message for result in results if not result.passed]
    if failed:
        failures.append(Failure(reasons.GATES_FAILED, f"{len(failed)} gate check(s) failed: {'; '.join(failed)}"))
    if failures:
        message = "; ".join(failure.message for failure in failures)
        duplicate_of = holder.name if holder else None
        return Verdict(
            ModelVersionPhase.REJECTED, duplicate_of, failures[0].reason, message, results, artifact, tuple(failures)
        )
    message = f"all {len(results)} gate check(s) passed" if results else "the version has no gates"
    return Verdict(ModelVersionPhase.VALIDATED, None, reasons.GATES_PASSED, message, results, artifact, ())
