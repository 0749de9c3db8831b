"""Stages: which moves are allowed, and whether the registry grants the stage a version asks for.

A version asks for a stage in spec.stage and holds the one granted in status.stage. A move the
table forbids, or any move but archiving for a Rejected version, is refused; a move that only
lacks something that may still come (validation, approvals) waits for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kiln.api.modelversion import ModelVersionPhase, Stage
from kiln.registry import reasons

ALLOWED_MOVES: Mapping[Stage, frozenset[Stage]] = {
    Stage.NONE: frozenset({Stage.STAGING, Stage.ARCHIVED}),
    Stage.STAGING: frozenset({Stage.NONE, Stage.PRODUCTION, Stage.ARCHIVED}),
    Stage.PRODUCTION: frozenset({Stage.STAGING, Stage.ARCHIVED}),
    Stage.ARCHIVED: frozenset({Stage.STAGING}),
}
"""From each stage, the stages a version may move to in one step."""

_NEEDS_VALIDATION = frozenset({Stage.STAGING, Stage.PRODUCTION})
_UNDECIDED = frozenset({ModelVersionPhase.PENDING, ModelVersionPhase.VALIDATING})


@dataclass(frozen=True)
class Decision:
    """Whether the stage asked for is granted; when not, whether it is refused or waits, and why."""

    granted: bool
    refused: bool
    reason: str
    message: str


def _names(stages: frozenset[Stage]) -> str:
    return ", ".join(sorted(str(stage) for stage in stages))


def decide(
    current: Stage, wanted: Stage, phase: ModelVersionPhase, approvers: int, required_approvals: int
) -> Decision:
    """Whether a version in `current` may move to `wanted` now."""
    if wanted == current:
        return Decision(True, False, reasons.STAGE_CURRENT, f"the version is in stage {current}")
    allowed = ALLOWED_MOVES[current]
    if wanted not in allowed:
        message = f"{current} → {wanted} is not allowed; from {current} a version may move to {_names(allowed)}"
        return Decision(False, True, reasons.INVALID_STAGE_TRANSITION, message)
    if phase == ModelVersionPhase.REJECTED and wanted != Stage.ARCHIVED:
        message = f"the version is Rejected, so it may only be archived, not moved to {wanted}"
        return Decision(False, True, reasons.VERSION_REJECTED, message)
    if phase in _UNDECIDED and wanted in _NEEDS_VALIDATION:
        message = f"{wanted} waits for the version to be validated"
        return Decision(False, False, reasons.AWAITING_VALIDATION, message)
    if wanted == Stage.PRODUCTION and approvers < required_approvals:
        message = f"Production needs {required_approvals} distinct approvals and the version has {approvers}"
        return Decision(False, False, reasons.AWAITING_APPROVALS, message)
    return Decision(True, False, reasons.STAGE_CHANGED, f"{current} → {wanted}")
