"""The monitoring plan with injected time: drift judged against the baseline (held for a window,
minSamples met), the DriftDetected condition and its Events, the triggers (Drift, Schedule by cron,
DataVolume, QualityDrop, kiln retrain), the storm guards, and the TrainingJob a retraining starts."""

from __future__ import annotations

import datetime
import json

import monitoring_fixtures as fx
import pytest

from kiln.api import modeldeployment
from kiln.monitoring import drift, guards, plan, reasons, retraining, schedule, statistics
from kiln.monitoring.measure import Answer

DRIFT_TRIGGER = [{"type": "Drift"}]


def reasons_of(result: plan.Plan) -> list[str]:
    return [event.reason for event in result.events]


# -- drift -------------------------------------------------------------------------------------


def test_the_queries_read_each_features_buckets_of_the_stable_version_over_the_window() -> None:
    world = fx.World(fx.spec())
    asked = plan.plan(world.observed(), fx.at(0)).measure
    assert [q.key for q in asked] == [drift.FEATURE_KEY + f for f in fx.FEATURES]
    assert asked[0].expression == (
        'sum by (le) (increase(kiln_server_feature_values_bucket{namespace="ml",model="iris",version="1.0.0",'
        'feature="sepal_length"}[120s]))'
    )
    assert asked[0].address == "http://prometheus:9090"


def test_traffic_like_the_training_data_is_no_drift() -> None:
    world = fx.World(fx.spec())
    world.step(0, fx.traffic())
    condition = world.condition()
    assert condition is not None
    assert (condition.status, condition.reason) == ("False", reasons.NO_DRIFT)
    assert world.status.drift is not None
    assert world.status.drift.samples == 800
    assert world.status.drift.score is not None
    assert world.status.drift.score < 0.05


def test_each_feature_score_is_the_psi_of_its_live_bins_against_the_baseline() -> None:
    world = fx.World(fx.spec())
    answers = fx.traffic(shift=0.7)
    world.step(0, answers)
    assert world.status.drift is not None
    for feature, scored in zip(fx.baseline().features, world.status.drift.features, strict=True):
        cumulative = sorted(answers[drift.FEATURE_KEY + feature.name].value)  # type: ignore[arg-type]
        expected = statistics.psi(feature.counts, statistics.live_counts(cumulative, len(feature.counts)))
        assert (scored.name, scored.score) == (feature.name, pytest.approx(expected))
    assert world.status.drift.threshold == 0.2


def test_ks_uses_its_own_default_threshold() -> None:
    world = fx.World(fx.spec(drift_spec={"method": "ks"}))
    world.step(0, fx.traffic(shift=0.7))
    assert world.status.drift is not None
    assert world.status.drift.threshold == modeldeployment.DEFAULT_DRIFT_THRESHOLDS[modeldeployment.DriftMethod.KS]
    assert world.status.drift.drifted


def test_drift_is_detected_only_once_it_holds_for_a_whole_window() -> None:
    world = fx.World(fx.spec())
    shifted = fx.traffic(shift=1.5)
    first = world.step(0, shifted)
    assert world.condition().reason == reasons.DRIFTING  # type: ignore[union-attr]
    assert reasons.DRIFT_DETECTED not in reasons_of(first)
    world.step(60, shifted)
    assert world.condition().status == "False"  # type: ignore[union-attr]
    detected = world.step(120, shifted)
    condition = world.condition()
    assert condition is not None
    assert (condition.status, condition.reason) == ("True", reasons.DRIFTED)
    assert "on sepal_length" in condition.message or "on petal_length" in condition.message
    assert reasons_of(detected) == [reasons.DRIFT_DETECTED]
    assert reasons_of(world.step(180, shifted)) == []  # told once


def test_a_check_under_the_threshold_starts_the_window_again() -> None:
    world = fx.World(fx.spec())
    world.step(0, fx.traffic(shift=1.5))
    world.step(60, fx.traffic())
    world.step(120, fx.traffic(shift=1.5))
    assert world.condition().reason == reasons.DRIFTING  # type: ignore[union-attr]
    world.step(240, fx.traffic(shift=1.5))
    assert world.condition().status == "True"  # type: ignore[union-attr]


