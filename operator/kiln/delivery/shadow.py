"""The shadow state machine: mirror live traffic to the candidate, compare, then promote or discard.

While Shadowing, the candidate runs beside stable and gets a copy of `mirrorPercent` of live
requests; its answers never reach a client. The traffic provider compares each copy's prediction
with stable's on the same request, and the running figures (agreement, samples, latency ratio,
errors, drops) are kept in `status.shadow`. Analysis named by the shadow runs alongside. At the
end of `duration` the comparison decides: more disagreement than `maxDisagreement`, or a p99
latency ratio over `maxLatencyRatio`, discards the candidate with the figures in the reason; no
compared request at all holds the rollout (nothing to judge is not a pass). A provider that only
mirrors (gatewayAPI: the Gateway discards the copies' answers) leaves the decision to the shadow's
analysis, which the API then requires. A pass promotes with
`autoPromotion` (directly, or through the canary steps of `then`) or waits for `kiln promote`.
"""

from __future__ import annotations

from kiln.api import base, modeldeployment
from kiln.delivery import moves, reasons, rollout, serving, traffic

Phase = modeldeployment.ModelDeploymentPhase
ShadowPhase = modeldeployment.ShadowPhase
Verdict = modeldeployment.AnalysisPhase
Outcome = modeldeployment.RolloutOutcome
SHADOW_STEP = 0


def candidate_replicas(spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus) -> int:
    shadow = spec.strategy.shadow or modeldeployment.Shadow()
    if status.shadow is not None and status.shadow.phase is ShadowPhase.PROMOTING:
        return spec.full_size
    return serving.replicas_for_weight(spec.full_size, max(shadow.mirror_percent, 1))


def mirroring(status: modeldeployment.ModelDeploymentStatus) -> bool:
    """Whether the candidate gets mirrored traffic now."""
    return status.shadow is not None and status.shadow.phase is ShadowPhase.SHADOWING and status.weights.mirror > 0


def _record(draft: rollout.Draft, seen: traffic.Comparison | None) -> None:
    figures = draft.status.shadow
    if figures is None or seen is None:
        return
    if seen.error is not None:
        figures.message = seen.error
        return
    figures.compared, figures.agreed, figures.disagreed = seen.compared, seen.agreed, seen.disagreed
    figures.errors, figures.dropped, figures.latency_ratio = seen.errors, seen.dropped, seen.latency_ratio
    figures.agreement = seen.agreed / seen.compared if seen.compared else None
    figures.last_updated, figures.message = draft.now, None


def _verdict(shadow: modeldeployment.Shadow, figures: modeldeployment.ShadowStatus) -> str | None:
    """Why the shadow fails its comparison, or None when it passes."""
    comparison = shadow.comparison
    # Counted, not subtracted: 1 - 0.95 is a hair over 0.05 in floating point.
    if figures.compared and figures.disagreed > comparison.max_disagreement * figures.compared:
        return (
            f"the shadow disagreed with stable on {figures.disagreed} of {figures.compared} requests "
            f"({figures.disagreed / figures.compared:.1%}), more than maxDisagreement {comparison.max_disagreement:.1%}"
        )
    ratio, limit = figures.latency_ratio, comparison.max_latency_ratio
    if ratio is not None and limit is not None and ratio > limit:
        return f"the shadow's p99 latency was {ratio:.2f}x stable's, more than maxLatencyRatio {limit:g}"
    return None


