"""The canary state machine: walk the steps, run analysis, promote or roll back.

A rollout is at `status.currentStepIndex`; one reconcile moves through as many steps as the
observed state allows (a setWeight whose pods are ready, a pause that has run out, an analysis
that succeeded) and stops at the first that must wait. The index one past the last step is
promotion: once the candidate runs at full size it becomes stable, the router sends it all
traffic, and the old version retires after `scaleDownDelaySeconds`. With no canary strategy a
rollout starts at promotion.

The candidate is ready before any weight moves to it: a setWeight waits until the candidate has
that share of spec.replicas ready (at least one pod), and a candidate that is not ready within
`progressDeadlineSeconds` of its step's start is rolled back.
"""

from __future__ import annotations

import datetime

from kiln.api import base, modeldeployment
from kiln.delivery import analysis, reasons, rollout, serving

Phase = modeldeployment.ModelDeploymentPhase
Outcome = modeldeployment.RolloutOutcome
Verdict = modeldeployment.AnalysisPhase
TRUE, FALSE = base.ConditionStatus.TRUE, base.ConditionStatus.FALSE


def steps_of(spec: modeldeployment.ModelDeploymentSpec) -> list[modeldeployment.CanaryStep]:
    return list(spec.strategy.canary.steps) if spec.strategy.canary else []


def scale_down_delay(spec: modeldeployment.ModelDeploymentSpec) -> datetime.timedelta:
    canary = spec.strategy.canary or modeldeployment.Canary()
    return datetime.timedelta(seconds=canary.scale_down_delay_seconds)


def promoting(spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus) -> bool:
    """Whether the rollout has passed its last step and the candidate is scaled to full size."""
    return status.candidate_version is not None and (status.current_step_index or 0) >= len(steps_of(spec))


def candidate_replicas(spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus) -> int:
    """The candidate's pods: enough for the weight it has or is about to get; all at promotion."""
    if promoting(spec, status):
        return spec.replicas
    steps = steps_of(spec)
    index = status.current_step_index or 0
    upcoming = steps[index].set_weight if index < len(steps) else None
    weight = max(status.weights.canary, upcoming or 0)
    return serving.replicas_for_weight(spec.replicas, weight)


def _pods_ready(draft: rollout.Draft, needed: int, what: str) -> bool:
    """Whether the candidate has `needed` ready pods; past the deadline it is rolled back."""
    candidate = draft.status.candidate_version or ""
    ready = draft.observed.ready(candidate)
    if ready >= needed:
        return True
    deadline = datetime.timedelta(seconds=draft.spec.progress_deadline_seconds)
    if draft.elapsed(draft.status.step_start_time) > deadline:
        message = (
            f"{ready} of {needed} pods of version {candidate} were ready after the progressDeadlineSeconds "
            f"of {draft.spec.progress_deadline_seconds}"
        )
        draft.roll_back(Outcome.ROLLED_BACK, reasons.PROGRESS_DEADLINE_EXCEEDED, message)
        return False
    draft.set_phase(Phase.PROGRESSING, f"{what}: {ready} of {needed} pods of version {candidate} ready")
    draft.condition(reasons.PROGRESSING, TRUE, reasons.WAITING_FOR_PODS, draft.status.message or "")
    return False


def _hold(draft: rollout.Draft, reason: str, message: str) -> None:
    draft.set_phase(Phase.PAUSED, message)
    draft.condition(reasons.PAUSED, TRUE, reason, message)


def _pause_over(draft: rollout.Draft, pause: modeldeployment.Pause) -> bool:
    index = draft.status.current_step_index
    if draft.status.pause_start_time is None:
        draft.status.pause_start_time = draft.now
    if pause.duration is None:
        _hold(draft, reasons.PAUSE_STEP, f"paused at step {index} until `kiln resume` or `kiln promote`")
        return False
    left = base.duration_of(pause.duration) - draft.elapsed(draft.status.pause_start_time)
    if left <= datetime.timedelta(0):
        return True
    _hold(draft, reasons.PAUSE_STEP, f"paused at step {index} for {pause.duration} ({left.total_seconds():.0f}s left)")
    return False


def variables(draft: rollout.Draft) -> dict[str, str]:
    values = {"model": draft.spec.model, "namespace": draft.observed.namespace, "deployment": draft.observed.name}
    for name, version in (("stable", draft.status.stable_version), ("candidate", draft.status.candidate_version)):
        if version is not None:
            values[name] = version
    return values


