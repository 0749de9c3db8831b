"""The ModelDeployment controller's observe → act, driven against the in-memory API server with an
injected clock and scripted metric providers: the serving objects created once (the router's
weights first), status through the status subresource and then Events, nothing written when
nothing changed, a restart mid-rollout, analysis that rolls back, providers that fail or hang,
a stale status write, and retired versions deleted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import delivery_fixtures as fx
import pytest

from kiln.controllers import modeldeployment
from kiln.delivery import reasons, serving
from kiln.kube import client, fake
from kiln.providers import metrics
from kiln.providers.metrics import fake as fake_metrics

MODEL_DEPLOYMENTS = modeldeployment.MODEL_DEPLOYMENTS
MODEL_VERSIONS = modeldeployment.MODEL_VERSIONS
V1, V2 = serving.deployment_name(fx.NAME, "1.0.0"), serving.deployment_name(fx.NAME, "1.1.0")
ROUTER = serving.router_name(fx.NAME)
STABLE, CANARY = serving.stable_service(fx.NAME), serving.canary_service(fx.NAME)
QUERY = 'sum(rate(errors{namespace="{{namespace}}",version="{{candidate}}"}[1m]))'
RENDERED = f'sum(rate(errors{{namespace="{fx.NAMESPACE}",version="1.1.0"}}[1m]))'
ERROR_RATE = {**fx.ERROR_RATE, "query": QUERY}
WEB_URL = "http://quality.monitoring/score?version={{candidate}}"
Object = dict[str, Any]


@pytest.fixture
def clock() -> fake.ManualClock:
    return fake.ManualClock(fx.T0)


@pytest.fixture
def api(clock: fake.ManualClock) -> fake.FakeApi:
    return fake.FakeApi(namespace=fx.NAMESPACE, clock=clock)


@pytest.fixture
def provider() -> fake_metrics.FakeMetricProvider:
    return fake_metrics.FakeMetricProvider()


def controller(
    api: fake.FakeApi, clock: fake.ManualClock, provider: metrics.MetricProvider | None = None
) -> modeldeployment.Controller:
    answering = provider or fake_metrics.FakeMetricProvider()
    return modeldeployment.Controller(
        kube=api,
        clock=clock,
        default_prometheus=fx.PROMETHEUS,
        providers={"prometheus": answering, "web": answering},
    )


def reconcile(controller: modeldeployment.Controller) -> None:
    controller.reconcile(fx.NAMESPACE, fx.NAME)


def deploy(api: fake.FakeApi, **spec: Any) -> None:
    """Versions 1.0.0 and 1.1.0 of iris, and a ModelDeployment pinned to 1.0.0 with two replicas."""
    api.add(MODEL_VERSIONS, fx.version_body("1.0.0"), fx.version_body("1.1.0"))
    api.add(MODEL_DEPLOYMENTS, fx.deployment_body(version="1.0.0", replicas=2, **spec))


def pods_ready(api: fake.FakeApi) -> None:
    """What the Deployment controller would write once every pod of every Deployment is ready."""
    for deployment in api.list(client.DEPLOYMENTS, fx.NAMESPACE):
        replicas = deployment["spec"]["replicas"]
        status = {
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
            "observedGeneration": deployment["metadata"]["generation"],
        }
        name = deployment["metadata"]["name"]
        api.patch(client.DEPLOYMENTS, fx.NAMESPACE, name, {"status": status}, subresource="status")


def serving_v1(api: fake.FakeApi, controller: modeldeployment.Controller) -> None:
    """Version 1.0.0 deployed and Healthy."""
    reconcile(controller)
    pods_ready(api)
    reconcile(controller)
    assert md_status(api)["phase"] == "Healthy"


def roll_out_v2(api: fake.FakeApi) -> None:
    api.patch(MODEL_DEPLOYMENTS, fx.NAMESPACE, fx.NAME, {"spec": {"version": "1.1.0"}})


def md_status(api: fake.FakeApi) -> Object:
    body = api.get(MODEL_DEPLOYMENTS, fx.NAMESPACE, fx.NAME)
    assert body is not None
    return dict(body.get("status") or {})


def condition(status: Object, condition_type: str) -> Object:
    return next(found for found in status["conditions"] if found["type"] == condition_type)


def router_json(api: fake.FakeApi) -> Object:
    config = api.get(client.CONFIG_MAPS, fx.NAMESPACE, ROUTER)
    assert config is not None
    return dict(json.loads(config["data"][serving.ROUTER_CONFIG_KEY]))


def replicas_of(api: fake.FakeApi, name: str) -> int:
    deployment = api.get(client.DEPLOYMENTS, fx.NAMESPACE, name)
    assert deployment is not None
    return int(deployment["spec"]["replicas"])


def writes(api: fake.FakeApi, since: int = 0) -> list[tuple[str, str, str, str | None]]:
    return [(a.verb, a.kind, a.name, a.subresource) for a in api.actions[since:]]


def created(api: fake.FakeApi, kind: str) -> list[str]:
    return [action.name for action in api.actions if (action.verb, action.kind) == ("create", kind)]


def latest_measurement(api: fake.FakeApi, metric: str) -> Object:
    result = next(found for found in md_status(api)["analysis"] if found["metric"] == metric)
    return dict(result["measurements"][-1])


def analysed_canary(metric: Object) -> Object:
    """A canary of 20%, a 30 s pause, then analysis of `metric`, then 50% and 100%."""
    steps = [
        {**step, "analysis": {"metrics": [metric["name"]]}} if "analysis" in step else step for step in fx.CANARY_STEPS
    ]
    return fx.canary_spec(steps=steps, metrics=[metric])


def at_the_analysis_step(api: fake.FakeApi, clock: fake.ManualClock, controller: modeldeployment.Controller) -> None:
    """Version 1.1.0 at 20% of the traffic, its pause run out: the next reconcile analyses it."""
    serving_v1(api, controller)
    roll_out_v2(api)
    reconcile(controller)
    pods_ready(api)
    reconcile(controller)
    assert router_json(api)["weights"] == {serving.STABLE: 80, serving.CANDIDATE: 20}
    clock.advance(30)


# -- the first reconcile ---------------------------------------------------------------------


def test_a_first_reconcile_creates_the_router_config_first_then_the_version_and_the_router(
    api: fake.FakeApi, clock: fake.ManualClock
) -> None:
    deploy(api)

    reconcile(controller(api, clock))

    creates = [(verb, kind, name) for verb, kind, name, _ in writes(api) if kind not in ("ModelDeployment", "Event")]
    assert creates == [
        ("create", "ConfigMap", ROUTER),
        ("create", "Deployment", V1),
        ("create", "Service", V1),
        ("create", "Service", STABLE),
        ("create", "Service", CANARY),
        ("create", "ServiceAccount", ROUTER),
        ("create", "Role", ROUTER),
        ("create", "RoleBinding", ROUTER),
        ("create", "Deployment", ROUTER),
        ("create", "Service", fx.NAME),
    ]


def test_every_serving_object_is_owned_by_the_deployment_and_labelled(
    api: fake.FakeApi, clock: fake.ManualClock
) -> None:
    deploy(api)

    reconcile(controller(api, clock))

    resources = [client.CONFIG_MAPS, client.DEPLOYMENTS, client.SERVICES, client.SERVICE_ACCOUNTS]
    found = [obj for resource in [*resources, client.ROLES, client.ROLE_BINDINGS] for obj in api.list(resource, None)]
    assert len(found) == 10
    for obj in found:
        metadata = obj["metadata"]
        owners = [(ref["kind"], ref["name"], ref["uid"], ref.get("controller")) for ref in metadata["ownerReferences"]]
        assert owners == [("ModelDeployment", fx.NAME, fx.UID, True)], metadata["name"]
        labels = metadata["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "kiln", metadata["name"]
        assert labels[serving.DEPLOYMENT_LABEL] == fx.NAME, metadata["name"]
        assert labels[serving.COMPONENT_LABEL] in (serving.SERVER, serving.ROUTER), metadata["name"]


def test_a_first_reconcile_sends_all_traffic_to_the_version_and_waits_for_its_pods(
    api: fake.FakeApi, clock: fake.ManualClock
) -> None:
    deploy(api)

    reconcile(controller(api, clock))

    assert router_json(api)["weights"] == {serving.STABLE: 100}
    assert replicas_of(api, V1) == 2
    status = md_status(api)
    assert (status["phase"], status["stableVersion"]) == ("Progressing", "1.0.0")
    assert condition(status, "Ready")["status"] == "False"


# -- status and Events -----------------------------------------------------------------------


def test_once_the_deployments_are_ready_the_status_is_healthy_and_ready(
    api: fake.FakeApi, clock: fake.ManualClock
) -> None:
    deploy(api)
    kiln = controller(api, clock)
    reconcile(kiln)
    pods_ready(api)
    before = len(api.actions)

    reconcile(kiln)

    status = md_status(api)
    assert status["phase"] == "Healthy"
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Available")["status"] == "True"
    assert status["readyReplicas"] == 2  # the serving pods of 1.0.0; the router's are not counted
    status_writes = [w for w in writes(api, before) if w[1] == "ModelDeployment"]
    assert status_writes == [("patch", "ModelDeployment", fx.NAME, "status")]


def test_status_is_written_only_through_the_status_subresource(api: fake.FakeApi, clock: fake.ManualClock) -> None:
    deploy(api)
    kiln = controller(api, clock)

    serving_v1(api, kiln)

    touching_the_md = {(verb, sub) for verb, kind, _, sub in writes(api) if kind == "ModelDeployment"}
    assert touching_the_md == {("patch", "status")}


def test_events_are_posted_after_the_status_write(api: fake.FakeApi, clock: fake.ManualClock) -> None:
    deploy(api)

    reconcile(controller(api, clock))

    kinds = [kind for _, kind, _, _ in writes(api)]
    assert kinds.count("Event") >= 1
    assert kinds.index("ModelDeployment") < kinds.index("Event")
    assert all(kind == "Event" for kind in kinds[kinds.index("ModelDeployment") + 1 :])
    assert [event["reason"] for event in api.events(about=fx.NAME)] == [reasons.DEPLOYED]


def test_a_second_reconcile_with_nothing_changed_writes_nothing(api: fake.FakeApi, clock: fake.ManualClock) -> None:
    deploy(api)
    kiln = controller(api, clock)
    serving_v1(api, kiln)
    written = list(api.actions)

    reconcile(kiln)

    assert api.actions == written


def test_a_reconcile_right_after_the_first_writes_nothing(api: fake.FakeApi, clock: fake.ManualClock) -> None:
    deploy(api)
    kiln = controller(api, clock)
    reconcile(kiln)
    written = list(api.actions)

    reconcile(kiln)

    assert api.actions == written


def test_a_deleted_deployment_is_left_alone(api: fake.FakeApi, clock: fake.ManualClock) -> None:
    reconcile(controller(api, clock))

    assert api.actions == []


# -- a restart mid-rollout -------------------------------------------------------------------


def test_a_restarted_controller_mid_rollout_creates_nothing_twice_and_keeps_the_weights(
    api: fake.FakeApi, clock: fake.ManualClock
) -> None:
    deploy(api, **fx.canary_spec())
    serving_v1(api, controller(api, clock))
    roll_out_v2(api)
    first = controller(api, clock)
    reconcile(first)
    pods_ready(api)
    reconcile(first)
    clock.advance(10)  # within the 30 s pause
    before, status = router_json(api), md_status(api)
    assert before["weights"] == {serving.STABLE: 80, serving.CANDIDATE: 20}
    since = len(api.actions)

    reconcile(controller(api, clock))

    assert [w for w in writes(api, since) if w[0] == "create" and w[1] != "Event"] == []
    assert sorted(created(api, "Deployment")) == sorted([V1, V2, ROUTER])
    assert router_json(api) == before
    after = md_status(api)
    assert (after["candidateVersion"], after["currentStepIndex"], after["weights"]) == (
        status["candidateVersion"],
        status["currentStepIndex"],
        status["weights"],
    )
    assert (replicas_of(api, V1), replicas_of(api, V2)) == (2, 1)


# -- analysis --------------------------------------------------------------------------------


def test_analysis_queries_the_provider_with_the_rendered_query(
    api: fake.FakeApi, clock: fake.ManualClock, provider: fake_metrics.FakeMetricProvider
) -> None:
    provider.answer(RENDERED, metrics.Answer.of(0.001))
    deploy(api, **analysed_canary(ERROR_RATE))
    kiln = controller(api, clock, provider)
    at_the_analysis_step(api, clock, kiln)

    reconcile(kiln)

    assert [(q.provider, q.expression, q.address) for q in provider.queries] == [
        ("prometheus", RENDERED, fx.PROMETHEUS)
    ]
    assert "{{" not in provider.queries[0].expression
    assert latest_measurement(api, "error-rate")["phase"] == "Successful"


def test_a_failing_analysis_rolls_back_in_the_same_reconcile(
    api: fake.FakeApi, clock: fake.ManualClock, provider: fake_metrics.FakeMetricProvider
) -> None:
    provider.answer(RENDERED, metrics.Answer.of(0.2))
    deploy(api, **analysed_canary(ERROR_RATE))
    kiln = controller(api, clock, provider)
    at_the_analysis_step(api, clock, kiln)
    since = len(api.actions)

    reconcile(kiln)

    assert len(provider.queries) == 1
    assert router_json(api)["weights"] == {serving.STABLE: 100}
    assert replicas_of(api, V2) == 0
    assert replicas_of(api, V1) == 2
    status = md_status(api)
    assert (status["phase"], status["stableVersion"]) == ("RolledBack", "1.0.0")
    assert status.get("candidateVersion") is None
    assert status["rolledBackVersions"] == ["1.1.0"]
    warnings = [event for event in api.events(about=fx.NAME) if event["type"] == "Warning"]
    assert [event["reason"] for event in warnings] == [reasons.ANALYSIS_FAILED]
    assert "error-rate" in warnings[0]["message"]
    kinds = [kind for _, kind, _, _ in writes(api, since)]
    assert kinds.index("ConfigMap") < kinds.index("ModelDeployment") < kinds.index("Event")


class Raising:
    """A provider that breaks its promise never to raise."""

    def __init__(self) -> None:
        self.queries: list[metrics.Query] = []

    def query(self, query: metrics.Query) -> metrics.Answer:
        self.queries.append(query)
        raise RuntimeError("the provider crashed")


class Hanging:
    """A provider that does not answer until released, far later than any timeout."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.queries: list[metrics.Query] = []

    def query(self, query: metrics.Query) -> metrics.Answer:
        self.queries.append(query)
        self.release.wait(timeout=10)
        return metrics.Answer.of(0.0)


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    provider = Hanging()
    yield provider
    provider.release.set()