def test_too_few_samples_are_not_judged_and_a_detection_resolves() -> None:
    world = fx.World(fx.spec())
    for seconds in (0, 60, 120):
        world.step(seconds, fx.traffic(shift=1.5))
    resolved = world.step(180, fx.traffic(shift=1.5, rows=100))
    condition = world.condition()
    assert condition is not None
    assert (condition.status, condition.reason) == ("Unknown", reasons.INSUFFICIENT_SAMPLES)
    assert "100 live samples" in condition.message
    assert reasons_of(resolved) == [reasons.DRIFT_RESOLVED]


def test_checks_run_every_interval_and_history_is_bounded() -> None:
    world = fx.World(fx.spec())
    world.step(0, fx.traffic())
    assert plan.plan(world.observed(), fx.at(30)).measure == ()
    for minute in range(1, 30):
        world.step(60 * minute, fx.traffic())
    assert world.status.drift is not None
    assert len(world.status.drift.history) == modeldeployment.DRIFT_HISTORY_LIMIT
    assert world.status.drift.history[-1].time == fx.at(60 * 29)


def test_a_provider_error_is_unknown_and_names_the_feature() -> None:
    world = fx.World(fx.spec())
    answers = {**fx.traffic(), drift.FEATURE_KEY + "petal_length": Answer(error="prometheus at x: timed out")}
    world.step(0, answers)
    condition = world.condition()
    assert condition is not None
    assert (condition.status, condition.reason) == ("Unknown", reasons.MEASUREMENT_ERROR)
    assert "feature petal_length: prometheus at x: timed out" in condition.message


def test_a_version_without_baseline_says_so_and_asks_nothing() -> None:
    world = fx.World(fx.spec(), with_baseline=False)
    result = plan.plan(world.observed(), fx.at(0))
    assert result.measure == ()
    condition = next(c for c in result.status.conditions if c.type == reasons.DRIFT_DETECTED)
    assert (condition.status, condition.reason) == ("Unknown", reasons.NO_BASELINE)


def test_predictions_are_compared_with_the_first_full_window_of_the_stable_version() -> None:
    world = fx.World(fx.spec())
    world.step(0, fx.traffic())
    assert world.status.drift is not None
    assert world.status.drift.predictions == modeldeployment.PredictionDrift(reference_time=fx.at(0))
    asked = plan.plan(world.observed(), fx.at(60)).measure
    (query,) = [q for q in asked if q.key == drift.PREDICTIONS_KEY]
    assert f"@ {fx.at(0).timestamp():.3f}" in query.expression
    assert "sum by (class) (increase(kiln_server_predictions_total" in query.expression
    world.step(60, {**fx.traffic(), drift.PREDICTIONS_KEY: Answer(value=0.9)})
    assert world.status.drift.predictions.score == 0.9  # type: ignore[union-attr]
    assert world.status.drift.drifted
    assert "predictions psi 0.900" in (world.status.drift.message or "")


def test_a_new_stable_version_starts_its_drift_afresh() -> None:
    world = fx.World(fx.spec())
    world.step(0, fx.traffic(shift=1.5))
    world.status = world.status.model_copy(update={"stable_version": "1.0.1"})
    world.step(10, fx.traffic())
    assert world.status.drift is not None
    assert (world.status.drift.version, len(world.status.drift.history), world.status.drift.since) == ("1.0.1", 1, None)


def test_steady_means_serving_the_stable_version_with_no_candidate() -> None:
    assert plan.steady(fx.steady_status())
    assert plan.steady(fx.steady_status().model_copy(update={"phase": "RolledBack"}))  # stable serves all traffic
    assert not plan.steady(fx.steady_status().model_copy(update={"candidate_version": "1.1.0"}))
    assert not plan.steady(fx.steady_status().model_copy(update={"phase": "Progressing"}))
    assert not plan.steady(fx.steady_status().model_copy(update={"phase": "Paused"}))


# -- retraining --------------------------------------------------------------------------------


def detect(world: fx.World, start: float = 0, shift: float = 1.5) -> plan.Plan:
    """Shifted traffic until drift is detected: the plan of the check that detects it."""
    for offset in (0, 60):
        world.step(start + offset, fx.traffic(shift=shift))
    return world.step(start + 120, fx.traffic(shift=shift))


