"""A ModelDeployment's monitoring plan: from what was observed and the time, the drift and
retraining status, the DriftDetected condition, the TrainingJob to create and the Events.

It runs only while the deployment is steady (`steady`): a rollout's candidate is judged by
analysis, not by drift. In order: a drift check when one is due, the triggers (a person's
`kiln retrain` first, then spec.monitoring.retraining.triggers in order), and for each firing the
storm guards; the first firing they let through starts a TrainingJob, and every other one is held
as in flight. A plan that wants measurements (`Plan.measure`) is not acted on: the controller
takes them and plans again with the answers.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Mapping
from typing import Any

import pydantic

from kiln.api import base, conditions, events, modeldeployment, modelversion
from kiln.monitoring import drift, guards, reasons, retraining, triggers
from kiln.monitoring.measure import Answer, Query

Phase = modeldeployment.ModelDeploymentPhase
Status = modeldeployment.ModelDeploymentStatus


@dataclasses.dataclass(frozen=True)
class Job:
    """A retraining TrainingJob of the deployment."""

    name: str
    version: str | None
    """The version it registers (spec.output.version)."""
    finished: bool
    """Succeeded or Failed."""


@dataclasses.dataclass(frozen=True)
class Observed:
    namespace: str
    name: str
    generation: int | None
    annotations: Mapping[str, str]
    spec: modeldeployment.ModelDeploymentSpec
    status: Status
    baseline: modelversion.Baseline | None
    """The stable version's baseline."""
    versions: tuple[str, ...]
    """Every registered version of the model."""
    jobs: tuple[Job, ...]
    """The deployment's retraining TrainingJobs."""
    default_prometheus: str | None = None
    answers: Mapping[str, Answer] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Plan:
    status: Status
    create: tuple[dict[str, Any], ...] = ()
    """TrainingJobs to create."""
    events: tuple[events.Event, ...] = ()
    measure: tuple[Query, ...] = ()
    """Take these measurements and plan again with the answers before acting."""


def steady(status: Status) -> bool:
    """Whether the deployment serves one version with nothing rolling out: the time to watch it. A
    deployment whose last candidate was rolled back serves its stable version as a healthy one does,
    and is watched as well (a bad candidate must not blind drift monitoring until the next rollout)."""
    return (
        status.phase in (Phase.HEALTHY, Phase.ROLLED_BACK)
        and status.candidate_version is None
        and status.stable_version is not None
    )


@dataclasses.dataclass
class _Draft:
    observed: Observed
    now: datetime.datetime
    status: Status
    events: list[events.Event] = dataclasses.field(default_factory=list)
    create: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    measure: list[Query] = dataclasses.field(default_factory=list)

    @property
    def stable(self) -> str:
        assert self.status.stable_version is not None  # plan() runs only with a stable version
        return self.status.stable_version

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(events.Event("Warning" if warning else "Normal", reason, message))

    def ask(self, query: Query) -> Answer | None:
        """The answer to `query`, or None after asking for it."""
        answer = self.observed.answers.get(query.key)
        if answer is None:
            self.measure.append(query)
        return answer


def _address(source: modeldeployment.PrometheusSource | None, default: str | None) -> str | None:
    return source.address if source is not None else default


def _drift(draft: _Draft, spec: modeldeployment.Drift) -> modeldeployment.DriftStatus | None:
    """Check drift when a check is due; the drift status when the check detected drift."""
    observed = draft.observed
    held = drift.current(draft.status, draft.stable)
    baseline = observed.baseline
    if baseline is None or not baseline.features:
        verdict = drift.no_baseline(draft.stable)
    elif drift.due(spec, held, draft.now):
        target = drift.Target(observed.namespace, observed.spec.model, draft.stable, baseline)
        asked = drift.queries(spec, target, held, _address(spec.prometheus, observed.default_prometheus))
        answers = {query.key: draft.ask(query) for query in asked}
        if draft.measure:
            return None
        found = conditions.find(draft.status.conditions, reasons.DRIFT_DETECTED)
        was_detected = found is not None and found.status is base.ConditionStatus.TRUE
        verdict = drift.judge(
            spec, target, held, {k: a for k, a in answers.items() if a}, draft.now, was_detected=was_detected
        )
    else:
        return None
    draft.status.drift = verdict.status
    draft.status.conditions = conditions.set_condition(
        draft.status.conditions,
        reasons.DRIFT_DETECTED,
        status=verdict.condition,
        reason=verdict.reason,
        message=verdict.message,
        now=draft.now,
        observed_generation=observed.generation,
    )
    draft.events.extend(verdict.events)
    return verdict.status if verdict.detected else None