def test_a_provider_that_raises_is_an_error_measurement_not_an_exception(
    api: fake.FakeApi, clock: fake.ManualClock
) -> None:
    raising = Raising()
    deploy(api, **analysed_canary(ERROR_RATE))
    kiln = controller(api, clock, raising)
    at_the_analysis_step(api, clock, kiln)

    reconcile(kiln)

    assert len(raising.queries) == 1
    measurement = latest_measurement(api, "error-rate")
    assert measurement["phase"] == "Error"
    assert "the provider crashed" in measurement["error"]
    assert md_status(api)["candidateVersion"] == "1.1.0"  # an error neither promotes nor rolls back


def test_a_provider_that_outlives_its_timeout_is_an_error_measurement(
    api: fake.FakeApi, clock: fake.ManualClock, hanging: Hanging
) -> None:
    web_metric = {
        "name": "quality",
        "provider": "web",
        "web": {"url": WEB_URL, "jsonPath": "$.score", "timeoutSeconds": 1},
        "successCondition": "result >= 0.9",
    }
    deploy(api, **analysed_canary(web_metric))
    kiln = controller(api, clock, hanging)
    at_the_analysis_step(api, clock, kiln)

    started = time.monotonic()
    reconcile(kiln)
    elapsed = time.monotonic() - started

    assert elapsed < 5  # bounded by the timeout (and the controller's grace), not by the provider
    assert [(q.provider, q.expression, q.timeout) for q in hanging.queries] == [
        ("web", "http://quality.monitoring/score?version=1.1.0", 1.0)
    ]
    measurement = latest_measurement(api, "quality")
    assert measurement["phase"] == "Error"
    assert "1s" in measurement["error"]
    assert md_status(api)["candidateVersion"] == "1.1.0"


