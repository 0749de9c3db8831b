"""The operator's own metrics (kiln.controllers.metrics), read from each test's own registry while the
controllers reconcile against the in-memory API server: reconciles by result, a rollback counted once
however often the deployment is reconciled after, measurements by phase, and the training gauges
following the jobs."""

from __future__ import annotations

from typing import Any

import delivery_fixtures as dfx
import pytest
import training_fixtures as tfx

from kiln import artifacts
from kiln.controllers import metrics as operator_metrics
from kiln.controllers import modeldeployment, modelversion, trainingjob
from kiln.kube import client, fake
from kiln.providers import metrics
from kiln.providers.metrics import fake as fake_metrics

MODEL_DEPLOYMENTS = modeldeployment.MODEL_DEPLOYMENTS
MODEL_VERSIONS = modeldeployment.MODEL_VERSIONS
TRAINING_JOBS = trainingjob.TRAINING_JOBS
RENDERED = 'sum(rate(errors{model="iris",version="1.1.0"}[1m]))'
Object = dict[str, Any]


@pytest.fixture
def kiln_metrics() -> operator_metrics.Metrics:
    return operator_metrics.Metrics()


def sample(kiln_metrics: operator_metrics.Metrics, name: str, **labels: str) -> float:
    value = kiln_metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# -- reconciles ----------------------------------------------------------------------------------


def test_a_reconcile_counts_success_and_its_duration(kiln_metrics: operator_metrics.Metrics) -> None:
    clock = fake.ManualClock(dfx.T0)
    api = fake.FakeApi(namespace=dfx.NAMESPACE, clock=clock)
    api.add(MODEL_VERSIONS, dfx.version_body("1.0.0"))
    controller = modelversion.Controller(api, artifacts.Settings(), clock=clock, metrics=kiln_metrics)

    controller.reconcile(dfx.NAMESPACE, api.list(MODEL_VERSIONS, dfx.NAMESPACE)[0]["metadata"]["name"])

    assert sample(kiln_metrics, "kiln_reconciles_total", kind="ModelVersion", result="success") == 1
    assert sample(kiln_metrics, "kiln_reconciles_total", kind="ModelVersion", result="conflict") == 0
    assert sample(kiln_metrics, "kiln_reconcile_duration_seconds_count", kind="ModelVersion") == 1


class EditedWhileObserving(fake.FakeApi):
    """Someone annotates the ModelDeployment right after the controller lists its versions."""

    def list(self, resource: client.Resource, namespace: str | None, label_selector: str | None = None) -> list[Object]:
        found = super().list(resource, namespace, label_selector)
        if resource == MODEL_VERSIONS:
            self.patch(MODEL_DEPLOYMENTS, dfx.NAMESPACE, dfx.NAME, {"metadata": {"annotations": {"edited": "yes"}}})
        return found


def test_a_conflict_is_counted_as_conflict_and_raised(kiln_metrics: operator_metrics.Metrics) -> None:
    clock = fake.ManualClock(dfx.T0)
    api = EditedWhileObserving(namespace=dfx.NAMESPACE, clock=clock)
    api.add(MODEL_VERSIONS, dfx.version_body("1.0.0"))
    api.add(MODEL_DEPLOYMENTS, dfx.deployment_body(version="1.0.0"))
    controller = modeldeployment.Controller(kube=api, clock=clock, metrics=kiln_metrics)

    with pytest.raises(client.ConflictError):
        controller.reconcile(dfx.NAMESPACE, dfx.NAME)

    assert sample(kiln_metrics, "kiln_reconciles_total", kind="ModelDeployment", result="conflict") == 1
    assert sample(kiln_metrics, "kiln_reconciles_total", kind="ModelDeployment", result="success") == 0
    assert sample(kiln_metrics, "kiln_rollouts_total", outcome="Deployed") == 0  # nothing was written


def test_another_failure_is_counted_as_error(kiln_metrics: operator_metrics.Metrics) -> None:
    class Broken(fake.FakeApi):
        def get(self, resource: client.Resource, namespace: str | None, name: str) -> Object | None:
            raise client.ApiError(0, "", "the API server is down")

    controller = trainingjob.Controller(kube=Broken(), metrics=kiln_metrics)

    with pytest.raises(client.ApiError):
        controller.reconcile(tfx.NAMESPACE, "resnet")

    assert sample(kiln_metrics, "kiln_reconciles_total", kind="TrainingJob", result="error") == 1


