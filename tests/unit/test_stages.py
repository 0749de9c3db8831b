"""The stage transition table, and what a move needs besides being in it."""

from __future__ import annotations

import itertools

import pytest

from kiln.api.modelversion import ModelVersionPhase, Stage
from kiln.registry import reasons, stages

NONE, STAGING, PRODUCTION, ARCHIVED = Stage.NONE, Stage.STAGING, Stage.PRODUCTION, Stage.ARCHIVED
VALIDATED, REJECTED, PENDING = ModelVersionPhase.VALIDATED, ModelVersionPhase.REJECTED, ModelVersionPhase.PENDING

# Every move between two different stages, for a Validated version with its approvals.
ALLOWED = {
    (NONE, STAGING),
    (NONE, ARCHIVED),
    (STAGING, NONE),
    (STAGING, PRODUCTION),
    (STAGING, ARCHIVED),
    (PRODUCTION, STAGING),
    (PRODUCTION, ARCHIVED),
    (ARCHIVED, STAGING),
}


@pytest.mark.parametrize(("current", "wanted"), [m for m in itertools.product(Stage, Stage) if m[0] != m[1]])
def test_the_transition_table(current: Stage, wanted: Stage) -> None:
    decision = stages.decide(current, wanted, VALIDATED, approvers=0, required_approvals=0)
    assert decision.granted == ((current, wanted) in ALLOWED)
    if not decision.granted:
        assert decision.refused
        assert decision.reason == reasons.INVALID_STAGE_TRANSITION
        assert decision.message.startswith(f"{current} → {wanted} is not allowed; from {current} a version may move to")


@pytest.mark.parametrize(
    ("move", "needs", "decision"),
    [
        ((STAGING, STAGING), (REJECTED, 0, 0), (True, False, reasons.STAGE_CURRENT)),
        ((NONE, STAGING), (PENDING, 0, 0), (False, False, reasons.AWAITING_VALIDATION)),
        ((NONE, STAGING), (ModelVersionPhase.VALIDATING, 0, 0), (False, False, reasons.AWAITING_VALIDATION)),
        ((NONE, ARCHIVED), (PENDING, 0, 0), (True, False, reasons.STAGE_CHANGED)),
        ((NONE, STAGING), (REJECTED, 0, 0), (False, True, reasons.VERSION_REJECTED)),
        ((STAGING, PRODUCTION), (REJECTED, 3, 2), (False, True, reasons.VERSION_REJECTED)),
        ((STAGING, ARCHIVED), (REJECTED, 0, 0), (True, False, reasons.STAGE_CHANGED)),
        ((NONE, PRODUCTION), (REJECTED, 0, 0), (False, True, reasons.INVALID_STAGE_TRANSITION)),
        ((STAGING, PRODUCTION), (VALIDATED, 1, 2), (False, False, reasons.AWAITING_APPROVALS)),
        ((STAGING, PRODUCTION), (VALIDATED, 2, 2), (True, False, reasons.STAGE_CHANGED)),
        ((STAGING, PRODUCTION), (PENDING, 2, 2), (False, False, reasons.AWAITING_VALIDATION)),
        ((PRODUCTION, ARCHIVED), (VALIDATED, 0, 2), (True, False, reasons.STAGE_CHANGED)),
    ],
)
def test_what_a_move_needs(
    move: tuple[Stage, Stage], needs: tuple[ModelVersionPhase, int, int], decision: tuple[bool, bool, str]
) -> None:
    """needs: (phase, distinct approvers, required approvals); decision: (granted, refused, reason)."""
    current, wanted = move
    phase, approvers, required = needs
    made = stages.decide(current, wanted, phase, approvers, required)
    assert (made.granted, made.refused, made.reason) == decision