def _manual(draft: _Draft, held: modeldeployment.RetrainingStatus) -> triggers.Firing | None:
    text = draft.observed.annotations.get(modeldeployment.RETRAIN_REQUEST_ANNOTATION)
    if text is None:
        return None
    try:
        request = modeldeployment.RetrainRequest.model_validate_json(text)
        request_id = request.id
    except pydantic.ValidationError as error:
        request, request_id = None, "invalid-" + hashlib.sha256(text.encode()).hexdigest()[:16]
        problem = f"annotation {modeldeployment.RETRAIN_REQUEST_ANNOTATION} is not a retrain request: {error}"
    if request_id == held.handled_request:
        return None
    held.handled_request = request_id
    if request is None:
        draft.event(reasons.RETRAIN_REQUEST_INVALID, problem, warning=True)
        return None
    who = request.user or "an unknown user"
    why = f": {request.reason}" if request.reason else ""
    return triggers.Firing(modeldeployment.MANUAL_TRIGGER, f"kiln retrain {request.id}", f"kiln retrain by {who}{why}")


def _start(draft: _Draft, firing: triggers.Firing, held: modeldeployment.RetrainingStatus) -> None:
    observed = draft.observed
    taken = [*observed.versions, *(job.version for job in observed.jobs if job.version)]
    version = retraining.next_version(taken)
    body = retraining.training_job(
        observed.spec,
        namespace=observed.namespace,
        deployment=observed.name,
        stable=draft.stable,
        version=version,
        trigger=firing.trigger,
        reason=firing.reason,
    )
    name = body["metadata"]["name"]
    draft.create.append(body)
    run = modeldeployment.RetrainingRun(
        training_job=name, version=version, trigger=firing.trigger, reason=firing.reason, time=draft.now
    )
    held.runs = [*held.runs, run][-modeldeployment.MAX_RETRAININGS_PER_DAY :]
    held.training_job, held.reason, held.time = name, firing.reason, draft.now
    draft.event(
        reasons.RETRAINING_STARTED,
        f"TrainingJob {name} retrains {observed.spec.model} as {version} ({firing.trigger}): {firing.reason}",
    )


def _hold(draft: _Draft, firing: triggers.Firing, hold: guards.Hold, held: modeldeployment.RetrainingStatus) -> None:
    message = f"{firing.occasion}: {hold.message}"
    last = held.skipped
    if last is not None and (last.trigger, last.reason, last.message) == (firing.trigger, hold.reason, message):
        return  # told already: the same cause, held back by the same guard
    held.skipped = modeldeployment.SkippedTrigger(
        trigger=firing.trigger, reason=hold.reason, message=message, time=draft.now
    )
    draft.event(reasons.RETRAINING_SKIPPED, f"trigger {firing.trigger} fired but {hold.reason}: {message}", True)


def _retrain(
    draft: _Draft, spec: modeldeployment.Retraining | None, detected: modeldeployment.DriftStatus | None
) -> None:
    observed, now = draft.observed, draft.now
    held = (draft.status.retraining or modeldeployment.RetrainingStatus()).model_copy(deep=True)
    manual = _manual(draft, held)
    firings = [manual] if manual else []
    if spec is None:
        if manual is not None:
            draft.event(reasons.RETRAINING_SKIPPED, "kiln retrain: spec.monitoring.retraining is not set", True)
        if held != (draft.status.retraining or modeldeployment.RetrainingStatus()):
            draft.status.retraining = held
        return
    last = held.runs[-1].time if held.runs else None
    context = triggers.Context(
        observed.namespace,
        observed.spec.model,
        observed.name,
        draft.stable,
        last,
        observed.default_prometheus,
        detected,
    )
    states = []
    for trigger in spec.triggers:
        state = triggers.state_of(trigger, held.triggers, now)
        states.append(state)
        if triggers.query_due(trigger, state, now):
            query = triggers.query_for(trigger, state, context, now)
            answer = Answer(error=query.error) if query.error else draft.ask(query)
            answers = {query.key: answer} if answer is not None else {}
        else:
            answers = {}
        fired = triggers.evaluate(trigger, state, context, answers, now)
        if fired is not None:
            firings.append(fired)
    if draft.measure:
        return
    held.triggers = states
    in_flight = [job.name for job in observed.jobs if not job.finished]
    for firing in firings:
        started = [body["metadata"]["name"] for body in draft.create]
        hold = guards.hold(spec, held.runs, [*in_flight, *started], now, manual=firing is manual)
        if hold is None:
            _start(draft, firing, held)
        else:
            _hold(draft, firing, hold, held)
    draft.status.retraining = held


def plan(observed: Observed, now: datetime.datetime) -> Plan:
    """What monitoring does now; call it only while `steady(observed.status)`."""
    monitoring = observed.spec.monitoring
    if monitoring is None or observed.status.stable_version is None:
        return Plan(status=observed.status)
    draft = _Draft(observed, now, observed.status.model_copy(deep=True))
    detected = _drift(draft, monitoring.drift) if monitoring.drift is not None else None
    _retrain(draft, monitoring.retraining, detected)
    if draft.measure:
        return Plan(status=observed.status, measure=tuple(draft.measure))
    return Plan(status=draft.status, create=tuple(draft.create), events=tuple(draft.events))
