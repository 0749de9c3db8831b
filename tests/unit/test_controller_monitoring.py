"""Monitoring wired into the ModelDeployment controller, against the in-memory API server with an
injected clock and a scripted Prometheus: a steady deployment's drift checked through the metric
provider, DriftDetected and its Event, exactly one TrainingJob created for a drift however many
reconciles see it, a second drift inside the cooldown held with its reason in status and an Event,
the operator's drift metrics, and nothing watched while a rollout runs."""

from __future__ import annotations

import datetime
from typing import Any

import delivery_fixtures as fx
import monitoring_fixtures as mfx
import pytest
from test_controller_modeldeployment import pods_ready

from kiln.api import modeldeployment as api_md
from kiln.controllers import modeldeployment
from kiln.kube import client, fake
from kiln.monitoring import drift, reasons
from kiln.providers.metrics import base as metrics_base
from kiln.providers.metrics import fake as fake_metrics

MODEL_DEPLOYMENTS = modeldeployment.MODEL_DEPLOYMENTS
MODEL_VERSIONS = modeldeployment.MODEL_VERSIONS
TRAINING_JOBS = client.kiln_resource(modeldeployment.resources.TRAINING_JOB)
MONITORING = {
    "drift": {"interval": "1m", "window": "2m", "minSamples": 500},
    "retraining": {"template": mfx.TEMPLATE, "triggers": [{"type": "Drift"}], "cooldown": "1h"},
}
Object = dict[str, Any]


@pytest.fixture
def clock() -> fake.ManualClock:
    return fake.ManualClock(fx.T0)


@pytest.fixture
def api(clock: fake.ManualClock) -> fake.FakeApi:
    return fake.FakeApi(namespace=fx.NAMESPACE, clock=clock)


@pytest.fixture
def prometheus() -> fake_metrics.FakeMetricProvider:
    return fake_metrics.FakeMetricProvider()


@pytest.fixture
def controller(
    api: fake.FakeApi, clock: fake.ManualClock, prometheus: fake_metrics.FakeMetricProvider
) -> modeldeployment.Controller:
    version = fx.version_body("1.0.0", features=list(mfx.FEATURES))
    version["spec"]["baseline"] = mfx.baseline().to_wire()
    api.add(MODEL_VERSIONS, version)
    api.add(MODEL_DEPLOYMENTS, fx.deployment_body(version="1.0.0", monitoring=MONITORING))
    return modeldeployment.Controller(
        kube=api, clock=clock, default_prometheus=fx.PROMETHEUS, providers={"prometheus": prometheus, "web": prometheus}
    )


def live(prometheus: fake_metrics.FakeMetricProvider, shift: float, rows: int = 800) -> None:
    """What Prometheus answers for each feature's buckets: `rows` live samples shifted by `shift`."""
    target = drift.Target(fx.NAMESPACE, fx.NAME, "1.0.0", mfx.baseline())
    window = datetime.timedelta(minutes=2)
    for key, answer in mfx.traffic(shift=shift, rows=rows).items():
        feature = key.removeprefix(drift.FEATURE_KEY)
        assert isinstance(answer.value, list)
        prometheus.answer(drift.feature_query(target, feature, window), metrics_base.Answer.of(answer.value))


def healthy(api: fake.FakeApi, controller: modeldeployment.Controller) -> None:
    controller.reconcile(fx.NAMESPACE, fx.NAME)
    pods_ready(api)


def at(controller: modeldeployment.Controller, clock: fake.ManualClock, seconds: float) -> Object:
    clock.advance(seconds - (clock() - fx.T0).total_seconds())
    controller.reconcile(fx.NAMESPACE, fx.NAME)
    body = controller.kube.get(MODEL_DEPLOYMENTS, fx.NAMESPACE, fx.NAME)
    assert body is not None
    return dict(body.get("status") or {})


def drift_condition(status: Object) -> Object:
    return next(c for c in status.get("conditions", []) if c["type"] == reasons.DRIFT_DETECTED)


def event_reasons(api: fake.FakeApi) -> list[str]:
    return [event["reason"] for event in api.events(fx.NAME)]


def test_training_like_traffic_keeps_drift_under_the_threshold_and_starts_nothing(
    api: fake.FakeApi,
    clock: fake.ManualClock,
    controller: modeldeployment.Controller,
    prometheus: fake_metrics.FakeMetricProvider,
) -> None:
    live(prometheus, shift=0.0)
    healthy(api, controller)
    for seconds in (10, 70, 130, 190):
        status = at(controller, clock, seconds)
    assert status["phase"] == "Healthy"
    condition = drift_condition(status)
    assert (condition["status"], condition["reason"]) == ("False", reasons.NO_DRIFT)
    assert status["drift"]["score"] < 0.2
    assert len(status["drift"]["history"]) == 4
    assert all(query.address == fx.PROMETHEUS for query in prometheus.queries)
    assert api.list(TRAINING_JOBS, fx.NAMESPACE) == []