def _analyse(draft: rollout.Draft, names: list[str], step: int | None) -> Verdict:
    """Take the analysis at `step` (None: background) one measurement further; its verdict."""
    known = {result.metric for result in draft.results(step)}
    metrics = analysis.metrics_for(draft.spec, names)
    draft.status.analysis = [
        *draft.status.analysis,
        *(analysis.started(metric.name, step, draft.now) for metric in metrics if metric.name not in known),
    ]
    answers = draft.observed.answers
    for metric in metrics:
        result = next(r for r in draft.results(step) if r.metric == metric.name)
        if not analysis.due(result, metric, draft.now):
            continue
        if answers is None:
            draft.measure.append(
                analysis.request_for(metric, step, variables(draft), draft.observed.default_prometheus)
            )
            continue
        answer = answers.get(analysis.key_of(metric.name, step))
        if answer is None:
            continue
        folded = analysis.fold(result, metric, analysis.judge(metric, answer, draft.now))
        if step is None and folded.phase is Verdict.SUCCESSFUL:
            folded.phase = Verdict.RUNNING  # background analysis runs until the rollout ends
        draft.replace_result(folded)
    names_run = {metric.name for metric in metrics}
    verdict, message = analysis.verdict([r for r in draft.results(step) if r.metric in names_run])
    where = "background analysis" if step is None else f"analysis at step {step}"
    if verdict is Verdict.FAILED:
        draft.roll_back(Outcome.ROLLED_BACK, reasons.ANALYSIS_FAILED, f"{where} failed: {message}")
    elif verdict is Verdict.INCONCLUSIVE:
        _hold(draft, reasons.ANALYSIS_INCONCLUSIVE, f"{where} is inconclusive, so the rollout waits: {message}")
    return verdict


def _background(draft: rollout.Draft) -> bool:
    """Run the background analysis where it applies; whether the steps may go on."""
    canary = draft.spec.strategy.canary
    index = draft.status.current_step_index or 0
    if (
        canary is None
        or canary.analysis is None
        or index < canary.analysis.starting_step
        or promoting(draft.spec, draft.status)
    ):
        return True
    return _analyse(draft, list(canary.analysis.metrics), None) in (Verdict.RUNNING, Verdict.SUCCESSFUL)


def _promote(draft: rollout.Draft) -> None:
    candidate = draft.status.candidate_version or ""
    if not _pods_ready(draft, serving.replicas_for_weight(draft.spec.replicas, 100), "promoting"):
        return
    previous = draft.status.stable_version
    draft.status.stable_version = candidate
    if previous and previous != candidate:
        retiring = [r for r in draft.status.retiring if r.version not in (previous, candidate)]
        draft.status.retiring = [*retiring, modeldeployment.RetiringVersion(version=previous, since=draft.now)]
    for result in draft.results(None):
        if result.phase is Verdict.RUNNING:
            result.phase = Verdict.SUCCESSFUL
    message = f"version {candidate} promoted to stable, replacing {previous}"
    draft.finish_record(candidate, Outcome.PROMOTED, message)
    draft.end_rollout()
    draft.set_weights(100, 0)
    draft.set_phase(Phase.HEALTHY, message)
    draft.condition(reasons.PROGRESSING, FALSE, reasons.PROMOTED, message)
    draft.event(reasons.PROMOTED, message)


def progress(draft: rollout.Draft) -> None:
    """Move the rollout of status.candidateVersion as far as it can go now."""
    if draft.spec.paused:
        _hold(draft, reasons.PAUSED_BY_SPEC, "spec.paused holds the rollout; `kiln resume` releases it")
        return
    if not _background(draft):
        return
    steps = steps_of(draft.spec)
    for _ in range(len(steps) + 1):
        index = draft.status.current_step_index or 0
        if index >= len(steps):
            _promote(draft)
            return
        step = steps[index]
        if step.set_weight is not None:
            needed = serving.replicas_for_weight(draft.spec.replicas, step.set_weight)
            if not _pods_ready(draft, needed, f"step {index}, setWeight {step.set_weight}"):
                return
            draft.set_weights(100 - step.set_weight, step.set_weight)
            draft.event(
                reasons.WEIGHT_SET,
                f"step {index}: {step.set_weight}% of traffic to version {draft.status.candidate_version}",
            )
        elif step.pause is not None:
            if not _pause_over(draft, step.pause):
                return
        elif step.analysis is not None:
            verdict = _analyse(draft, list(step.analysis.metrics), index)
            if verdict is not Verdict.SUCCESSFUL:
                if verdict is Verdict.RUNNING:
                    draft.set_phase(Phase.PROGRESSING, f"analysing step {index}")
                return
            draft.event(reasons.STEP_COMPLETED, f"step {index}: analysis successful")
        draft.next_step()
    draft.set_phase(Phase.PROGRESSING, f"at step {draft.status.current_step_index}")
