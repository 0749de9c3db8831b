"""Drift of the stable version's live traffic: what to ask Prometheus, and what the answers mean.

Per feature, kiln-server's `kiln_server_feature_values` histogram has one bucket per baseline edge
(and +Inf); `sum by (le) (increase(...[window]))` is the live window's cumulative counts. The
metric provider answers numbers without their labels, so they are put back in edge order by
sorting: cumulative buckets never decrease with `le`, and increase() extrapolates every bucket of
one histogram by the same factor (they are scraped together), so the sorted values are the buckets
in order; equal values are equal counts, whose order does not matter. The feature's statistic is
then `statistics.psi` or `statistics.ks_distance` against the baseline's counts.

Predictions have no baseline in the ModelVersion, so their reference is the stable version's own
first window with minSamples (status.drift.predictions.referenceTime); their PSI is computed by
Prometheus itself, where the classes' labels are at hand: the live shares against the shares
in the window ending at the reference time (`@`), matched class by class.

Drift is detected when a feature (or the predictions) has been over its threshold at every check
for a whole window, with at least minSamples live samples in each.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping

from kiln.api import base, events, modeldeployment, modelversion
from kiln.monitoring import reasons, statistics, templates
from kiln.monitoring.measure import Answer, Query

FEATURE_KEY = "drift-feature:"
PREDICTIONS_KEY = "drift-predictions"
FEATURE_METRIC = "kiln_server_feature_values_bucket"
PREDICTION_METRIC = "kiln_server_predictions_total"
Status = modeldeployment.DriftStatus
TRUE, FALSE, UNKNOWN = base.ConditionStatus.TRUE, base.ConditionStatus.FALSE, base.ConditionStatus.UNKNOWN


@dataclasses.dataclass(frozen=True)
class Target:
    """Whose traffic is judged: the deployment's stable version and its baseline."""

    namespace: str
    model: str
    version: str
    baseline: modelversion.Baseline


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One check: the new drift status, the DriftDetected condition and the Events to post."""

    status: Status
    condition: base.ConditionStatus
    reason: str
    message: str
    detected: bool = False
    events: tuple[events.Event, ...] = ()


def _selector(target: Target) -> str:
    return (
        f'namespace="{templates.label_value(target.namespace)}",model="{templates.label_value(target.model)}",'
        f'version="{templates.label_value(target.version)}"'
    )


def feature_query(target: Target, feature: str, window: datetime.timedelta) -> str:
    """The live window's cumulative bucket counts of one feature."""
    selector = f'{_selector(target)},feature="{templates.label_value(feature)}"'
    return f"sum by (le) (increase({FEATURE_METRIC}{{{selector}}}[{templates.duration(window)}]))"


def prediction_query(target: Target, window: datetime.timedelta, reference: datetime.datetime) -> str:
    """The PSI of the live window's predicted-class shares against those of the reference window."""
    counts = f"{PREDICTION_METRIC}{{{_selector(target)}}}[{templates.duration(window)}]"
    live = f"sum by (class) (increase({counts}))"
    earlier = f"sum by (class) (increase({counts} @ {reference.timestamp():.3f}))"

    def share(vector: str) -> str:
        return f"clamp_min({vector} / scalar(sum({vector})), {statistics.EMPTY_SHARE})"

    return f"sum(({share(live)} - {share(earlier)}) * ln({share(live)} / {share(earlier)}))"


def current(status: modeldeployment.ModelDeploymentStatus, version: str) -> Status:
    """The drift status of `version`: what status holds when it is about that version, else a fresh one."""
    held = status.drift
    return held.model_copy(deep=True) if held is not None and held.version == version else Status(version=version)


def due(spec: modeldeployment.Drift, held: Status, now: datetime.datetime) -> bool:
    return held.last_checked is None or now - held.last_checked >= base.duration_of(spec.interval)


def queries(spec: modeldeployment.Drift, target: Target, held: Status, address: str | None) -> list[Query]:
    window = base.duration_of(spec.window)
    asked = [
        Query(FEATURE_KEY + feature.name, feature_query(target, feature.name, window), address)
        for feature in target.baseline.features
    ]
    if held.predictions is not None:
        asked.append(Query(PREDICTIONS_KEY, prediction_query(target, window, held.predictions.reference_time), address))
    return asked


def _cumulative(answer: Answer) -> list[float]:
    if answer.value is None:
        return []
    values = answer.value if isinstance(answer.value, list) else [answer.value]
    return sorted(values)