def test_shifted_traffic_raises_drift_detected_and_creates_exactly_one_training_job(
    api: fake.FakeApi,
    clock: fake.ManualClock,
    controller: modeldeployment.Controller,
    prometheus: fake_metrics.FakeMetricProvider,
) -> None:
    live(prometheus, shift=1.5)
    healthy(api, controller)
    for seconds in (10, 70, 130):
        status = at(controller, clock, seconds)
    condition = drift_condition(status)
    assert (condition["status"], condition["reason"]) == ("True", reasons.DRIFTED)
    (job,) = api.list(TRAINING_JOBS, fx.NAMESPACE)
    assert job["metadata"]["name"] == "iris-retrain-1-0-1"
    assert job["metadata"]["labels"][api_md.RETRAINING_FOR_LABEL] == fx.NAME
    assert job["spec"]["output"]["version"] == "1.0.1"
    assert status["retraining"]["trainingJob"] == "iris-retrain-1-0-1"
    assert event_reasons(api).count(reasons.DRIFT_DETECTED) == 1
    assert event_reasons(api).count(reasons.RETRAINING_STARTED) == 1

    for seconds in (190, 250, 310):  # the drift lasts; the job runs
        status = at(controller, clock, seconds)
    assert len(api.list(TRAINING_JOBS, fx.NAMESPACE)) == 1
    assert status["retraining"]["skipped"]["reason"] == reasons.IN_FLIGHT
    assert event_reasons(api).count(reasons.RETRAINING_SKIPPED) == 1

    metrics = controller.metrics.registry
    assert metrics.get_sample_value("kiln_drift_detected", {"namespace": fx.NAMESPACE, "deployment": fx.NAME}) == 1
    score = metrics.get_sample_value(
        "kiln_drift_score", {"namespace": fx.NAMESPACE, "deployment": fx.NAME, "feature": "sepal_length"}
    )
    assert score == pytest.approx(next(f["score"] for f in status["drift"]["features"] if f["name"] == "sepal_length"))
    assert metrics.get_sample_value("kiln_retrainings_total", {"trigger": "Drift"}) == 1
    assert metrics.get_sample_value("kiln_retrainings_skipped_total", {"reason": reasons.IN_FLIGHT}) == 1


def test_a_second_drift_inside_the_cooldown_creates_no_job_and_says_so(
    api: fake.FakeApi,
    clock: fake.ManualClock,
    controller: modeldeployment.Controller,
    prometheus: fake_metrics.FakeMetricProvider,
) -> None:
    live(prometheus, shift=1.5)
    healthy(api, controller)
    for seconds in (10, 70, 130):
        at(controller, clock, seconds)
    api.patch(TRAINING_JOBS, fx.NAMESPACE, "iris-retrain-1-0-1", {"status": {"phase": "Failed"}}, "status")
    live(prometheus, shift=0.0)
    assert drift_condition(at(controller, clock, 190))["status"] == "False"
    live(prometheus, shift=-1.5)
    for seconds in (250, 310, 370):
        status = at(controller, clock, seconds)
    assert drift_condition(status)["status"] == "True"
    assert len(api.list(TRAINING_JOBS, fx.NAMESPACE)) == 1
    skipped = status["retraining"]["skipped"]
    assert skipped["reason"] == reasons.COOLDOWN
    assert "the cooldown of 1h after TrainingJob iris-retrain-1-0-1" in skipped["message"]
    (told,) = [e for e in api.events(fx.NAME) if e["reason"] == reasons.RETRAINING_SKIPPED]
    assert reasons.COOLDOWN in told["message"]


def test_nothing_is_watched_while_a_rollout_runs(
    api: fake.FakeApi,
    clock: fake.ManualClock,
    controller: modeldeployment.Controller,
    prometheus: fake_metrics.FakeMetricProvider,
) -> None:
    live(prometheus, shift=1.5)
    controller.reconcile(fx.NAMESPACE, fx.NAME)  # pods not ready: Progressing
    status = at(controller, clock, 200)
    assert status["phase"] == "Progressing"
    assert "drift" not in status
    assert not [q for q in prometheus.queries if "feature_values" in q.expression]


def test_a_provider_that_cannot_answer_makes_drift_unknown_not_detected(
    api: fake.FakeApi,
    clock: fake.ManualClock,
    controller: modeldeployment.Controller,
) -> None:
    healthy(api, controller)  # nothing scripted: every query is an error
    status = at(controller, clock, 10)
    condition = drift_condition(status)
    assert (condition["status"], condition["reason"]) == ("Unknown", reasons.MEASUREMENT_ERROR)
    assert "the fake metric provider has no answer" in condition["message"]
    assert [check.get("score") for check in status["drift"]["history"]] == [None]