# -- rollouts and measurements -------------------------------------------------------------------


def pods_ready(api: fake.FakeApi) -> None:
    for deployment in api.list(client.DEPLOYMENTS, dfx.NAMESPACE):
        replicas = deployment["spec"]["replicas"]
        status = {
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
            "observedGeneration": deployment["metadata"]["generation"],
        }
        api.patch(client.DEPLOYMENTS, dfx.NAMESPACE, deployment["metadata"]["name"], {"status": status}, "status")


def canary_at_analysis(
    kiln_metrics: operator_metrics.Metrics, provider: metrics.MetricProvider
) -> tuple[fake.FakeApi, fake.ManualClock, modeldeployment.Controller]:
    """1.0.0 Healthy, then 1.1.0 at 20% with its pause run out: the next reconcile measures it."""
    clock = fake.ManualClock(dfx.T0)
    api = fake.FakeApi(namespace=dfx.NAMESPACE, clock=clock)
    api.add(MODEL_VERSIONS, dfx.version_body("1.0.0"), dfx.version_body("1.1.0"))
    api.add(MODEL_DEPLOYMENTS, dfx.deployment_body(version="1.0.0", replicas=2, **dfx.canary_spec()))
    controller = modeldeployment.Controller(
        kube=api,
        clock=clock,
        default_prometheus=dfx.PROMETHEUS,
        providers={"prometheus": provider},
        metrics=kiln_metrics,
    )
    for _ in range(2):
        controller.reconcile(dfx.NAMESPACE, dfx.NAME)
        pods_ready(api)
    api.patch(MODEL_DEPLOYMENTS, dfx.NAMESPACE, dfx.NAME, {"spec": {"version": "1.1.0"}})
    for _ in range(2):
        controller.reconcile(dfx.NAMESPACE, dfx.NAME)
        pods_ready(api)
    clock.advance(30)
    return api, clock, controller


def status_of(api: fake.FakeApi) -> Object:
    body = api.get(MODEL_DEPLOYMENTS, dfx.NAMESPACE, dfx.NAME)
    assert body is not None
    return dict(body.get("status") or {})


def test_a_rollback_is_counted_once_however_often_it_is_reconciled(kiln_metrics: operator_metrics.Metrics) -> None:
    provider = fake_metrics.FakeMetricProvider()
    provider.answer(RENDERED, metrics.Answer.of(0.2))
    api, clock, controller = canary_at_analysis(kiln_metrics, provider)
    assert sample(kiln_metrics, "kiln_rollouts_total", outcome="Deployed") == 1  # 1.0.0, the first deployment

    for _ in range(4):
        controller.reconcile(dfx.NAMESPACE, dfx.NAME)
        pods_ready(api)
        clock.advance(30)

    status = status_of(api)
    assert (status["phase"], status["stableVersion"]) == ("RolledBack", "1.0.0")
    assert [record.get("outcome") for record in status["history"]] == ["Deployed", "RolledBack"]
    assert sample(kiln_metrics, "kiln_rollouts_total", outcome="RolledBack") == 1
    assert sample(kiln_metrics, "kiln_rollouts_total", outcome="Deployed") == 1
    assert sample(kiln_metrics, "kiln_rollouts_total", outcome="Promoted") == 0
    assert sample(kiln_metrics, "kiln_analysis_measurements_total", metric_phase="Failed") == 1

    # A restarted operator (a fresh controller) sees the same history: nothing more is counted.
    fresh = modeldeployment.Controller(kube=api, clock=clock, providers={"prometheus": provider}, metrics=kiln_metrics)
    fresh.reconcile(dfx.NAMESPACE, dfx.NAME)
    assert sample(kiln_metrics, "kiln_rollouts_total", outcome="RolledBack") == 1


