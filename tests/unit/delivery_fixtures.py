"""Builders shared by the ModelDeployment delivery tests: deployment and ModelVersion bodies in wire
form, the fixed clock, and a small cluster that replays reconciles: plan, write the plan's status
back, let time pass and pods become ready, plan again."""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping
from typing import Any

from kiln.api import modeldeployment
from kiln.delivery import analysis, plan, rollout, serving

Object = dict[str, Any]

T0 = datetime.datetime(2024, 6, 11, 10, 0, tzinfo=datetime.UTC)
NAME = "iris"
NAMESPACE = "ml"
UID = "5d1b6c3e-2f4a-4b8e-9c7d-1a2b3c4d5e6f"
PROMETHEUS = "http://prometheus.monitoring:9090"
INPUTS = [{"name": "features", "datatype": "FP64", "shape": [-1, 4]}]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

ERROR_RATE: Object = {
    "name": "error-rate",
    "provider": "prometheus",
    "query": 'sum(rate(errors{model="{{model}}",version="{{candidate}}"}[1m]))',
    "successCondition": "result <= 0.01",
    "failureCondition": "result > 0.05",
    "interval": "30s",
    "count": 2,
}
CANARY_STEPS: list[Object] = [
    {"setWeight": 20},
    {"pause": {"duration": "30s"}},
    {"analysis": {"metrics": ["error-rate"]}},
    {"setWeight": 50},
    {"setWeight": 100},
]


OBSERVED_FIELDS = frozenset(field.name for field in dataclasses.fields(rollout.Observed))


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def label(version: str) -> str:
    return serving.version_label(version)


def deployment_body(
    *, status: Object | None = None, annotations: Mapping[str, str] | None = None, generation: int = 1, **spec: Any
) -> Object:
    """A ModelDeployment as read from the API server; `spec` is camelCase, for model iris."""
    metadata: Object = {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": generation}
    if annotations:
        metadata["annotations"] = dict(annotations)
    body: Object = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": metadata,
        "spec": {"model": NAME, **spec},
    }
    if status is not None:
        body["status"] = status
    return body


def canary_spec(*, steps: list[Object] | None = None, metrics: list[Object] | None = None, **canary: Any) -> Object:
    """The spec fields of a canary over `steps` (CANARY_STEPS), judged by `metrics` ([ERROR_RATE])."""
    return {
        "strategy": {"canary": {"steps": CANARY_STEPS if steps is None else steps, **canary}},
        "analysis": {"metrics": [ERROR_RATE] if metrics is None else metrics},
    }


def version_body(
    version: str,
    *,
    phase: str = "Validated",
    verified: bool = True,
    stage: str = "None",
    inputs: list[Object] | None = None,
    features: list[str] | None = None,
    signature: bool = True,
    annotations: Mapping[str, str] | None = None,
    model: str = NAME,
) -> Object:
    """A ModelVersion of iris as the registry leaves it: Validated, artifact verified, with a signature."""
    spec: Object = {
        "modelName": model,
        "version": version,
        "artifact": {"uri": f"pvc://models/{model}/{version}", "sha256": "a" * 64},
    }
    if signature:
        spec["signature"] = {"inputs": inputs or INPUTS, "featureNames": FEATURES if features is None else features}
    condition = {
        "type": "ArtifactVerified",
        "status": "True" if verified else "False",
        "reason": "Verified" if verified else "DigestMismatch",
        "lastTransitionTime": T0.isoformat(),
    }
    metadata: Object = {"name": f"{model}-{label(version).replace('.', '-')}", "namespace": NAMESPACE}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": metadata,
        "spec": spec,
        "status": {"phase": phase, "stage": stage, "conditions": [condition]},
    }


def action(name: str, action_id: str, *, user: str = "ada") -> dict[str, str]:
    """The rollout-action annotation `kiln <name>` writes."""
    request = {"action": name, "id": action_id, "user": user, "time": T0.isoformat()}
    return {modeldeployment.ROLLOUT_ACTION_ANNOTATION: json.dumps(request)}


def step(
    observed: rollout.Observed, now: datetime.datetime, settings: serving.Settings | None = None
) -> tuple[plan.Plan, rollout.Observed]:
    """One reconcile: the plan, and what the next reconcile observes once its status is written."""
    result = plan.plan(observed, now, settings)
    return result, dataclasses.replace(observed, status=result.status, answers=None)


