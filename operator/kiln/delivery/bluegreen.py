"""The blue-green state machine: preview the candidate beside the active version, switch at once.

Step 0 is the preview: the candidate runs `previewReplicas` pods behind `<name>-preview` (and
through the router with `x-kiln-variant: preview`) while the active version keeps all traffic;
pre-promotion analysis runs on it; then promotion waits `autoPromotionSeconds` (with
`autoPromotion`) or for `kiln promote`. Step 1 is the switch: the candidate is scaled to full
size, then all traffic moves to it in one write of the router's configuration, so from then on
no answer comes from the old version; post-promotion analysis runs while the old version keeps
running at full size, and a failure switches straight back to it. When that analysis passes (or
there is none) the candidate becomes stable and the old version retires after
`scaleDownDelaySeconds`.
"""

from __future__ import annotations

import datetime

from kiln.api import modeldeployment
from kiln.delivery import moves, reasons, rollout

Phase = modeldeployment.ModelDeploymentPhase
Verdict = modeldeployment.AnalysisPhase
PREVIEW, SWITCHED = 0, 1


def candidate_replicas(spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus) -> int:
    blue_green = spec.strategy.blue_green or modeldeployment.BlueGreen()
    if (status.current_step_index or 0) >= SWITCHED:
        return spec.full_size
    return blue_green.preview_replicas or spec.full_size


def _previewed(draft: rollout.Draft, blue_green: modeldeployment.BlueGreen) -> bool:
    """Whether the preview is ready, analysed and due for promotion."""
    candidate = draft.status.candidate_version
    if not moves.pods_ready(draft, candidate_replicas(draft.spec, draft.status), "preview"):
        return False
    analysis = blue_green.pre_promotion_analysis
    if analysis is not None:
        verdict = moves.analyse(draft, list(analysis.metrics), PREVIEW, "pre-promotion analysis")
        if verdict is not Verdict.SUCCESSFUL:
            if verdict is Verdict.RUNNING:
                draft.set_phase(Phase.PROGRESSING, f"pre-promotion analysis of the preview of version {candidate}")
            return False
    if draft.status.pause_start_time is None:
        draft.status.pause_start_time = draft.now  # the preview is ready: the promotion clock starts
    if not blue_green.auto_promotion:
        moves.hold(draft, reasons.PAUSE_STEP, f"the preview of version {candidate} is ready; `kiln promote` switches")
        return False
    left = datetime.timedelta(seconds=blue_green.auto_promotion_seconds) - draft.elapsed(draft.status.pause_start_time)
    if left > datetime.timedelta(0):
        message = f"the preview of version {candidate} is ready; switching in {left.total_seconds():.0f}s"
        draft.set_phase(Phase.PROGRESSING, message)
        return False
    return True


def _switched(draft: rollout.Draft, blue_green: modeldeployment.BlueGreen) -> bool:
    """Switch all traffic to the candidate once it runs at full size; whether post-promotion
    analysis (if any) has passed."""
    candidate = draft.status.candidate_version
    if draft.status.weights.canary < 100:
        if not moves.pods_ready(draft, draft.spec.full_size, "switching"):
            return False
        draft.set_weights(0, 100)
        draft.status.step_start_time = draft.now
        draft.event(reasons.WEIGHT_SET, f"all traffic switched to version {candidate}")
    analysis = blue_green.post_promotion_analysis
    if analysis is None:
        return True
    verdict = moves.analyse(draft, list(analysis.metrics), SWITCHED, "post-promotion analysis")
    if verdict is Verdict.RUNNING:
        draft.set_phase(Phase.PROGRESSING, f"post-promotion analysis of version {candidate}")
    return verdict is Verdict.SUCCESSFUL


def progress(draft: rollout.Draft) -> None:
    """Move the blue-green rollout of status.candidateVersion as far as it can go now."""
    blue_green = draft.spec.strategy.blue_green or modeldeployment.BlueGreen()
    if draft.spec.paused:
        moves.hold(draft, reasons.PAUSED_BY_SPEC, "spec.paused holds the rollout; `kiln resume` releases it")
        return
    if (draft.status.current_step_index or 0) == PREVIEW:
        if not _previewed(draft, blue_green):
            return
        draft.next_step()
    if _switched(draft, blue_green):
        moves.finish(draft)
