"""What analysis measurements mean, with time injected: rendering queries, judging one answer with
the metric's CEL conditions, folding measurements into a run's verdict, and when the next one is due."""

from __future__ import annotations

from typing import Any

import delivery_fixtures as fx
import pytest

from kiln.api import modeldeployment
from kiln.delivery import analysis

Measured = modeldeployment.MeasurementPhase
Phase = modeldeployment.AnalysisPhase
S, F, INC, ERR = Measured.SUCCESSFUL, Measured.FAILED, Measured.INCONCLUSIVE, Measured.ERROR

VARIABLES = {"model": "iris", "namespace": "ml", "deployment": "iris", "stable": "1.0.0", "candidate": "1.1.0"}


def metric(**fields: Any) -> analysis.Metric:
    """A prometheus metric; camelCase `fields` override the defaults (both conditions, count 3)."""
    document = {
        "name": "error-rate",
        "provider": "prometheus",
        "query": "errors",
        "successCondition": "result <= 0.01",
        "failureCondition": "result > 0.05",
        **fields,
    }
    return analysis.Metric.model_validate({key: value for key, value in document.items() if value is not None})


def measurement(phase: Measured, seconds: float = 0) -> modeldeployment.Measurement:
    value = None if phase is ERR else "0.5"
    return modeldeployment.Measurement(
        phase=phase, value=value, error="boom" if phase is ERR else None, time=fx.at(seconds)
    )


def run(phases: list[Measured], **fields: Any) -> analysis.Result:
    judged = metric(**fields)
    result = analysis.started(judged.name, 2, fx.T0)
    for index, phase in enumerate(phases):
        result = analysis.fold(result, judged, measurement(phase, index * 30))
    return result


# -- render -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("errors{model='{{model}}'}", "errors{model='iris'}"),
        ("{{ namespace }}/{{deployment}}", "ml/iris"),
        ("{{stable}} vs {{candidate}} vs {{candidate}}", "1.0.0 vs 1.1.0 vs 1.1.0"),
        ("no variables {here}", "no variables {here}"),
    ],
)
def test_render_replaces_every_known_variable(template: str, expected: str) -> None:
    assert analysis.render(template, VARIABLES) == expected


@pytest.mark.parametrize(
    ("template", "variables", "complaint"),
    [
        ("{{pod}}", VARIABLES, "unknown variable {{pod}}"),
        ("{{stable}}", {"model": "iris", "candidate": "1.1.0"}, "variable {{stable}} has no value"),
    ],
)
def test_render_refuses_an_unknown_or_unset_variable(template: str, variables: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("{", r"\{").replace("}", r"\}")):
        analysis.render(template, variables)


def test_a_query_that_cannot_be_rendered_is_a_request_that_carries_its_error() -> None:
    request = analysis.request_for(metric(query="{{pod}}"), 2, VARIABLES, fx.PROMETHEUS)

    assert request.key == "error-rate@2"
    assert request.error is not None
    assert "metric error-rate" in request.error
    assert "{{pod}}" in request.error


def test_a_prometheus_request_goes_to_the_metric_server_or_the_operator_default() -> None:
    own = metric(prometheus={"address": "http://own:9090"}, query="up{model='{{model}}'}")

    assert analysis.request_for(own, None, VARIABLES, fx.PROMETHEUS).address == "http://own:9090"
    defaulted = analysis.request_for(metric(query="up{model='{{model}}'}"), None, VARIABLES, fx.PROMETHEUS)
    assert (defaulted.key, defaulted.address, defaulted.expression) == (
        "error-rate@background",
        fx.PROMETHEUS,
        "up{model='iris'}",
    )


def test_a_web_request_renders_its_url_and_headers() -> None:
    web = metric(
        provider="web",
        query=None,
        web={
            "url": "http://judge/{{model}}/{{candidate}}",
            "jsonPath": "$.rate",
            "headers": {"X-Model": "{{model}}"},
            "timeoutSeconds": 3,
        },
    )

    request = analysis.request_for(web, 0, VARIABLES, fx.PROMETHEUS)

    assert (request.provider, request.expression, request.json_path) == ("web", "http://judge/iris/1.1.0", "$.rate")
    assert (dict(request.headers), request.timeout, request.error) == ({"X-Model": "iris"}, 3.0, None)


# -- judge --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "value", "phase"),
    [
        pytest.param({}, 0.001, S, id="both-success-holds"),
        pytest.param({}, 0.2, F, id="both-failure-holds"),
        pytest.param({}, 0.03, INC, id="both-neither-holds-is-inconclusive"),
        pytest.param({"failureCondition": None}, 0.001, S, id="success-only-holds"),
        pytest.param({"failureCondition": None}, 0.03, F, id="success-only-not-holding-is-failed"),
        pytest.param({"successCondition": None}, 0.2, F, id="failure-only-holds"),
        pytest.param({"successCondition": None}, 0.03, S, id="failure-only-not-holding-is-successful"),
        pytest.param(
            {"successCondition": "result.all(x, x <= 0.01)", "failureCondition": "result.exists(x, x > 0.05)"},
            [0.001, 0.002],
            S,
            id="list-all-good",
        ),
        pytest.param(
            {"successCondition": "result.all(x, x <= 0.01)", "failureCondition": "result.exists(x, x > 0.05)"},
            [0.001, 0.2],
            F,
            id="list-one-bad",
        ),
    ],
)
def test_judge_reads_the_conditions_over_result(conditions: dict[str, Any], value: Any, phase: Measured) -> None:
    judged = analysis.judge(metric(**conditions), analysis.Answer(value=value), fx.at(5))

    assert judged.phase is phase
    assert judged.time == fx.at(5)
    assert judged.error is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.0123456789, "0.0123457"), ([0.5, 2.0], "[0.5, 2]")],
)
def test_judge_records_the_value_as_text(value: Any, shown: str) -> None:
    assert analysis.judge(metric(), analysis.Answer(value=value), fx.T0).value == shown