@dataclasses.dataclass
class Cluster:
    """What one ModelDeployment's reconciles observe, edited between them as the world moves."""

    body: Object
    versions: list[Object]
    deployments: dict[str, rollout.Pods] = dataclasses.field(default_factory=dict)
    router_ready: int = 1
    stable_endpoints: frozenset[str] = frozenset()
    default_prometheus: str | None = PROMETHEUS
    autoscalers: frozenset[str] = frozenset()

    @property
    def spec(self) -> Object:
        return self.body["spec"]

    @property
    def status(self) -> modeldeployment.ModelDeploymentStatus:
        return modeldeployment.ModelDeploymentStatus.model_validate(self.body.get("status") or {})

    def observed(self, answers: Mapping[str, analysis.Answer] | None = None) -> rollout.Observed:
        observations: Object = {
            "deployments": dict(self.deployments),
            "router_ready": self.router_ready,
            "answers": answers,
            "default_prometheus": self.default_prometheus,
            "autoscalers": self.autoscalers,
        }
        if "stable_endpoints" in OBSERVED_FIELDS:  # read by plans that gate promotion on the Service
            observations["stable_endpoints"] = self.stable_endpoints
        return rollout.observed_from(self.body, self.versions, **observations)

    def plan(self, seconds: float, answers: Mapping[str, analysis.Answer] | None = None) -> plan.Plan:
        """The plan at T0 + `seconds`, written nowhere."""
        return plan.plan(self.observed(answers), at(seconds))

    def reconcile(self, seconds: float, answers: Mapping[str, analysis.Answer] | None = None) -> plan.Plan:
        """Reconcile as the controller does: when measurements are asked for, answer each from
        `answers` (by metric name; unanswered when absent) and plan again; then write the status."""
        result = self.plan(seconds)
        if result.measure and answers is not None:
            given = {request.key: answers[request.key.split("@")[0]] for request in result.measure}
            given = {key: answer for key, answer in given.items() if answer is not None}
            result = self.plan(seconds, given)
        self.body["status"] = result.status.to_wire()
        return result

    def ready(self, version: str, ready: int, replicas: int | None = None) -> None:
        """`ready` pods of `version`'s Deployment are ready."""
        self.deployments[label(version)] = rollout.Pods(
            serving.deployment_name(NAME, version), ready if replicas is None else replicas, ready
        )

    def settle(self, result: plan.Plan) -> None:
        """The world catches up with a plan: every serving Deployment it applies has all its pods
        ready, deleted ones are gone, and the stable Service's endpoints are the version it selects."""
        for deployment in objects(result, "Deployment").values():
            version = deployment["spec"]["selector"]["matchLabels"].get(serving.VERSION_LABEL)
            if version is not None:
                replicas = deployment["spec"]["replicas"]
                self.deployments[version] = rollout.Pods(deployment["metadata"]["name"], replicas, replicas)
        self.deployments = {key: pods for key, pods in self.deployments.items() if pods.name not in deleted(result)}
        self.autoscalers = (self.autoscalers - set(result.unscale)) | set(objects(result, "HorizontalPodAutoscaler"))
        if result.apply:
            self.stable_endpoints = frozenset({selected_version(result, serving.stable_service(NAME))})

    def gone(self, version: str) -> None:
        self.deployments.pop(label(version), None)

    def endpoints(self, *versions: str) -> None:
        """The stable Service's ready pods are these versions'."""
        self.stable_endpoints = frozenset(label(version) for version in versions)

    def act(self, name: str, action_id: str) -> None:
        self.body["metadata"]["annotations"] = action(name, action_id)


def cluster(*versions: Object, **spec: Any) -> Cluster:
    return Cluster(deployment_body(**spec), list(versions))


def objects(result: plan.Plan, kind: str) -> dict[str, Object]:
    """The applied objects of a kind, by name."""
    return {obj["metadata"]["name"]: obj for obj in result.apply if obj["kind"] == kind}


def deleted(result: plan.Plan) -> tuple[str, ...]:
    """The serving Deployments the plan retires (`retire`, formerly `delete_deployments`)."""
    return tuple(getattr(result, "retire", None) or getattr(result, "delete_deployments", ()))


def replicas_of(result: plan.Plan, version: str) -> int | None:
    """The replicas the plan gives `version`'s Deployment; None when it applies none."""
    found = objects(result, "Deployment").get(serving.deployment_name(NAME, version))
    return None if found is None else found["spec"]["replicas"]


def router_weights(result: plan.Plan) -> dict[str, int]:
    """The weights the plan puts in force, by variant."""
    assert result.traffic is not None, "the plan puts no traffic split in force"
    return {backend.variant: backend.weight for backend in result.traffic.backends}


def router_upstreams(result: plan.Plan) -> dict[str, str]:
    """The Service each variant's traffic goes to."""
    assert result.traffic is not None, "the plan puts no traffic split in force"
    return {backend.variant: backend.service for backend in result.traffic.backends}


def selected_version(result: plan.Plan, service: str) -> str:
    return objects(result, "Service")[service]["spec"]["selector"][serving.VERSION_LABEL]


def env_of(deployment: Object) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {variable["name"]: variable["value"] for variable in container["env"]}


def condition(status: modeldeployment.ModelDeploymentStatus, condition_type: str) -> tuple[str, str]:
    """(status, reason) of one condition."""
    found = next(c for c in status.conditions if c.type == condition_type)
    return found.status.value, found.reason
