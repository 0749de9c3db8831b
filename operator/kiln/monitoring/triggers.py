"""Retraining triggers: which fired, and what each trigger saw.

- Drift fires at a drift check that finds drift detected.
- Schedule fires at the first reconcile after a cron tick; the first tick counted is the first
  after Kiln began watching the trigger, and ticks missed meanwhile count as one.
- DataVolume runs its query every interval and fires when the value is at least threshold;
  QualityDrop fires when it is below. An empty answer (no data) or an error fires nothing and says
  so in the trigger's state.

Each firing carries an occasion, the same for as long as one cause lasts (a drift episode, a tick,
a check), so a guard's hold is told once per cause, not at every reconcile.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping

from kiln.api import base, modeldeployment
from kiln.monitoring import schedule, templates
from kiln.monitoring.measure import Answer, Query

QUERY_KEY = "trigger:"
Trigger = modeldeployment.RetrainingTrigger
TriggerType = modeldeployment.TriggerType
State = modeldeployment.TriggerState


@dataclasses.dataclass(frozen=True)
class Firing:
    trigger: str
    occasion: str
    """What fired it, the same for as long as the cause lasts."""
    reason: str
    """Why, with the values, for the TrainingJob's annotation and status."""


@dataclasses.dataclass(frozen=True)
class Context:
    """What the triggers read besides their own state."""

    namespace: str
    model: str
    deployment: str
    version: str
    last_retraining: datetime.datetime | None
    default_address: str | None
    drift: modeldeployment.DriftStatus | None = None
    """The drift check made in this reconcile, when drift was detected at it."""


def state_of(trigger: Trigger, states: list[State], now: datetime.datetime) -> State:
    found = next((state for state in states if state.trigger == trigger.key), None)
    return found.model_copy(deep=True) if found is not None else State(trigger=trigger.key, since=now)


def _queried(trigger: Trigger) -> bool:
    return trigger.type in (TriggerType.DATA_VOLUME, TriggerType.QUALITY_DROP)


def query_due(trigger: Trigger, state: State, now: datetime.datetime) -> bool:
    if not _queried(trigger):
        return False
    return state.last_checked is None or now - state.last_checked >= base.duration_of(trigger.interval)


def query_for(trigger: Trigger, state: State, context: Context, now: datetime.datetime) -> Query:
    template = trigger.query or modeldeployment.DEFAULT_QUALITY_QUERY
    since = now - (context.last_retraining or state.since)
    variables = {
        "namespace": context.namespace,
        "model": context.model,
        "deployment": context.deployment,
        "version": context.version,
        "since": templates.duration(since),
    }
    address = trigger.prometheus.address if trigger.prometheus else context.default_address
    key = QUERY_KEY + trigger.key
    try:
        return Query(key, templates.render(template, variables), address)
    except ValueError as error:
        return Query(key, template, address, error=f"query: {error}")


def _moment(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _scheduled(trigger: Trigger, state: State, now: datetime.datetime) -> Firing | None:
    assert trigger.schedule is not None  # the API requires it of a Schedule trigger
    try:
        tick = schedule.due(trigger.schedule, state.last_tick or state.since, now)
        if tick is None:
            if state.message is None:
                state.message = f"next tick at {_moment(schedule.next_tick(trigger.schedule, now))}"
            return None
        state.last_tick = state.last_checked = tick
        state.message = f"ticked at {_moment(tick)}; next at {_moment(schedule.next_tick(trigger.schedule, now))}"
    except ValueError as error:
        state.message = str(error)
        return None
    return Firing(
        trigger.key, f"schedule tick {_moment(tick)}", f"schedule {trigger.schedule!r} ticked at {_moment(tick)}"
    )


def _measured(trigger: Trigger, state: State, answer: Answer, now: datetime.datetime) -> Firing | None:
    state.last_checked = now
    if answer.error is not None:
        state.value, state.message = None, f"could not run the query: {answer.error}"
        return None
    if answer.value is None:
        state.value, state.message = None, "the query answered no data"
        return None
    value = answer.value if isinstance(answer.value, float) else min(answer.value)
    assert trigger.threshold is not None  # the API requires it of both queried types
    state.value = value
    if trigger.type is TriggerType.DATA_VOLUME:
        fired, relation = value >= trigger.threshold, ">=" if value >= trigger.threshold else "<"
    else:
        fired, relation = value < trigger.threshold, "<" if value < trigger.threshold else ">="
    state.message = f"{value:g} {relation} threshold {trigger.threshold:g}"
    if not fired:
        return None
    what = "data volume" if trigger.type is TriggerType.DATA_VOLUME else "quality"
    return Firing(trigger.key, f"{what} check at {_moment(now)}", f"{what} {state.message} at {_moment(now)}")


def _drifted(trigger: Trigger, drift: modeldeployment.DriftStatus) -> Firing:
    since = _moment(drift.since) if drift.since else "-"
    return Firing(trigger.key, f"drift detected since {since}", f"drift detected: {drift.message}")


def evaluate(
    trigger: Trigger, state: State, context: Context, answers: Mapping[str, Answer], now: datetime.datetime
) -> Firing | None:
    """Whether `trigger` fires now; `state` (its own copy) is brought up to date."""
    if trigger.type is TriggerType.DRIFT:
        return _drifted(trigger, context.drift) if context.drift is not None else None
    if trigger.type is TriggerType.SCHEDULE:
        return _scheduled(trigger, state, now)
    answer = answers.get(QUERY_KEY + trigger.key)
    return _measured(trigger, state, answer, now) if answer is not None else None