def test_measurements_are_counted_by_phase(kiln_metrics: operator_metrics.Metrics) -> None:
    provider = fake_metrics.FakeMetricProvider()
    provider.answer(RENDERED, metrics.Answer.of(0.001), metrics.Answer.failure("prometheus is away"))
    api, clock, controller = canary_at_analysis(kiln_metrics, provider)

    controller.reconcile(dfx.NAMESPACE, dfx.NAME)
    controller.reconcile(dfx.NAMESPACE, dfx.NAME)  # the same instant: nothing measured, nothing counted
    assert sample(kiln_metrics, "kiln_analysis_measurements_total", metric_phase="Successful") == 1
    clock.advance(30)
    controller.reconcile(dfx.NAMESPACE, dfx.NAME)

    (analysis,) = status_of(api)["analysis"]
    assert (analysis["successful"], analysis["errors"]) == (1, 1)
    assert sample(kiln_metrics, "kiln_analysis_measurements_total", metric_phase="Successful") == 1
    assert sample(kiln_metrics, "kiln_analysis_measurements_total", metric_phase="Error") == 1
    assert sample(kiln_metrics, "kiln_analysis_measurements_total", metric_phase="Failed") == 0
    assert sample(kiln_metrics, "kiln_analysis_measurements_total", metric_phase="Inconclusive") == 0


def test_status_diffs_count_new_outcomes_and_grown_counters_only() -> None:
    old_history = [{"version": "1", "startTime": "t0", "outcome": "Deployed"}, {"version": "2", "startTime": "t1"}]
    new_history = [*old_history[:1], {"version": "2", "startTime": "t1", "outcome": "Promoted"}]
    assert operator_metrics.finished_rollouts(old_history, new_history) == ["Promoted"]
    assert operator_metrics.finished_rollouts(new_history, new_history) == []
    old = [{"metric": "m", "started": "t0", "successful": 2, "failed": 1}]
    new = [
        {"metric": "m", "started": "t0", "successful": 3, "failed": 1},
        {"metric": "m", "started": "t9", "errors": 2},
    ]
    assert operator_metrics.new_measurements(old, new) == {"Successful": 1, "Error": 2}


# -- training gauges -----------------------------------------------------------------------------


def test_training_gauges_follow_the_jobs(kiln_metrics: operator_metrics.Metrics) -> None:
    clock = fake.ManualClock(tfx.T0)
    api = fake.FakeApi(namespace=tfx.NAMESPACE, clock=clock)
    api.add(client.NODES, tfx.node("gpu-a", gpus=4, product=tfx.A100), tfx.node("gpu-b", gpus=4, product=tfx.A100))
    controller = trainingjob.Controller(kube=api, clock=clock, metrics=kiln_metrics)
    gpus = {"resources": {"gpus": {"count": 4}}}
    api.add(TRAINING_JOBS, tfx.job_body("fits", uid="u-fits", workers=2, **gpus))
    api.add(TRAINING_JOBS, tfx.job_body("waits", uid="u-waits", workers=3, **gpus))

    controller.reconcile(tfx.NAMESPACE, "fits")
    controller.reconcile(tfx.NAMESPACE, "waits")

    phases = {body["metadata"]["name"]: body["status"]["phase"] for body in api.list(TRAINING_JOBS, tfx.NAMESPACE)}
    assert phases["waits"] == "Queued"
    assert phases["fits"] != "Queued"
    assert sample(kiln_metrics, "kiln_training_jobs", phase="Queued") == 1
    assert sample(kiln_metrics, "kiln_training_jobs", phase=phases["fits"]) == 1
    assert sample(kiln_metrics, "kiln_queued_gpu_demand") == 12

    controller.reconcile(tfx.NAMESPACE, "waits")  # seen again: still one job, not two
    assert sample(kiln_metrics, "kiln_training_jobs", phase="Queued") == 1

    api.delete(TRAINING_JOBS, tfx.NAMESPACE, "waits")
    controller.forget(tfx.NAMESPACE, "waits")
    assert sample(kiln_metrics, "kiln_training_jobs", phase="Queued") == 0
    assert sample(kiln_metrics, "kiln_queued_gpu_demand") == 0
    assert sum(sample(kiln_metrics, "kiln_training_jobs", phase=p) for p in phases.values()) == 1


def test_a_job_gone_before_its_reconcile_is_forgotten(kiln_metrics: operator_metrics.Metrics) -> None:
    kiln_metrics.training_job_seen(tfx.NAMESPACE, "gone", "Queued", 8)
    controller = trainingjob.Controller(kube=fake.FakeApi(namespace=tfx.NAMESPACE), metrics=kiln_metrics)

    controller.reconcile(tfx.NAMESPACE, "gone")

    assert sample(kiln_metrics, "kiln_queued_gpu_demand") == 0
    assert sample(kiln_metrics, "kiln_reconciles_total", kind="TrainingJob", result="success") == 1