def test_detected_drift_starts_one_training_job_with_the_next_patch_version_and_its_lineage() -> None:
    world = fx.World(fx.spec(triggers=DRIFT_TRIGGER), versions=("1.0.0", "0.9.0", "1.0.0-rc.1"))
    result = detect(world)
    (job,) = result.create
    assert job["metadata"]["name"] == "iris-retrain-1-0-1"
    assert job["spec"]["output"] == {**job["spec"]["output"], "modelName": "iris", "version": "1.0.1"}
    assert job["spec"]["sklearn"]["estimator"] == "sklearn.linear_model.LogisticRegression"
    labels, annotations = job["metadata"]["labels"], job["metadata"]["annotations"]
    assert labels[modeldeployment.RETRAINING_FOR_LABEL] == "iris"
    assert labels[modeldeployment.RETRAINING_TRIGGER_LABEL] == "Drift"
    assert annotations[modeldeployment.RETRAINED_FROM_ANNOTATION] == "1.0.0"
    assert annotations[modeldeployment.RETRAINING_REASON_ANNOTATION].startswith("drift detected: psi ")
    assert "ownerReferences" not in job["metadata"]
    assert reasons_of(result) == [reasons.DRIFT_DETECTED, reasons.RETRAINING_STARTED]
    held = world.status.retraining
    assert held is not None
    assert (held.training_job, held.time) == ("iris-retrain-1-0-1", fx.at(120))
    assert [(run.version, run.trigger) for run in held.runs] == [("1.0.1", "Drift")]


def test_a_retraining_in_flight_holds_the_next_firing_and_says_so_once() -> None:
    world = fx.World(fx.spec(triggers=DRIFT_TRIGGER, cooldown="1m"))
    detect(world)
    held = world.step(180, fx.traffic(shift=1.5))
    assert held.create == ()
    assert reasons_of(held) == [reasons.RETRAINING_SKIPPED]
    skipped = world.status.retraining.skipped  # type: ignore[union-attr]
    assert skipped is not None
    assert skipped.reason == reasons.IN_FLIGHT
    assert "TrainingJob iris-retrain-1-0-1 is still running" in skipped.message
    assert reasons_of(world.step(240, fx.traffic(shift=1.5))) == []


def test_a_second_drift_inside_the_cooldown_starts_nothing_and_says_why() -> None:
    world = fx.World(fx.spec(triggers=DRIFT_TRIGGER, cooldown="1h"))
    detect(world)
    world.finish_jobs()
    world.step(180, fx.traffic())  # drift gone
    second = detect(world, start=240)
    assert second.create == ()
    assert reasons_of(second) == [reasons.DRIFT_DETECTED, reasons.RETRAINING_SKIPPED]
    skipped = world.status.retraining.skipped  # type: ignore[union-attr]
    assert skipped is not None
    assert skipped.reason == reasons.COOLDOWN
    assert "the cooldown of 1h after TrainingJob iris-retrain-1-0-1 lasts until 2026-12-01T13:02:00Z" in skipped.message
    assert skipped.message.startswith("drift detected since 2026-12-01T12:04:00Z")


def test_after_the_cooldown_a_lasting_drift_retrains_again() -> None:
    world = fx.World(fx.spec(triggers=DRIFT_TRIGGER, cooldown="5m"))
    detect(world)
    world.finish_jobs()
    world.versions = ("1.0.0", "1.0.1")
    assert world.step(180, fx.traffic(shift=1.5)).create == ()
    (job,) = world.step(420, fx.traffic(shift=1.5)).create
    assert job["spec"]["output"]["version"] == "1.0.2"


def test_the_daily_cap_counts_the_last_24_hours() -> None:
    runs = [
        modeldeployment.RetrainingRun(
            training_job=f"j{i}", version=f"1.0.{i}", trigger="Drift", reason="r", time=fx.at(3600 * i)
        )
        for i in range(3)
    ]
    spec = fx.spec(triggers=DRIFT_TRIGGER, cooldown="1m", maxPerDay=3).monitoring.retraining  # type: ignore[union-attr]
    assert spec is not None
    hold = guards.hold(spec, runs, [], fx.at(3 * 3600))
    assert hold is not None
    assert hold.reason == reasons.DAILY_CAP
    assert "the next may start at 2026-12-02T12:00:00Z" in hold.message
    assert guards.hold(spec, runs, [], fx.at(86400 + 1)) is None
    assert guards.hold(spec, runs, [], fx.at(3 * 3600), manual=True) is None
    in_flight = guards.hold(spec, runs, ["j2"], fx.at(86400 * 5), manual=True)
    assert in_flight is not None
    assert in_flight.reason == reasons.IN_FLIGHT