# -- a stale status write --------------------------------------------------------------------


class EditedWhileObserving(fake.FakeApi):
    """Someone annotates the ModelDeployment right after the controller lists its versions."""

    def list(self, resource: client.Resource, namespace: str | None, label_selector: str | None = None) -> list[Object]:
        found = super().list(resource, namespace, label_selector)
        if resource == MODEL_VERSIONS:
            edit = {"metadata": {"annotations": {"edited": str(len(self.actions))}}}
            self.patch(MODEL_DEPLOYMENTS, fx.NAMESPACE, fx.NAME, edit)
        return found


def test_a_stale_status_write_raises_conflict_and_posts_no_event(clock: fake.ManualClock) -> None:
    api = EditedWhileObserving(namespace=fx.NAMESPACE, clock=clock)
    deploy(api)

    with pytest.raises(client.ConflictError):
        reconcile(controller(api, clock))

    assert md_status(api) == {}
    assert api.events() == []


class EditingWhileMeasuring:
    """A provider whose query, as a side effect, has someone annotate the ModelDeployment."""

    def __init__(self, api: fake.FakeApi) -> None:
        self.api = api

    def query(self, query: metrics.Query) -> metrics.Answer:
        edit = {"metadata": {"annotations": {"edited": "while measuring"}}}
        self.api.patch(MODEL_DEPLOYMENTS, fx.NAMESPACE, fx.NAME, edit)
        return metrics.Answer.of(0.001)


