"""Condition types and the reasons conditions and Events give, named once so both use the same words."""

from __future__ import annotations

from typing import Final

# Condition types.
READY: Final = "Ready"
PROGRESSING: Final = "Progressing"
AVAILABLE: Final = "Available"
PAUSED: Final = "Paused"
CONDITION_ORDER: Final = (READY, PROGRESSING, AVAILABLE, PAUSED)

# Choosing a version.
NO_SERVABLE_VERSION: Final = "NoServableVersion"
INCOMPATIBLE_SIGNATURE: Final = "IncompatibleSignature"
UNSUPPORTED: Final = "Unsupported"

# Serving.
DEPLOYED: Final = "Deployed"
WAITING_FOR_PODS: Final = "WaitingForPods"
PODS_READY: Final = "PodsReady"
SERVING: Final = "Serving"
NOT_SERVING: Final = "NotServing"

# The rollout.
ROLLOUT_STARTED: Final = "RolloutStarted"
WEIGHT_SET: Final = "WeightSet"
STEP_COMPLETED: Final = "StepCompleted"
PROMOTING: Final = "Promoting"
PROMOTED: Final = "Promoted"
SUPERSEDED: Final = "Superseded"
ROLLED_BACK: Final = "RolledBack"
ABORTED: Final = "Aborted"
ANALYSIS_FAILED: Final = "AnalysisFailed"
ANALYSIS_INCONCLUSIVE: Final = "AnalysisInconclusive"
PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"
RETIRED: Final = "Retired"
HEALTHY: Final = "Healthy"

# Holding.
PAUSED_BY_SPEC: Final = "PausedBySpec"
PAUSE_STEP: Final = "PauseStep"
RESUMED: Final = "Resumed"
NOT_PAUSED: Final = "NotPaused"

# People's requests (the rollout-action annotation).
PROMOTE_REQUESTED: Final = "PromoteRequested"
ACTION_IGNORED: Final = "ActionIgnored"
RETRY_REQUESTED: Final = "RetryRequested"

# Shadow.
SHADOW_PASSED: Final = "ShadowPassed"
SHADOW_DISCARDED: Final = "ShadowDiscarded"
SHADOW_INCONCLUSIVE: Final = "ShadowInconclusive"