def _shadowing(draft: rollout.Draft, shadow: modeldeployment.Shadow) -> bool:
    """Mirror, compare and analyse until the shadow period ends; whether the candidate passed."""
    status = draft.status
    figures = status.shadow or modeldeployment.ShadowStatus()
    status.shadow = figures
    if not moves.pods_ready(draft, candidate_replicas(draft.spec, status), "shadow"):
        return False
    if figures.started is None:
        figures.started = draft.now
        status.weights = modeldeployment.Weights(stable=100, canary=0, mirror=shadow.mirror_percent)
        draft.event(
            reasons.WEIGHT_SET, f"{shadow.mirror_percent}% of requests mirrored to version {status.candidate_version}"
        )
    comparing = traffic.Capability.COMPARISON in traffic.CAPABILITIES[draft.spec.traffic.provider]
    _record(draft, draft.observed.comparison)
    verdict = Verdict.SUCCESSFUL
    if shadow.analysis is not None:
        verdict = moves.analyse(draft, list(shadow.analysis.metrics), SHADOW_STEP, "shadow analysis")
        if verdict in (Verdict.FAILED, Verdict.INCONCLUSIVE):
            return False
    if draft.elapsed(figures.started) < base.duration_of(shadow.duration):
        agreement = "no comparison yet" if figures.agreement is None else f"agreement {figures.agreement:.1%}"
        draft.set_phase(
            Phase.PROGRESSING,
            f"shadowing version {status.candidate_version}: {agreement} over {figures.compared} requests",
        )
        return False
    if verdict is Verdict.RUNNING:
        draft.set_phase(Phase.PROGRESSING, "the shadow period is over; waiting for the shadow's analysis to finish")
        return False
    if not comparing:
        return True  # the provider only mirrors: the analysis, which the API requires then, has passed
    failure = _verdict(shadow, figures)
    if failure is not None:
        draft.roll_back(Outcome.DISCARDED, reasons.SHADOW_DISCARDED, f"discarded after the shadow period: {failure}")
        return False
    if not figures.compared:
        reason = figures.message or "no mirrored request was compared"
        moves.hold(draft, reasons.SHADOW_INCONCLUSIVE, f"the shadow period ended with nothing to judge: {reason}")
        return False
    return True


def _passed(draft: rollout.Draft, shadow: modeldeployment.Shadow) -> None:
    """The shadow passed: stop mirroring and go live, at once or by `kiln promote`."""
    figures = draft.status.shadow
    assert figures is not None
    if figures.phase is ShadowPhase.SHADOWING:
        figures.phase = ShadowPhase.PASSED
        draft.status.weights = modeldeployment.Weights(stable=100, canary=0, mirror=0)
        agreement = f"{figures.agreement:.1%}" if figures.agreement is not None else "n/a"
        draft.event(
            reasons.SHADOW_PASSED,
            f"the shadow of version {draft.status.candidate_version} passed: "
            f"agreement {agreement} over {figures.compared} requests",
        )
    if not shadow.auto_promotion:
        moves.hold(draft, reasons.PAUSE_STEP, "the shadow passed; `kiln promote` takes the candidate live")
        return
    go_live(draft)


def go_live(draft: rollout.Draft) -> None:
    """Leave the shadow: through the canary steps of `then`, or straight to promotion."""
    shadow = draft.spec.strategy.shadow or modeldeployment.Shadow()
    figures = draft.status.shadow or modeldeployment.ShadowStatus()
    draft.status.shadow = figures
    figures.phase = ShadowPhase.CANARY if shadow.then is not None else ShadowPhase.PROMOTING
    draft.status.weights = modeldeployment.Weights(stable=100, canary=0, mirror=0)
    draft.status.current_step_index = 0
    draft.status.step_start_time = draft.now
    draft.status.pause_start_time = None


def progress(draft: rollout.Draft) -> None:
    """Move the shadow rollout of status.candidateVersion as far as it can go now."""
    shadow = draft.spec.strategy.shadow or modeldeployment.Shadow()
    if draft.spec.paused:
        moves.hold(draft, reasons.PAUSED_BY_SPEC, "spec.paused holds the rollout; `kiln resume` releases it")
        return
    figures = draft.status.shadow
    if figures is None or figures.phase is ShadowPhase.SHADOWING:
        if _shadowing(draft, shadow):
            _passed(draft, shadow)
        return
    if figures.phase is ShadowPhase.PASSED:
        _passed(draft, shadow)
        return
    if figures.phase is ShadowPhase.PROMOTING:
        moves.promote(draft)
