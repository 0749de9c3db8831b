"""The canary state machine: walk the steps, run analysis, promote or roll back.

A rollout is at `status.currentStepIndex`; one reconcile moves through as many steps as the
observed state allows (a setWeight whose pods are ready, a pause that has run out, an analysis
that succeeded) and stops at the first that must wait. The index one past the last step is
promotion: once the candidate runs at full size it becomes stable, the router sends it all
traffic, and the old version retires after `scaleDownDelaySeconds`. With no canary strategy a
rollout starts at promotion.

The candidate is ready before any weight moves to it: a setWeight waits until the candidate has
that share of the full size (spec.replicas, or autoscaling.minReplicas) ready (at least one pod),
and a candidate that is not ready within `progressDeadlineSeconds` of its step's start is rolled
back.
"""

from __future__ import annotations

import datetime

from kiln.api import base, modeldeployment
from kiln.delivery import moves, reasons, rollout, serving

Phase = modeldeployment.ModelDeploymentPhase
Outcome = modeldeployment.RolloutOutcome
Verdict = modeldeployment.AnalysisPhase
TRUE, FALSE = base.ConditionStatus.TRUE, base.ConditionStatus.FALSE


def canary_of(
    spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus | None = None
) -> modeldeployment.Canary | None:
    """The canary being walked: the canary strategy's, or a shadow's `then` once the shadow passed."""
    shadow = spec.strategy.shadow
    if shadow is not None and status is not None and status.shadow is not None:
        return shadow.then if status.shadow.phase is modeldeployment.ShadowPhase.CANARY else None
    return spec.strategy.canary


def steps_of(
    spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus | None = None
) -> list[modeldeployment.CanaryStep]:
    canary = canary_of(spec, status)
    return list(canary.steps) if canary else []


def scale_down_delay(spec: modeldeployment.ModelDeploymentSpec) -> datetime.timedelta:
    if spec.strategy.blue_green is not None:
        return datetime.timedelta(seconds=spec.strategy.blue_green.scale_down_delay_seconds)
    canary = spec.strategy.canary or (spec.strategy.shadow.then if spec.strategy.shadow else None)
    return datetime.timedelta(seconds=(canary or modeldeployment.Canary()).scale_down_delay_seconds)


def promoting(spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus) -> bool:
    """Whether the rollout has passed its last step and the candidate is scaled to full size."""
    return status.candidate_version is not None and (status.current_step_index or 0) >= len(steps_of(spec, status))


def candidate_replicas(spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus) -> int:
    """The candidate's pods: enough for the weight it has or is about to get; all at promotion."""
    if promoting(spec, status):
        return spec.full_size
    steps = steps_of(spec, status)
    index = status.current_step_index or 0
    upcoming = steps[index].set_weight if index < len(steps) else None
    weight = max(status.weights.canary, upcoming or 0)
    return serving.replicas_for_weight(spec.full_size, weight)


def step_name(draft: rollout.Draft) -> str:
    """The current step as people count, and as `kiln status` shows it: `step 2 of 5`."""
    index = draft.status.current_step_index or 0
    return f"step {index + 1} of {len(steps_of(draft.spec, draft.status))}"


def _pause_over(draft: rollout.Draft, pause: modeldeployment.Pause) -> bool:
    if draft.status.pause_start_time is None:
        draft.status.pause_start_time = draft.now
    if pause.duration is None:
        moves.hold(draft, reasons.PAUSE_STEP, f"paused at {step_name(draft)} until `kiln resume` or `kiln promote`")
        return False
    left = base.duration_of(pause.duration) - draft.elapsed(draft.status.pause_start_time)
    if left <= datetime.timedelta(0):
        return True
    moves.hold(
        draft,
        reasons.PAUSE_STEP,
        f"paused at {step_name(draft)} for {pause.duration} ({left.total_seconds():.0f}s left)",
    )
    return False


def _background(draft: rollout.Draft) -> bool:
    """Run the background analysis where it applies; whether the steps may go on."""
    canary = canary_of(draft.spec, draft.status)
    index = draft.status.current_step_index or 0
    if (
        canary is None
        or canary.analysis is None
        or index < canary.analysis.starting_step
        or promoting(draft.spec, draft.status)
    ):
        return True
    verdict = moves.analyse(draft, list(canary.analysis.metrics), None, "background analysis")
    return verdict in (Verdict.RUNNING, Verdict.SUCCESSFUL)


def progress(draft: rollout.Draft) -> None:
    """Move the rollout of status.candidateVersion as far as it can go now."""
    if draft.spec.paused:
        moves.hold(draft, reasons.PAUSED_BY_SPEC, "spec.paused holds the rollout; `kiln resume` releases it")
        return
    if not _background(draft):
        return
    steps = steps_of(draft.spec, draft.status)
    for _ in range(len(steps) + 1):
        index = draft.status.current_step_index or 0
        if index >= len(steps):
            moves.promote(draft)
            return
        step = steps[index]
        if step.set_weight is not None:
            needed = serving.replicas_for_weight(draft.spec.full_size, step.set_weight)
            if not moves.pods_ready(draft, needed, f"{step_name(draft)}, setWeight {step.set_weight}"):
                return
            draft.set_weights(100 - step.set_weight, step.set_weight)
            draft.event(
                reasons.WEIGHT_SET,
                f"{step_name(draft)}: {step.set_weight}% of traffic to version {draft.status.candidate_version}",
            )
        elif step.pause is not None:
            if not _pause_over(draft, step.pause):
                return
        elif step.analysis is not None:
            verdict = moves.analyse(draft, list(step.analysis.metrics), index, f"analysis at {step_name(draft)}")
            if verdict is not Verdict.SUCCESSFUL:
                if verdict is Verdict.RUNNING:
                    draft.set_phase(Phase.PROGRESSING, f"analysing {step_name(draft)}")
                return
            draft.event(reasons.STEP_COMPLETED, f"{step_name(draft)}: analysis successful")
        draft.next_step()
    draft.set_phase(Phase.PROGRESSING, f"at {step_name(draft)}")