@pytest.mark.parametrize(
    ("conditions", "value", "complaint"),
    [
        pytest.param({"failureCondition": None}, [0.1], "successCondition 'result <= 0.01'", id="number-cel-on-list"),
        pytest.param({}, [0.1], "failureCondition 'result > 0.05'", id="failure-evaluated-first"),
        pytest.param(
            {"failureCondition": None, "successCondition": "result * 2.0"}, 0.1, "not true or false", id="non-bool"
        ),
    ],
)
def test_a_condition_that_cannot_be_evaluated_is_an_error_naming_it(
    conditions: dict[str, Any], value: Any, complaint: str
) -> None:
    judged = analysis.judge(metric(**conditions), analysis.Answer(value=value), fx.T0)

    assert judged.phase is ERR
    assert judged.error is not None
    assert complaint in judged.error


def test_a_provider_error_is_an_error_measurement_with_its_reason() -> None:
    judged = analysis.judge(metric(), analysis.Answer(error="connection refused"), fx.T0)

    assert (judged.phase, judged.error, judged.value) == (ERR, "connection refused", None)


def test_an_empty_answer_is_inconclusive_not_failed() -> None:
    judged = analysis.judge(metric(), analysis.Answer(), fx.T0)

    assert judged.phase is INC
    assert judged.value is None


# -- fold ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "limits", "expected"),
    [
        pytest.param([F], {}, Phase.FAILED, id="one-failure-over-limit-0"),
        pytest.param([F], {"failureLimit": 1}, Phase.RUNNING, id="failure-within-limit"),
        pytest.param([F, S, F], {"failureLimit": 1}, Phase.FAILED, id="failures-over-limit"),
        pytest.param([INC], {}, Phase.INCONCLUSIVE, id="one-inconclusive-over-limit-0"),
        pytest.param([INC, S], {"inconclusiveLimit": 1}, Phase.RUNNING, id="inconclusive-within-limit"),
        pytest.param([INC, INC], {"inconclusiveLimit": 1}, Phase.INCONCLUSIVE, id="inconclusive-over-limit"),
        pytest.param([ERR, ERR], {"consecutiveErrorLimit": 2}, Phase.RUNNING, id="errors-within-limit"),
        pytest.param(
            [ERR, ERR, ERR], {"consecutiveErrorLimit": 2}, Phase.INCONCLUSIVE, id="errors-in-a-row-over-limit"
        ),
        pytest.param(
            [ERR, ERR, S, ERR, ERR],
            {"consecutiveErrorLimit": 2, "count": 9},
            Phase.RUNNING,
            id="an-answer-resets-the-run",
        ),
        pytest.param([S, S, S], {}, Phase.SUCCESSFUL, id="count-of-successes"),
        pytest.param([S, S], {}, Phase.RUNNING, id="short-of-count"),
        pytest.param(
            [S, F, INC], {"failureLimit": 1, "inconclusiveLimit": 1}, Phase.SUCCESSFUL, id="count-with-one-success"
        ),
        pytest.param([INC, INC, INC], {"inconclusiveLimit": 5}, Phase.INCONCLUSIVE, id="count-with-no-success"),
        pytest.param([S, ERR, ERR, S], {"count": 3}, Phase.RUNNING, id="errors-do-not-count-toward-count"),
        pytest.param([ERR] * 50, {"count": 1, "consecutiveErrorLimit": 100}, Phase.RUNNING, id="errors-never-promote"),
    ],
)
def test_fold_decides_a_run_by_its_limits(phases: list[Measured], limits: dict[str, Any], expected: Phase) -> None:
    assert run(phases, **limits).phase is expected


def test_fold_counts_each_kind_and_errors_in_a_row() -> None:
    result = run([S, F, INC, ERR, ERR], failureLimit=5, inconclusiveLimit=5, count=9)

    assert (result.successful, result.failed, result.inconclusive, result.errors) == (1, 1, 1, 2)
    assert result.consecutive_errors == 2
    assert result.message is None


def test_a_failed_run_names_the_metric_value_and_condition() -> None:
    result = run([F])

    assert result.message is not None
    assert "metric error-rate failed" in result.message
    assert "value 0.5" in result.message
    assert "failureCondition 'result > 0.05' held" in result.message
    assert "failureLimit of 0" in result.message


