"""The moves every strategy makes with a candidate: wait for its pods, analyse it, hold, promote it.

`kiln.delivery.canary`, `bluegreen` and `shadow` each decide when; these say how, the same way
for all three, so a rollback, a pause and a promotion read alike whatever the strategy.
"""

from __future__ import annotations

import datetime

from kiln.api import base, conditions, modeldeployment
from kiln.delivery import analysis, reasons, rollout

Phase = modeldeployment.ModelDeploymentPhase
Outcome = modeldeployment.RolloutOutcome
Verdict = modeldeployment.AnalysisPhase
TRUE, FALSE = base.ConditionStatus.TRUE, base.ConditionStatus.FALSE


def pods_ready(draft: rollout.Draft, needed: int, what: str) -> bool:
    """Whether the candidate has `needed` ready pods; past the deadline it is rolled back."""
    candidate = draft.status.candidate_version or ""
    ready = draft.observed.ready(candidate)
    if ready >= needed:
        waiting = conditions.find(draft.status.conditions, reasons.PROGRESSING)
        if waiting is not None and waiting.reason == reasons.WAITING_FOR_PODS:  # the wait is over: say so
            draft.condition(
                reasons.PROGRESSING, TRUE, reasons.PODS_READY, f"{what}: {ready} pods of version {candidate} ready"
            )
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


def hold(draft: rollout.Draft, reason: str, message: str) -> None:
    draft.set_phase(Phase.PAUSED, message)
    draft.condition(reasons.PAUSED, TRUE, reason, message)


def variables(draft: rollout.Draft) -> dict[str, str]:
    values = {"model": draft.spec.model, "namespace": draft.observed.namespace, "deployment": draft.observed.name}
    for name, version in (("stable", draft.status.stable_version), ("candidate", draft.status.candidate_version)):
        if version is not None:
            values[name] = version
    return values


def analyse(draft: rollout.Draft, names: list[str], step: int | None, where: str) -> Verdict:
    """Take the analysis at `step` (None: background) one measurement further; its verdict. `where`
    names the analysis in messages (`analysis at step 2 of 5`, `pre-promotion analysis`)."""
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
    if verdict is Verdict.FAILED:
        draft.roll_back(Outcome.ROLLED_BACK, reasons.ANALYSIS_FAILED, f"{where} failed: {message}")
    elif verdict is Verdict.INCONCLUSIVE:
        hold(draft, reasons.ANALYSIS_INCONCLUSIVE, f"{where} is inconclusive, so the rollout waits: {message}")
    return verdict


def promote(draft: rollout.Draft) -> None:
    """Once the candidate runs at full size, make it stable; the old version retires later."""
    if pods_ready(draft, draft.spec.full_size, "promoting"):
        finish(draft)


def finish(draft: rollout.Draft) -> None:
    """The candidate is stable from now on: all traffic to it, the old version retiring."""
    candidate = draft.status.candidate_version or ""
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