def test_a_deployment_edited_while_analysis_measures_refuses_the_status_write(
    api: fake.FakeApi, clock: fake.ManualClock
) -> None:
    deploy(api, **analysed_canary(ERROR_RATE))
    kiln = controller(api, clock, EditingWhileMeasuring(api))
    at_the_analysis_step(api, clock, kiln)
    before, events = md_status(api), len(api.events())

    with pytest.raises(client.ConflictError):
        reconcile(kiln)

    assert md_status(api) == before
    assert len(api.events()) == events


# -- retirement ------------------------------------------------------------------------------


def test_a_retired_version_loses_its_deployment_and_service(api: fake.FakeApi, clock: fake.ManualClock) -> None:
    deploy(api)
    kiln = controller(api, clock)
    serving_v1(api, kiln)
    roll_out_v2(api)
    reconcile(kiln)
    pods_ready(api)
    reconcile(kiln)
    status = md_status(api)
    assert (status["stableVersion"], [r["version"] for r in status["retiring"]]) == ("1.1.0", ["1.0.0"])
    assert api.get(client.DEPLOYMENTS, fx.NAMESPACE, V1) is not None
    clock.advance(31)  # past the default scaleDownDelaySeconds of 30
    since = len(api.actions)

    reconcile(kiln)

    assert api.get(client.DEPLOYMENTS, fx.NAMESPACE, V1) is None
    assert api.get(client.SERVICES, fx.NAMESPACE, V1) is None
    deletes = [(kind, name) for verb, kind, name, _ in writes(api, since) if verb == "delete"]
    assert sorted(deletes) == [("Deployment", V1), ("Service", V1)]
    assert api.get(client.DEPLOYMENTS, fx.NAMESPACE, V2) is not None
    assert api.get(client.SERVICES, fx.NAMESPACE, V2) is not None
    assert md_status(api)["retiring"] == []
    assert reasons.RETIRED in [event["reason"] for event in api.events(about=fx.NAME)]