def test_an_error_streak_names_the_last_error() -> None:
    message = run([ERR, ERR], consecutiveErrorLimit=1).message or ""

    assert "2 provider errors in a row" in message
    assert "consecutiveErrorLimit of 1" in message
    assert "boom" in message


def test_only_the_latest_measurements_are_kept_but_totals_are() -> None:
    result = run([S] * 25, count=1000)

    assert len(result.measurements) == analysis.MEASUREMENT_LIMIT
    assert result.successful == 25
    assert result.measurements[-1].time == fx.at(24 * 30)


def test_fold_leaves_the_run_it_was_given_alone() -> None:
    before = analysis.started("error-rate", 2, fx.T0)

    analysis.fold(before, metric(), measurement(F))

    assert (before.failed, before.phase, before.measurements) == (0, Phase.RUNNING, [])


# -- due ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("taken", "seconds", "due"),
    [
        pytest.param([], 59, False, id="before-initial-delay"),
        pytest.param([], 60, True, id="at-initial-delay"),
        pytest.param([60], 89, False, id="within-interval"),
        pytest.param([60], 90, True, id="interval-passed"),
        pytest.param([60, 90], 119, False, id="interval-from-the-last"),
    ],
)
def test_due_waits_for_the_initial_delay_then_the_interval(taken: list[float], seconds: float, due: bool) -> None:
    judged = metric(initialDelay="1m", interval="30s")
    result = analysis.started(judged.name, 2, fx.T0)
    result.measurements = [measurement(S, moment) for moment in taken]

    assert analysis.due(result, judged, fx.at(seconds)) is due


@pytest.mark.parametrize("phase", [Phase.SUCCESSFUL, Phase.FAILED, Phase.INCONCLUSIVE])
def test_a_decided_run_is_never_due(phase: Phase) -> None:
    result = analysis.started("error-rate", 2, fx.T0)
    result.phase = phase

    assert not analysis.due(result, metric(), fx.at(3600))


# -- verdict ------------------------------------------------------------------------------------


def decided(name: str, phase: Phase) -> analysis.Result:
    return analysis.Result(metric=name, step=2, phase=phase, message=f"{name} {phase.value}")


@pytest.mark.parametrize(
    ("phases", "expected", "message"),
    [
        pytest.param([], Phase.RUNNING, "", id="nothing"),
        pytest.param([Phase.SUCCESSFUL, Phase.RUNNING], Phase.RUNNING, "", id="one-still-running"),
        pytest.param(
            [Phase.SUCCESSFUL, Phase.SUCCESSFUL], Phase.SUCCESSFUL, "m0 Successful; m1 Successful", id="all-successful"
        ),
        pytest.param([Phase.INCONCLUSIVE, Phase.FAILED], Phase.FAILED, "m1 Failed", id="failed-wins"),
        pytest.param([Phase.SUCCESSFUL, Phase.INCONCLUSIVE], Phase.INCONCLUSIVE, "m1 Inconclusive", id="inconclusive"),
        pytest.param([Phase.RUNNING, Phase.FAILED], Phase.FAILED, "m1 Failed", id="failed-while-another-runs"),
    ],
)
def test_verdict_over_several_metrics(phases: list[Phase], expected: Phase, message: str) -> None:
    results = [decided(f"m{index}", phase) for index, phase in enumerate(phases)]

    assert analysis.verdict(results) == (expected, message)


# -- metrics_for --------------------------------------------------------------------------------


def spec_with(*names: str) -> modeldeployment.ModelDeploymentSpec:
    metrics = [{**fx.ERROR_RATE, "name": name} for name in names]
    return modeldeployment.ModelDeploymentSpec.model_validate({"model": "iris", "analysis": {"metrics": metrics}})


@pytest.mark.parametrize(
    ("defined", "named", "expected"),
    [
        pytest.param(("errors", "latency"), ["latency"], ["latency"], id="named"),
        pytest.param(("errors", "latency"), [], ["errors", "latency"], id="all-when-none-named"),
        pytest.param((), [], ["error-rate", "latency-p99"], id="defaults-when-none-defined"),
        pytest.param((), ["anything"], ["error-rate", "latency-p99"], id="defaults-whatever-is-named"),
    ],
)
def test_metrics_for_an_analysis_reference(defined: tuple[str, ...], named: list[str], expected: list[str]) -> None:
    assert [m.name for m in analysis.metrics_for(spec_with(*defined), named)] == expected


def test_the_default_metrics_render_against_stable_and_candidate() -> None:
    for default in analysis.DEFAULT_METRICS:
        request = analysis.request_for(default, 2, VARIABLES, fx.PROMETHEUS)

        assert request.error is None
        assert 'version="1.1.0"' in request.expression
        assert 'version="1.0.0"' in request.expression
        assert "{{" not in request.expression


def test_default_error_rate_fails_a_candidate_five_points_worse() -> None:
    error_rate = analysis.DEFAULT_METRICS[0]

    assert analysis.judge(error_rate, analysis.Answer(value=0.06), fx.T0).phase is F
    assert analysis.judge(error_rate, analysis.Answer(value=0.0), fx.T0).phase is S