@pytest.mark.parametrize(
    ("cron", "now", "handled", "tick"),
    [
        ("0 3 * * 0", "2026-12-06T03:00:00", "2026-12-01T00:00:00", "2026-12-06T03:00:00"),
        ("0 3 * * 0", "2026-12-06T02:59:59", "2026-12-01T00:00:00", None),
        ("0 3 * * 0", "2026-12-20T10:00:00", "2026-12-06T03:00:00", "2026-12-20T03:00:00"),  # two missed: one
        ("0 3 * * 0", "2026-12-06T03:30:00", "2026-12-06T03:00:00", None),
        ("@daily", "2026-12-02T00:00:30", "2026-12-01T12:00:00", "2026-12-02T00:00:00"),
        ("*/15 * * * *", "2026-12-01T12:44:00", "2026-12-01T12:29:00", "2026-12-01T12:30:00"),
    ],
)
def test_a_schedule_is_due_at_the_latest_tick_after_the_last_one_handled(
    cron: str, now: str, handled: str, tick: str | None
) -> None:
    def utc(text: str) -> datetime.datetime:
        return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)

    assert schedule.due(cron, utc(handled), utc(now)) == (utc(tick) if tick else None)


def test_a_schedule_croniter_refuses_is_named() -> None:
    assert schedule.check("0 3 * * 0") is None
    assert "is not a cron schedule" in (schedule.check("61 * * * *") or "")


def test_a_schedule_trigger_fires_at_its_ticks_from_when_it_was_first_seen() -> None:
    world = fx.World(fx.spec(triggers=[{"type": "Schedule", "schedule": "0 * * * *"}], cooldown="1m"))
    first = world.step(0, fx.traffic())  # 12:00:00 exactly, but Kiln began watching then: not a tick
    assert first.create == ()
    state = world.status.retraining.triggers[0]  # type: ignore[union-attr]
    assert (state.trigger, state.since, state.message) == ("Schedule", fx.at(0), "next tick at 2026-12-01T13:00:00Z")
    assert world.step(3599).create == ()
    (job,) = world.step(3605).create
    assert job["metadata"]["annotations"][modeldeployment.RETRAINING_REASON_ANNOTATION] == (
        "schedule '0 * * * *' ticked at 2026-12-01T13:00:00Z"
    )
    assert world.step(3700).create == ()


def test_a_data_volume_trigger_fires_at_its_threshold_with_since_in_the_query() -> None:
    query = 'sum(increase(labelled_rows_total{model="{{model}}"}[{{since}}]))'
    world = fx.World(
        fx.spec(triggers=[{"type": "DataVolume", "query": query, "threshold": 1000, "interval": "10m"}], cooldown="1m")
    )
    asked = plan.plan(world.observed(), fx.at(0)).measure
    assert 'sum(increase(labelled_rows_total{model="iris"}[1s]))' in [q.expression for q in asked]
    key = "trigger:DataVolume"
    assert world.step(0, {**fx.traffic(), key: Answer(value=999.0)}).create == ()
    assert world.status.retraining.triggers[0].message == "999 < threshold 1000"  # type: ignore[union-attr]
    assert key not in [q.key for q in plan.plan(world.observed(), fx.at(300)).measure]
    (job,) = world.step(600, {**fx.traffic(), key: Answer(value=1500.0)}).create
    assert (
        "data volume 1500 >= threshold 1000"
        in job["metadata"]["annotations"][modeldeployment.RETRAINING_REASON_ANNOTATION]
    )


