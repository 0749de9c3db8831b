"""What a ModelDeployment's plan sees, and the status it is building: the moves every strategy shares.

`Observed` is everything a reconcile read (the deployment, its model's versions, the serving
Deployments' readiness and any analysis answers). `Draft` is the status being written, with the
transitions a strategy makes: set the weights, begin and finish a rollout, roll back. All times
come from `now`.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from kiln.api import base, drafts, events, modeldeployment
from kiln.delivery import analysis, reasons, serving, traffic, versions

Status = modeldeployment.ModelDeploymentStatus
Phase = modeldeployment.ModelDeploymentPhase
Outcome = modeldeployment.RolloutOutcome


@dataclasses.dataclass(frozen=True)
class Pods:
    """What one serving Deployment has: asked-for and ready pods of its current template."""

    name: str
    replicas: int
    ready: int


@dataclasses.dataclass(frozen=True)
class Observed:
    name: str
    namespace: str
    uid: str
    generation: int | None
    spec: modeldeployment.ModelDeploymentSpec
    status: Status
    model_versions: Sequence[versions.Candidate]
    """Every ModelVersion of spec.model in the namespace."""
    deployments: Mapping[str, Pods] = dataclasses.field(default_factory=dict)
    """The serving Deployments by the version they serve (the label value)."""
    autoscalers: frozenset[str] = frozenset()
    """The names of the HorizontalPodAutoscalers of its serving Deployments."""
    router_ready: int = 0
    action: modeldeployment.RolloutAction | None = None
    action_error: str | None = None
    """Why the rollout-action annotation could not be read."""
    comparison: traffic.Comparison | None = None
    """What the traffic provider compared of a shadow's answers; observed during a shadow rollout."""
    answers: Mapping[str, analysis.Answer] | None = None
    """Answers to the measurements the last plan asked for; None before they were taken."""
    default_prometheus: str | None = None

    def find(self, version: str | None) -> versions.Candidate | None:
        return next((c for c in self.model_versions if c.version == version), None) if version else None

    def ready(self, version: str | None) -> int:
        pods = self.deployments.get(serving.version_label(version or ""))
        return pods.ready if pods else 0


@dataclasses.dataclass
class Draft(drafts.StatusDraft):
    """The status being built and what it calls for."""

    observed: Observed
    now: datetime.datetime
    status: Status
    events: list[events.Event] = dataclasses.field(default_factory=list)
    measure: list[analysis.MeasurementRequest] = dataclasses.field(default_factory=list)
    phase_decided: bool = False
    """Whether this plan set the phase itself, which concluding then leaves alone."""

    @property
    def spec(self) -> modeldeployment.ModelDeploymentSpec:
        return self.observed.spec

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(events.Event("Warning" if warning else "Normal", reason, message))

    def set_phase(self, phase: Phase, message: str) -> None:
        self.phase_decided = True
        self.status.phase = phase
        self.status.message = message

    def set_weights(self, stable: int, canary: int) -> None:
        self.status.weights = modeldeployment.Weights(stable=stable, canary=canary, mirror=0)

    def elapsed(self, since: datetime.datetime | None) -> datetime.timedelta:
        return self.now - since if since else datetime.timedelta(0)

    # -- rollouts ---------------------------------------------------------------------------

    def record(self, entry: modeldeployment.RolloutRecord) -> None:
        self.status.history = [*self.status.history, entry][-modeldeployment.HISTORY_LIMIT :]

    def finish_record(self, version: str, outcome: Outcome, reason: str) -> None:
        """End the running history entry of `version`."""
        for entry in reversed(self.status.history):
            if entry.version == version and entry.outcome is None:
                entry.end_time, entry.outcome, entry.reason = self.now, outcome, reason
                return

    def begin(self, candidate: str, reason: str, direct: bool = False) -> None:
        """Start rolling `candidate` out, all traffic on stable; `direct` skips the strategy."""
        self.status.candidate_version = candidate
        self.status.current_step_index = 0
        self.status.step_start_time = self.now
        self.status.pause_start_time = None
        self.status.analysis = []
        self.status.shadow = None
        self.status.direct_promotion = direct
        self.set_weights(100, 0)
        self.record(
            modeldeployment.RolloutRecord(
                version=candidate, previous_version=self.status.stable_version, start_time=self.now
            )
        )
        self.set_phase(Phase.PROGRESSING, f"rolling version {candidate} out: {reason}")
        self.condition(
            reasons.PROGRESSING, base.ConditionStatus.TRUE, reasons.ROLLOUT_STARTED, self.status.message or ""
        )
        self.event(reasons.ROLLOUT_STARTED, f"rolling version {candidate} out over {self.status.stable_version}")

    def end_rollout(self) -> None:
        self.status.direct_promotion = False
        self.status.candidate_version = None
        self.status.current_step_index = None
        self.status.step_start_time = None
        self.status.pause_start_time = None

    def next_step(self) -> None:
        self.status.current_step_index = (self.status.current_step_index or 0) + 1
        self.status.step_start_time = self.now
        self.status.pause_start_time = None

    def roll_back(self, outcome: Outcome, reason: str, message: str) -> None:
        """All traffic to stable at once; the candidate is remembered so the policy skips it."""
        candidate = self.status.candidate_version
        if candidate is None:
            return
        self.set_weights(100, 0)
        if candidate not in self.status.rolled_back_versions:
            self.status.rolled_back_versions = [*self.status.rolled_back_versions, candidate]
        self.status.rolled_back_for = versions.selection(self.spec)
        self.finish_record(candidate, outcome, message)
        self.end_rollout()
        text = f"version {candidate} rolled back, all traffic on {self.status.stable_version}: {message}"
        self.set_phase(Phase.ROLLED_BACK, text)
        self.condition(reasons.PROGRESSING, base.ConditionStatus.FALSE, reason, text)
        self.event(reason, text, warning=True)

    def results(self, step: int | None) -> list[modeldeployment.AnalysisResult]:
        return [result for result in self.status.analysis if result.step == step]

    def replace_result(self, updated: modeldeployment.AnalysisResult) -> None:
        self.status.analysis = [
            updated if (r.metric, r.step) == (updated.metric, updated.step) else r for r in self.status.analysis
        ]


def parse_action(annotations: Mapping[str, str]) -> tuple[modeldeployment.RolloutAction | None, str | None]:
    text = annotations.get(modeldeployment.ROLLOUT_ACTION_ANNOTATION)
    if not text:
        return None, None
    try:
        return modeldeployment.RolloutAction.model_validate_json(text), None
    except ValueError as error:
        return None, f"the {modeldeployment.ROLLOUT_ACTION_ANNOTATION} annotation is not a rollout action: {error}"


def observed_from(
    body: Mapping[str, Any],
    version_bodies: Sequence[Mapping[str, Any]],
    **observations: Any,
) -> Observed:
    """The Observed of a ModelDeployment object and its model's ModelVersions."""
    metadata = body["metadata"]
    spec = modeldeployment.ModelDeploymentSpec.model_validate(body.get("spec") or {})
    action, action_error = parse_action(metadata.get("annotations") or {})
    return Observed(
        name=metadata["name"],
        namespace=metadata.get("namespace") or "default",
        uid=metadata.get("uid", ""),
        generation=metadata.get("generation"),
        spec=spec,
        status=Status.model_validate(body.get("status") or {}),
        model_versions=versions.candidates(version_bodies, spec.model),
        action=action,
        action_error=action_error,
        **observations,
    )
