"""What analysis measurements mean: when a metric is due, what one answer says, what a run concludes.

The controller asks the plan which measurements are due (`MeasurementRequest`, a rendered query),
takes them through a metric provider, and hands the answers back. Everything else is here, pure:

- An answer with a value is judged by the metric's CEL conditions over `result`: the failure
  condition holding is Failed; the success condition holding is Successful, and not holding is
  Failed when no failure condition is set, Inconclusive otherwise; a failure condition alone that
  does not hold is Successful. A condition that cannot be evaluated, or gives no boolean, is an
  Error measurement that names the expression.
- An empty answer (no series, NaN) is Inconclusive: there was nothing to judge.
- A provider error is an Error measurement, counted apart from failures. Errors never promote: a
  run ends Successful only on `count` judged measurements with at least one success.
- A run fails when failed measurements exceed `failureLimit`, and is Inconclusive when
  inconclusive ones exceed `inconclusiveLimit` or errors in a row exceed `consecutiveErrorLimit`.
  Inconclusive pauses the rollout. One held by errors alone is still measured, and the first
  answer lets it run on; one held by inconclusive answers waits for `kiln resume`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import cel

from kiln.api import base, modeldeployment

Metric = modeldeployment.AnalysisMetric
Result = modeldeployment.AnalysisResult
Phase = modeldeployment.AnalysisPhase
Measured = modeldeployment.MeasurementPhase

MEASUREMENT_LIMIT = 10
"""Measurements kept per metric in status; the counters keep the totals."""
VARIABLES = ("model", "namespace", "deployment", "stable", "candidate")
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PROMETHEUS_TIMEOUT_SECONDS = 10.0

_SELECTOR = 'namespace="{{namespace}}",model="{{model}}"'


def _error_rate(version: str) -> str:
    errors = f'sum(rate(kiln_server_requests_total{{{_SELECTOR},version="{{{{{version}}}}}",code=~"5.."}}[1m]))'
    total = f'sum(rate(kiln_server_requests_total{{{_SELECTOR},version="{{{{{version}}}}}"}}[1m]))'
    return f"(({errors} or vector(0)) / {total})"


def _p99(version: str) -> str:
    buckets = f'kiln_server_request_duration_seconds_bucket{{{_SELECTOR},version="{{{{{version}}}}}"}}'
    return f"histogram_quantile(0.99, sum by (le) (rate({buckets}[1m])))"


DEFAULT_METRICS: tuple[Metric, ...] = (
    Metric(
        name="error-rate",
        provider=modeldeployment.MetricProviderName.PROMETHEUS,
        query=f"{_error_rate('candidate')} - ({_error_rate('stable')} or vector(0))",
        success_condition="result <= 0.01",
        failure_condition="result > 0.05",
    ),
    Metric(
        name="latency-p99",
        provider=modeldeployment.MetricProviderName.PROMETHEUS,
        query=f"{_p99('candidate')} - ({_p99('stable')} or vector(0))",
        success_condition="result <= 0.1",
    ),
)
"""Used where analysis is asked for and spec.analysis.metrics is empty: the candidate's share of
5xx answers may exceed stable's by one percentage point (five fail it), and its p99 latency may
exceed stable's by 100 ms; both from kiln-server's own metrics."""


def _increase(metric: str, version: str, matchers: str = "") -> str:
    series = f'{metric}{{{_SELECTOR},version="{{{{{version}}}}}"{matchers}}}'
    return f"sum(increase({series}[{LIVE_QUALITY_WINDOW}]))"


_JUDGED = "kiln_server_feedback_predictions_total"
_ABSOLUTE_ERROR = "kiln_server_feedback_absolute_error"


def _live_accuracy(version: str) -> str:
    correct = _increase(_JUDGED, version, ',outcome="correct"')
    return f"({correct} / {_increase(_JUDGED, version)})"


def _mean_absolute_error(version: str) -> str:
    return f"({_increase(f'{_ABSOLUTE_ERROR}_sum', version)} / {_increase(f'{_ABSOLUTE_ERROR}_count', version)})"


LIVE_QUALITY_WINDOW = "5m"
LIVE_QUALITY_MIN_LABELS = 20
"""Fewer labelled candidate predictions than this in the window give no value (Inconclusive): a
handful of labels says little about accuracy."""

LIVE_ACCURACY = Metric(
    name="live-accuracy",
    provider=modeldeployment.MetricProviderName.PROMETHEUS,
    query=(
        f"({_live_accuracy('stable')} - {_live_accuracy('candidate')})"
        f" and on() ({_increase(_JUDGED, 'candidate')} >= {LIVE_QUALITY_MIN_LABELS})"
    ),
    success_condition="result <= 0.02",
    failure_condition="result > 0.05",
)
"""A canary judged on live accuracy against stable's, from the ground truth clients post to
kiln-server's /feedback: stable's accuracy minus the candidate's over the last 5 minutes. Two
points worse passes, more than five fails (and rolls back); in between is inconclusive."""

LIVE_ABSOLUTE_ERROR = Metric(
    name="live-absolute-error",
    provider=modeldeployment.MetricProviderName.PROMETHEUS,
    query=(
        f"({_mean_absolute_error('candidate')} / {_mean_absolute_error('stable')})"
        f" and on() ({_increase(f'{_ABSOLUTE_ERROR}_count', 'candidate')} >= {LIVE_QUALITY_MIN_LABELS})"
    ),
    success_condition="result <= 1.05",
    failure_condition="result > 1.2",
)
"""A regressor's canary judged on its live mean absolute error as a ratio to stable's: up to 5%
worse passes, more than 20% fails."""

TEMPLATES: Mapping[str, Metric] = {
    metric.name: metric for metric in (*DEFAULT_METRICS, LIVE_ACCURACY, LIVE_ABSOLUTE_ERROR)
}
"""Ready-made metrics by name, to copy into spec.analysis.metrics (and adjust interval, count and
limits): the defaults and the live-quality ones, which need clients to post ground truth."""


def metrics_for(spec: modeldeployment.ModelDeploymentSpec, names: Sequence[str]) -> list[Metric]:
    """The metrics an analysis reference names: those names, every defined metric when it names
    none, or the defaults when none are defined."""
    defined = spec.analysis.metrics
    if not defined:
        return list(DEFAULT_METRICS)
    if not names:
        return list(defined)
    return [metric for metric in defined if metric.name in names]


def render(template: str, variables: Mapping[str, str]) -> str:
    """The template with `{{name}}` replaced; ValueError naming an unknown or unset variable."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in VARIABLES:
            raise ValueError(f"unknown variable {{{{{name}}}}} (known: {', '.join(VARIABLES)})")
        if variables.get(name) is None:
            raise ValueError(f"variable {{{{{name}}}}} has no value in this rollout")
        return variables[name]

    return _VARIABLE.sub(value, template)