def test_a_quality_drop_trigger_reads_live_accuracy_by_default() -> None:
    world = fx.World(fx.spec(triggers=[{"type": "QualityDrop", "threshold": 0.9}]))
    (query,) = [q for q in plan.plan(world.observed(), fx.at(0)).measure if q.key == "trigger:QualityDrop"]
    labelled = 'kiln_server_feedback_predictions_total{namespace="ml",model="iris",version="1.0.0"'
    assert query.expression == (f'sum(increase({labelled},outcome="correct"}}[1h])) / sum(increase({labelled}}}[1h]))')
    assert world.step(0, {**fx.traffic(), query.key: Answer()}).create == ()
    assert world.status.retraining.triggers[0].message == "the query answered no data"  # type: ignore[union-attr]
    (job,) = world.step(300, {**fx.traffic(), query.key: Answer(value=0.62)}).create
    assert job["metadata"]["labels"][modeldeployment.RETRAINING_TRIGGER_LABEL] == "QualityDrop"


def test_an_unknown_template_variable_is_an_error_in_the_triggers_state() -> None:
    world = fx.World(fx.spec(triggers=[{"type": "DataVolume", "query": "rows{x='{{candidate}}'}", "threshold": 1}]))
    world.step(0, fx.traffic())
    assert "unknown variable {{candidate}}" in world.status.retraining.triggers[0].message  # type: ignore[union-attr]


def request(request_id: str, **fields: str) -> dict[str, str]:
    body = {"id": request_id, "user": "ada", "time": "2026-12-01T12:00:00Z", **fields}
    return {modeldeployment.RETRAIN_REQUEST_ANNOTATION: json.dumps(body)}


def test_kiln_retrain_starts_one_retraining_inside_the_cooldown_once_per_request() -> None:
    world = fx.World(fx.spec(triggers=DRIFT_TRIGGER, cooldown="1h"))
    detect(world)
    world.finish_jobs()
    world.annotations = request("r1", reason="new labels arrived")
    (job,) = world.step(200, fx.traffic()).create
    assert job["metadata"]["labels"][modeldeployment.RETRAINING_TRIGGER_LABEL] == "manual"
    assert job["metadata"]["annotations"][modeldeployment.RETRAINING_REASON_ANNOTATION] == (
        "kiln retrain by ada: new labels arrived"
    )
    assert world.status.retraining.handled_request == "r1"  # type: ignore[union-attr]
    assert world.step(400, fx.traffic()).create == ()


def test_kiln_retrain_beside_a_running_retraining_is_held() -> None:
    world = fx.World(fx.spec(triggers=DRIFT_TRIGGER), jobs=(plan.Job("iris-retrain-1-0-1", "1.0.1", False),))
    world.annotations = request("r2")
    result = world.step(0, fx.traffic())
    assert result.create == ()
    assert world.status.retraining.skipped.reason == reasons.IN_FLIGHT  # type: ignore[union-attr]


def test_a_malformed_retrain_request_is_an_event_once() -> None:
    world = fx.World(fx.spec(triggers=DRIFT_TRIGGER))
    world.annotations = {modeldeployment.RETRAIN_REQUEST_ANNOTATION: "{not json"}
    assert reasons_of(world.step(0, fx.traffic())) == [reasons.RETRAIN_REQUEST_INVALID]
    assert reasons_of(world.step(60, fx.traffic())) == []


def test_next_versions_and_job_names() -> None:
    assert retraining.next_version(["1.0.0", "1.2.3", "1.10.0"]) == "1.10.1"
    assert retraining.next_version(["1.0.0", "2.0.0-rc.1"]) == "2.0.0"
    assert retraining.job_name("a" * 70, "1.0.1") == "a" * 49 + "-retrain-1-0-1"
    assert len(retraining.job_name("a" * 70, "1.0.1")) == 63


def test_the_api_refuses_triggers_without_what_they_need() -> None:
    with pytest.raises(ValueError, match=r"a Drift trigger needs spec\.monitoring\.drift"):
        modeldeployment.Monitoring.model_validate({"retraining": {"template": fx.TEMPLATE, "triggers": DRIFT_TRIGGER}})
    with pytest.raises(ValueError, match="threshold is required for DataVolume and QualityDrop"):
        modeldeployment.RetrainingTrigger.model_validate({"type": "QualityDrop"})
    with pytest.raises(ValueError, match="triggers must have distinct names"):
        modeldeployment.Retraining.model_validate({"template": fx.TEMPLATE, "triggers": [{"type": "Drift"}] * 2})