def _feature_scores(
    spec: modeldeployment.Drift, target: Target, answers: Mapping[str, Answer]
) -> tuple[list[modeldeployment.FeatureDrift], int, list[str]]:
    """Each feature's statistic (for a feature with live samples), the samples, and what could not be read."""
    scores, samples, problems = [], 0, []
    statistic = statistics.psi if spec.method is modeldeployment.DriftMethod.PSI else statistics.ks_distance
    for feature in target.baseline.features:
        answer = answers.get(FEATURE_KEY + feature.name, Answer(error="not measured"))
        if answer.error is not None:
            problems.append(f"feature {feature.name}: {answer.error}")
            continue
        cumulative = _cumulative(answer)
        if not cumulative or cumulative[-1] <= 0:
            continue
        try:
            live = statistics.live_counts(cumulative, len(feature.counts))
        except ValueError as error:
            problems.append(f"feature {feature.name}: {error}")
            continue
        samples = max(samples, round(cumulative[-1]))
        scores.append(modeldeployment.FeatureDrift(name=feature.name, score=statistic(feature.counts, live)))
    return scores, samples, problems


def _describe(spec: modeldeployment.Drift, status: Status) -> str:
    worst = f"{spec.method.value} {status.score:.3f} on {status.feature}" if status.feature else "no feature scored"
    text = f"{worst} (threshold {spec.effective_threshold():g}, {status.samples} samples in {spec.window})"
    predicted = status.predictions.score if status.predictions else None
    if predicted is not None:
        text += f"; predictions psi {predicted:.3f} (threshold {spec.prediction_threshold:g})"
    return text


def _record(status: Status, now: datetime.datetime, score: float | None) -> None:
    status.last_checked = now
    status.history = [
        *status.history,
        modeldeployment.DriftCheck(time=now, score=score, samples=status.samples, drifted=status.drifted),
    ][-modeldeployment.DRIFT_HISTORY_LIMIT :]


def _prediction_score(answers: Mapping[str, Answer]) -> float | None:
    answer = answers.get(PREDICTIONS_KEY)
    if answer is None or answer.value is None:
        return None
    return answer.value if isinstance(answer.value, float) else max(answer.value)


def judge(
    spec: modeldeployment.Drift,
    target: Target,
    held: Status,
    answers: Mapping[str, Answer],
    now: datetime.datetime,
    *,
    was_detected: bool,
) -> Verdict:
    """The check the answers make; `was_detected` is whether DriftDetected was True before it."""
    status = held.model_copy(deep=True)
    status.threshold = spec.effective_threshold()
    scores, status.samples, problems = _feature_scores(spec, target, answers)
    if problems:
        status.message = "could not read the live distributions: " + "; ".join(problems)
        _record(status, now, None)
        return Verdict(status, UNKNOWN, reasons.MEASUREMENT_ERROR, status.message, detected=was_detected)
    if status.samples < spec.min_samples:
        status.drifted, status.since = False, None
        status.message = (
            f"{status.samples} live samples in the last {spec.window}; drift is judged from {spec.min_samples}"
        )
        _record(status, now, None)
        return Verdict(
            status,
            UNKNOWN,
            reasons.INSUFFICIENT_SAMPLES,
            status.message,
            events=_resolved(was_detected, status.message),
        )
    status.features = scores
    worst = max(scores, key=lambda feature: feature.score)
    status.score, status.feature = worst.score, worst.name
    if status.predictions is None:
        status.predictions = modeldeployment.PredictionDrift(reference_time=now)
    else:
        status.predictions.score = _prediction_score(answers)
    predicted = status.predictions.score
    status.drifted = worst.score > status.threshold or (predicted is not None and predicted > spec.prediction_threshold)
    status.since = (status.since or now) if status.drifted else None
    status.message = _describe(spec, status)
    _record(status, now, worst.score)
    if not status.drifted:
        return Verdict(status, FALSE, reasons.NO_DRIFT, status.message, events=_resolved(was_detected, status.message))
    if now - (status.since or now) < base.duration_of(spec.window):
        message = f"{status.message}; over the threshold since {_moment(status.since)}, detected after {spec.window}"
        return Verdict(status, FALSE, reasons.DRIFTING, message, events=_resolved(was_detected, status.message))
    message = f"{status.message}; over the threshold since {_moment(status.since)}"
    posted = () if was_detected else (events.Event("Warning", reasons.DRIFT_DETECTED, message),)
    return Verdict(status, TRUE, reasons.DRIFTED, message, detected=True, events=posted)


def _resolved(was_detected: bool, message: str) -> tuple[events.Event, ...]:
    return (events.Event("Normal", reasons.DRIFT_RESOLVED, message),) if was_detected else ()


def _moment(moment: datetime.datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def no_baseline(version: str) -> Verdict:
    message = f"ModelVersion {version} has no baseline to compare live traffic with; kiln-trainer records one"
    return Verdict(Status(version=version, message=message), UNKNOWN, reasons.NO_BASELINE, message)