@dataclasses.dataclass(frozen=True)
class MeasurementRequest:
    """One measurement to take: a rendered query for a metric provider, or why it cannot run."""

    key: str
    """Which analysis result the answer belongs to (`key_of`)."""
    provider: str
    expression: str
    address: str | None = None
    json_path: str = "$"
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    timeout: float = PROMETHEUS_TIMEOUT_SECONDS
    error: str | None = None
    """Set when the query could not be built; the measurement is then an Error without asking."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """What a provider said: a value, nothing (empty), or an error."""

    value: float | list[float] | None = None
    error: str | None = None


def key_of(metric: str, step: int | None) -> str:
    return f"{metric}@{'background' if step is None else step}"


def request_for(
    metric: Metric, step: int | None, variables: Mapping[str, str], default_prometheus: str | None
) -> MeasurementRequest:
    key = key_of(metric.name, step)
    provider = metric.provider.value
    try:
        if metric.provider is modeldeployment.MetricProviderName.WEB and metric.web is not None:
            web = metric.web
            headers = {name: render(value, variables) for name, value in web.headers.items()}
            return MeasurementRequest(
                key, provider, render(web.url, variables), None, web.json_path, headers, float(web.timeout_seconds)
            )
        address = metric.prometheus.address if metric.prometheus else default_prometheus
        return MeasurementRequest(key, provider, render(metric.query or "", variables), address)
    except ValueError as error:
        return MeasurementRequest(key, provider, "", error=f"metric {metric.name}: {error}")


@functools.cache
def _program(expression: str) -> Any:
    return cel.compile(expression)


def _condition(expression: str, result: float | list[float]) -> bool:
    outcome = _program(expression).execute({"result": result})
    if not isinstance(outcome, bool):
        raise TypeError(f"it gave {outcome!r}, not true or false")
    return outcome


def _shown(value: float | list[float]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{item:.6g}" for item in value) + "]"
    return f"{value:.6g}"


def judge(metric: Metric, answer: Answer, now: datetime.datetime) -> modeldeployment.Measurement:
    """One measurement from one answer."""
    if answer.error is not None:
        return modeldeployment.Measurement(phase=Measured.ERROR, error=answer.error, time=now)
    if answer.value is None:
        return modeldeployment.Measurement(
            phase=Measured.INCONCLUSIVE, error="the query returned no value to judge", time=now
        )
    shown = _shown(answer.value)
    which = "failureCondition"
    try:
        if metric.failure_condition and _condition(metric.failure_condition, answer.value):
            return modeldeployment.Measurement(phase=Measured.FAILED, value=shown, time=now)
        which = "successCondition"
        if metric.success_condition is None:
            return modeldeployment.Measurement(phase=Measured.SUCCESSFUL, value=shown, time=now)
        if _condition(metric.success_condition, answer.value):
            return modeldeployment.Measurement(phase=Measured.SUCCESSFUL, value=shown, time=now)
    except (TypeError, ValueError, RuntimeError) as error:
        expression = metric.failure_condition if which == "failureCondition" else metric.success_condition
        message = f"{which} {expression!r} could not be evaluated on result {shown}: {error}"
        return modeldeployment.Measurement(phase=Measured.ERROR, value=shown, error=message, time=now)
    phase = Measured.INCONCLUSIVE if metric.failure_condition else Measured.FAILED
    return modeldeployment.Measurement(phase=phase, value=shown, time=now)


def started(metric: str, step: int | None, now: datetime.datetime) -> Result:
    return Result(metric=metric, step=step, phase=Phase.RUNNING, started=now)


def held_by_errors(result: Result, metric: Metric) -> bool:
    """Inconclusive only because the provider keeps failing: it is still measured, and the first
    answer lets it run on (the rollout resumes by itself when Prometheus is back)."""
    return result.phase is Phase.INCONCLUSIVE and result.consecutive_errors > metric.consecutive_error_limit


def due(result: Result, metric: Metric, now: datetime.datetime) -> bool:
    """Whether the next measurement of a running (or error-held) analysis should be taken now."""
    if result.phase is not Phase.RUNNING and not held_by_errors(result, metric):
        return False
    if not result.measurements:
        first = (result.started or now) + base.duration_of(metric.initial_delay)
        return now >= first
    return now >= result.measurements[-1].time + base.duration_of(metric.interval)


def _condition_text(metric: Metric, measurement: modeldeployment.Measurement) -> str:
    if measurement.phase is Measured.FAILED and metric.failure_condition:
        return f"failureCondition {metric.failure_condition!r} held"
    return f"successCondition {metric.success_condition!r} did not hold"


def fold(result: Result, metric: Metric, measurement: modeldeployment.Measurement) -> Result:
    """The analysis with one more measurement, and its phase once that decides it."""
    counts = {
        Measured.SUCCESSFUL: "successful",
        Measured.FAILED: "failed",
        Measured.INCONCLUSIVE: "inconclusive",
        Measured.ERROR: "errors",
    }
    folded = result.model_copy(deep=True)
    if held_by_errors(result, metric):
        if measurement.phase is Measured.ERROR:
            folded.errors += 1
            folded.consecutive_errors += 1
            folded.measurements = [*folded.measurements, measurement][-MEASUREMENT_LIMIT:]
            return folded
        folded.phase, folded.message = Phase.RUNNING, None
    field = counts[measurement.phase]
    setattr(folded, field, getattr(folded, field) + 1)
    folded.consecutive_errors = folded.consecutive_errors + 1 if measurement.phase is Measured.ERROR else 0
    folded.measurements = [*folded.measurements, measurement][-MEASUREMENT_LIMIT:]
    if folded.failed > metric.failure_limit:
        folded.phase = Phase.FAILED
        folded.message = (
            f"metric {metric.name} failed: value {measurement.value}, {_condition_text(metric, measurement)} "
            f"({folded.failed} failed measurements, more than the failureLimit of {metric.failure_limit})"
        )
    elif folded.consecutive_errors > metric.consecutive_error_limit:
        folded.phase = Phase.INCONCLUSIVE
        folded.message = (
            f"metric {metric.name}: {folded.consecutive_errors} provider errors in a row, more than the "
            f"consecutiveErrorLimit of {metric.consecutive_error_limit}; last: {measurement.error}"
        )
    elif folded.inconclusive > metric.inconclusive_limit:
        folded.phase = Phase.INCONCLUSIVE
        detail = f"value {measurement.value}" if measurement.value is not None else str(measurement.error)
        folded.message = (
            f"metric {metric.name} was inconclusive {folded.inconclusive} times, more than the "
            f"inconclusiveLimit of {metric.inconclusive_limit}; last: {detail}"
        )
    elif folded.successful + folded.failed + folded.inconclusive >= metric.count:
        if folded.successful:
            folded.phase = Phase.SUCCESSFUL
            folded.message = f"metric {metric.name}: {folded.successful} of {metric.count} measurements successful"
        else:
            folded.phase = Phase.INCONCLUSIVE
            folded.message = f"metric {metric.name}: no successful measurement in {metric.count}"
    return folded


def verdict(results: Sequence[Result]) -> tuple[Phase, str]:
    """What a set of metric analyses concludes together: Failed if any failed, Inconclusive if any
    is, Successful when all are, Running otherwise; with the deciding message."""
    for phase in (Phase.FAILED, Phase.INCONCLUSIVE):
        decided = [result for result in results if result.phase is phase]
        if decided:
            return phase, "; ".join(result.message or result.metric for result in decided)
    if results and all(result.phase is Phase.SUCCESSFUL for result in results):
        return Phase.SUCCESSFUL, "; ".join(result.message or result.metric for result in results)
    return Phase.RUNNING, ""