def test_autoscaling_creates_an_autoscaler_per_version_and_removing_it_deletes_them(
    api: fake.FakeApi, clock: fake.ManualClock
) -> None:
    deploy(api, autoscaling={"minReplicas": 3, "maxReplicas": 6, "targetCPUUtilizationPercentage": 60})
    operator = controller(api, clock)
    reconcile(operator)

    [hpa] = api.list(client.HORIZONTAL_POD_AUTOSCALERS, fx.NAMESPACE)
    assert (hpa["metadata"]["name"], hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (V1, 3, 6)
    assert hpa["metadata"]["ownerReferences"][0]["name"] == fx.NAME
    assert api.get(client.DEPLOYMENTS, fx.NAMESPACE, V1)["spec"]["replicas"] == 3

    body = api.get(MODEL_DEPLOYMENTS, fx.NAMESPACE, fx.NAME)
    api.patch(MODEL_DEPLOYMENTS, fx.NAMESPACE, fx.NAME, {"spec": {**body["spec"], "autoscaling": None}})
    clock.advance(1)
    reconcile(operator)

    assert api.list(client.HORIZONTAL_POD_AUTOSCALERS, fx.NAMESPACE) == []
    assert api.get(client.DEPLOYMENTS, fx.NAMESPACE, V1)["spec"]["replicas"] == 2
