"""The ModelVersion controller's pure plan: observed state and the time in, new status and actions out.

The plan validates a version once for each set of gates and metrics (Pending → Validating →
Validated | Rejected), counts distinct approvers, grants or refuses the stage asked for, records
each approval and stage change in the bounded audit trail, and asks the model's older Production
versions to step down to Archived when this one is promoted. Events are planned only when
something changes, so a plan run again on the same state plans none.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from kiln.api import base, conditions, drafts, events, modelversion
from kiln.api.modelversion import ModelVersionPhase, ModelVersionStatus, Stage, StageChange, StageRequest
from kiln.registry import reasons, stages, validation
from kiln.registry.observed import Observed

UNATTRIBUTED = "unknown"
"""The requester recorded for a spec.stage that `kiln stage` did not set."""

# Ready first, as `kubectl describe` readers look for it; the rest in the order a version meets them.
_CONDITION_ORDER = {
    condition: index
    for index, condition in enumerate(
        (reasons.READY, reasons.VALIDATED, reasons.ARTIFACT_VERIFIED, reasons.APPROVED, reasons.STAGE_GRANTED)
    )
}
_UNATTRIBUTED_COMMENT = "spec.stage was changed without `kiln stage`, so who asked is not known"


@dataclass(frozen=True)
class Supersede:
    """Ask another version of the model, in Production before this one, to move to Archived."""

    name: str
    request: StageRequest


@dataclass(frozen=True)
class Plan:
    status: ModelVersionStatus
    events: tuple[events.Event, ...] = ()
    supersede: tuple[Supersede, ...] = ()
    check_artifact: bool = False
    """Read the artifact and plan again with what it showed before acting on anything else."""


@dataclass
class _Draft(drafts.StatusDraft):
    """The status being built and the events it calls for."""

    observed: Observed
    now: datetime.datetime
    status: ModelVersionStatus
    events: list[events.Event] = field(default_factory=list)

    def finished(self) -> ModelVersionStatus:
        """The status, with the conditions in their order and the generation it reflects."""
        self.status.conditions.sort(key=lambda condition: _CONDITION_ORDER.get(condition.type, len(_CONDITION_ORDER)))
        self.status.observed_generation = self.observed.generation
        return self.status

    def audit(self, entry: StageChange) -> None:
        self.status.history = [*self.status.history, entry][-modelversion.HISTORY_LIMIT :]


def _truth(value: bool) -> base.ConditionStatus:
    return base.ConditionStatus.TRUE if value else base.ConditionStatus.FALSE


def _start_validation(draft: _Draft) -> Plan:
    draft.status.phase = ModelVersionPhase.VALIDATING
    draft.status.message = "reading the artifact to check its digest"
    unknown = base.ConditionStatus.UNKNOWN
    draft.condition(reasons.VALIDATED, unknown, reasons.VALIDATING, draft.status.message)
    draft.condition(reasons.READY, base.ConditionStatus.FALSE, reasons.VALIDATING, draft.status.message)
    return Plan(status=draft.finished(), check_artifact=True)


def _gate_event(result: modelversion.GateResult) -> events.Event:
    actual = "missing" if result.actual is None else f"{result.actual:g}"
    outcome = "passed" if result.passed else f"failed: {result.message}"
    message = f"{result.metric} = {actual}, expected {result.expected}: {outcome}"
    return events.Event(
        "Normal" if result.passed else "Warning", reasons.GATE_PASSED if result.passed else reasons.GATE_FAILED, message
    )


def _validate(draft: _Draft) -> None:
    verdict = validation.validate(draft.observed)
    status = draft.status
    status.phase = verdict.phase
    status.duplicate_of = verdict.duplicate_of
    status.message = verdict.message
    status.gate_results = verdict.gate_results
    status.validated_inputs = validation.inputs_digest(draft.observed.spec)
    validated = verdict.phase == ModelVersionPhase.VALIDATED
    draft.condition(reasons.VALIDATED, _truth(validated), verdict.reason, verdict.message)
    draft.condition(
        reasons.ARTIFACT_VERIFIED, verdict.artifact.status, verdict.artifact.reason, verdict.artifact.message
    )
    draft.events.extend(_gate_event(result) for result in verdict.gate_results)
    draft.events.append(
        events.Event("Normal" if validated else "Warning", verdict.reason, f"{verdict.phase}: {verdict.message}")
    )


def _record_approvals(draft: _Draft) -> None:
    spec, status = draft.observed.spec, draft.status
    first_approvals: dict[str, modelversion.Approval] = {}
    for approval in spec.approvals:
        first_approvals.setdefault(approval.approver, approval)
    required = spec.required_approvals
    for count, (approver, approval) in enumerate(first_approvals.items(), start=1):
        if approver in status.approved_by:
            continue
        draft.audit(StageChange(action="Approved", user=approver, time=approval.time, comment=approval.comment))
        note = f": {approval.comment}" if approval.comment else ""
        draft.events.append(
            events.Event(
                "Normal", reasons.NEW_APPROVAL, f"approved by {approver} ({count} of {required} required){note}"
            )
        )
    status.approved_by = list(first_approvals)
    met = len(status.approved_by) >= required
    if required == 0:
        message = "Production needs no approvals"
    else:
        approvers = ", ".join(status.approved_by) or "nobody yet"
        message = f"approved by {approvers} ({len(status.approved_by)} of {required} required)"
    draft.condition(reasons.APPROVED, _truth(met), reasons.APPROVALS_MET if met else reasons.APPROVALS_PENDING, message)


def _requester(observed: Observed) -> tuple[str, str]:
    request = observed.stage_request
    if request is not None and request.stage == observed.spec.stage:
        return request.user, request.comment
    return UNATTRIBUTED, _UNATTRIBUTED_COMMENT


def _move_stage(draft: _Draft) -> stages.Decision:
    observed, status = draft.observed, draft.status
    wanted = observed.spec.stage
    decision = stages.decide(
        status.stage, wanted, status.phase, len(status.approved_by), observed.spec.required_approvals
    )
    if decision.granted and wanted != status.stage:
        user, comment = _requester(observed)
        draft.audit(
            StageChange(
                action="StageChanged",
                user=user,
                time=draft.now,
                from_stage=status.stage,
                to_stage=wanted,
                comment=comment,
            )
        )
        note = f": {comment}" if comment else ""
        draft.events.append(
            events.Event("Normal", reasons.STAGE_CHANGED, f"{status.stage} → {wanted}, asked for by {user}{note}")
        )
        status.stage, status.stage_since = wanted, draft.now
        decision = stages.decide(wanted, wanted, status.phase, 0, 0)
    previous = conditions.find(status.conditions, reasons.STAGE_GRANTED)
    news = previous is None or (previous.reason, previous.message) != (decision.reason, decision.message)
    if not decision.granted and news:
        draft.events.append(
            events.Event(
                "Warning" if decision.refused else "Normal", decision.reason, f"stage {wanted}: {decision.message}"
            )
        )
    draft.condition(reasons.STAGE_GRANTED, _truth(decision.granted), decision.reason, decision.message)
    return decision


def _promoter(status: ModelVersionStatus) -> str:
    promotions = [
        entry for entry in status.history if entry.action == "StageChanged" and entry.to_stage == Stage.PRODUCTION
    ]
    return promotions[-1].user if promotions else UNATTRIBUTED


def _supersede(draft: _Draft) -> tuple[Supersede, ...]:
    """Older Production versions of the model step down; the newest promotion wins, so two versions
    promoted at once settle on one Production version whichever controller acts first."""
    observed, status = draft.observed, draft.status
    if status.stage != Stage.PRODUCTION or status.stage_since is None:
        return ()
    mine = (status.stage_since, observed.version)
    older = [
        sibling
        for sibling in observed.siblings
        if sibling.stage == Stage.PRODUCTION
        and sibling.wanted_stage != Stage.ARCHIVED
        and (sibling.stage_since, sibling.version) < mine
    ]
    comment = f"superseded in Production by {observed.name} ({observed.spec.version})"
    user = _promoter(status)
    for sibling in older:
        draft.events.append(
            events.Event(
                "Normal",
                reasons.SUPERSEDED,
                f"archiving {sibling.name} ({sibling.version}), the previous Production version",
            )
        )
    request = StageRequest(stage=Stage.ARCHIVED, user=user, time=draft.now, comment=comment)
    return tuple(Supersede(sibling.name, request) for sibling in older)


def _ready(draft: _Draft, stage: stages.Decision) -> None:
    status = draft.status
    if status.phase == ModelVersionPhase.REJECTED:
        validated = conditions.find(status.conditions, reasons.VALIDATED)
        reason = validated.reason if validated else reasons.VERSION_REJECTED
        draft.condition(reasons.READY, base.ConditionStatus.FALSE, reason, status.message or "")
        return
    ready = stage.granted
    message = f"Validated and in stage {status.stage}" if ready else stage.message
    draft.condition(reasons.READY, _truth(ready), reasons.VALIDATED if ready else stage.reason, message)


def plan(observed: Observed, now: datetime.datetime) -> Plan:
    """What to do about one ModelVersion now."""
    draft = _Draft(observed, now, observed.status.model_copy(deep=True))
    if draft.status.validated_inputs != validation.inputs_digest(observed.spec):
        if observed.artifact is None and validation.version_holder(observed) is None:
            return _start_validation(draft)
        _validate(draft)
    _record_approvals(draft)
    stage = _move_stage(draft)
    superseded = _supersede(draft)
    _ready(draft, stage)
    return Plan(status=draft.finished(), events=tuple(draft.events), supersede=superseded)
