"""Which ModelVersion a ModelDeployment should serve, and whether a candidate may replace the stable one.

Only a Validated ModelVersion whose artifact the registry verified is ever servable. The version
policy picks among the servable ones (`Pin`, `LatestValidated`, `Production`), skipping versions
that were rolled back for the same selection. A candidate whose inputs differ from the stable
version's is refused before any traffic moves: the clients of the stable version would send it
requests it cannot read.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pydantic

from kiln import semver
from kiln.api import base, conditions, modeldeployment, modelversion

FAULT_INJECTION_ANNOTATION = f"{base.GROUP}/fault-injection"
"""A ModelVersion annotated with fault-injection JSON is served with KILN_FAULT_INJECTION set to it,
on its own pods only: a test and demo aid that lets one bad version really fail."""

Policy = modeldeployment.VersionPolicy


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A ModelVersion of the deployment's model, as the plan needs it."""

    name: str
    version: str
    body: Mapping[str, Any]
    """The whole object, handed to kiln-server."""
    model: modelversion.ModelVersion

    @property
    def servable(self) -> bool:
        status = self.model.status
        if status is None or status.phase is not modelversion.ModelVersionPhase.VALIDATED:
            return False
        verified = conditions.find(status.conditions, "ArtifactVerified")
        return verified is not None and verified.status is base.ConditionStatus.TRUE

    @property
    def in_production(self) -> bool:
        return self.model.status is not None and self.model.status.stage is modelversion.Stage.PRODUCTION

    @property
    def fault_injection(self) -> str | None:
        return self.model.metadata.annotations.get(FAULT_INJECTION_ANNOTATION)

    @property
    def phase(self) -> str:
        return self.model.status.phase.value if self.model.status else modelversion.ModelVersionPhase.PENDING.value


def candidates(bodies: Iterable[Mapping[str, Any]], model: str) -> list[Candidate]:
    """The ModelVersions of `model` among `bodies`; ones that do not parse are left out (their own
    controller reports them)."""
    found = []
    for body in bodies:
        try:
            parsed = modelversion.ModelVersion.model_validate(body)
        except pydantic.ValidationError:
            continue
        if parsed.spec.model_name == model:
            found.append(Candidate(parsed.metadata.name or "", parsed.spec.version, body, parsed))
    return found


def policy_of(spec: modeldeployment.ModelDeploymentSpec) -> Policy:
    if spec.version_policy is not None:
        return spec.version_policy
    return Policy.PIN if spec.version else Policy.PRODUCTION


def selection(spec: modeldeployment.ModelDeploymentSpec) -> str:
    """What the spec asks for, in words: `iris Pin 1.2.0`, `iris LatestValidated`."""
    policy = policy_of(spec)
    return f"{spec.model} {policy.value} {spec.version}" if policy is Policy.PIN else f"{spec.model} {policy.value}"


@dataclasses.dataclass(frozen=True)
class Choice:
    """The version to serve, or why there is none."""

    chosen: Candidate | None
    reason: str


def choose(spec: modeldeployment.ModelDeploymentSpec, found: Sequence[Candidate], rolled_back: Iterable[str]) -> Choice:
    """The version the policy selects among the servable, not rolled-back versions."""
    policy = policy_of(spec)
    skipped = set(rolled_back)
    if policy is Policy.PIN:
        pinned = next((c for c in found if semver.parse(c.version) == semver.parse(spec.version or "")), None)
        if pinned is None:
            return Choice(None, f"no ModelVersion of model {spec.model} has version {spec.version}")
        if pinned.version in skipped:
            return Choice(None, f"version {pinned.version} was rolled back; change spec.version or `kiln retry`")
        if not pinned.servable:
            return Choice(None, f"ModelVersion {pinned.name} is {pinned.phase}, not Validated with a verified artifact")
        return Choice(pinned, f"version {pinned.version} is pinned")
    servable = [c for c in found if c.servable and c.version not in skipped]
    if policy is Policy.PRODUCTION:
        servable = [c for c in servable if c.in_production]
        what = "in stage Production"
    else:
        what = "Validated"
    if not servable:
        return Choice(
            None, f"no version of model {spec.model} is {what} with a verified artifact (and not rolled back)"
        )
    best = max(servable, key=lambda c: semver.parse(c.version))
    return Choice(best, f"version {best.version} is the highest {what}")


def _inputs(model: modelversion.ModelVersion) -> list[dict[str, Any]] | None:
    signature = model.spec.signature
    if signature is None:
        return None
    return [tensor.to_wire() for tensor in signature.inputs]


def incompatibility(stable: Candidate | None, candidate: Candidate) -> str | None:
    """Why the candidate cannot take the stable version's requests, or None when it can (or when
    either version declares no signature, so nothing can be compared)."""
    if stable is None:
        return None
    old, new = _inputs(stable.model), _inputs(candidate.model)
    if old is None or new is None or old == new:
        old_names = stable.model.spec.signature.feature_names if stable.model.spec.signature else []
        new_names = candidate.model.spec.signature.feature_names if candidate.model.spec.signature else []
        if old_names and new_names and old_names != new_names:
            return (
                f"version {candidate.version} expects the features {new_names}, but stable version "
                f"{stable.version}'s clients send {old_names}"
            )
        return None
    return (
        f"version {candidate.version}'s inputs {json.dumps(new, separators=(',', ':'))} differ from stable version "
        f"{stable.version}'s {json.dumps(old, separators=(',', ':'))}"
    )
