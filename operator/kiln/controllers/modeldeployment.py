"""The ModelDeployment controller: observe the deployment, its versions and serving objects, plan, act.

One reconcile at a time per deployment (timers, child events, ModelVersion changes and spec
changes all land here). When the plan wants analysis measurements, they are taken through the
metric providers on worker threads, each bounded by its timeout, and the plan runs again with the
answers at the same instant. Acting is: put the traffic split in force through the provider, then
apply the serving objects (an object unchanged since it was last applied is not written again),
delete the Deployments of versions no longer live (and their Services), write status (refused if
the deployment changed meanwhile), then post Events, so a retried reconcile never posts an Event
twice for one change. A steady deployment is then watched for drift and retrained when a trigger
fires (`kiln.controllers.monitoring`), with the status just written.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kiln.api import modeldeployment, resources
from kiln.controllers import metrics as operator_metrics
from kiln.controllers import monitoring, shared
from kiln.delivery import analysis, rollout, serving
from kiln.delivery import plan as delivery_plan
from kiln.kube import client
from kiln.providers import metrics
from kiln.providers import traffic as traffic_providers

MODEL_DEPLOYMENTS = client.kiln_resource(resources.MODEL_DEPLOYMENT)
MODEL_VERSIONS = client.kiln_resource(resources.MODEL_VERSION)
REAPPLY_SECONDS = 30.0
"""An object applied unchanged is written again after this long, so one deleted by hand returns."""
Object = dict[str, Any]

log = logging.getLogger(__name__)


def _pods_of(deployment: Mapping[str, Any]) -> rollout.Pods:
    """Ready pods of the Deployment's current template: a pod of an older template is not counted."""
    status = deployment.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    if "updatedReplicas" in status:
        ready = min(ready, int(status["updatedReplicas"] or 0))
    if (status.get("observedGeneration") or 0) < (deployment["metadata"].get("generation") or 0):
        ready = min(ready, int(status.get("updatedReplicas") or 0))
    return rollout.Pods(deployment["metadata"]["name"], int((deployment.get("spec") or {}).get("replicas", 1)), ready)


def _measure_one(
    providers: Mapping[str, metrics.MetricProvider], request: analysis.MeasurementRequest
) -> analysis.Answer:
    if request.error is not None:
        return analysis.Answer(error=request.error)
    query = metrics.Query(
        provider=request.provider,
        expression=request.expression,
        address=request.address,
        json_path=request.json_path,
        headers=dict(request.headers),
        timeout=request.timeout,
    )
    try:
        answer = metrics.provider_for(request.provider, providers).query(query)
    except ValueError as error:
        return analysis.Answer(error=str(error))
    except Exception as error:  # a provider's own bug is still only a failed measurement
        log.warning("metric provider %s failed on %r: %r", request.provider, request.expression, error)
        return analysis.Answer(error=f"the {request.provider} provider failed: {type(error).__name__}: {error}")
    return analysis.Answer(value=answer.value, error=answer.error)


@dataclasses.dataclass
class Controller:
    kube: client.Api
    settings: serving.Settings = dataclasses.field(default_factory=serving.Settings)
    default_prometheus: str | None = None
    providers: Mapping[str, metrics.MetricProvider] = dataclasses.field(default_factory=lambda: metrics.PROVIDERS)
    routers: Mapping[modeldeployment.TrafficProviderName, traffic_providers.TrafficRouter] = dataclasses.field(
        default_factory=lambda: traffic_providers.PROVIDERS
    )
    clock: shared.Clock = shared.utcnow
    metrics: operator_metrics.Metrics = dataclasses.field(default_factory=operator_metrics.Metrics)
    _applied: dict[tuple[str, str, str], tuple[str, float]] = dataclasses.field(default_factory=dict)
    _locks: shared.ObjectLocks = dataclasses.field(default_factory=shared.ObjectLocks)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept about a deleted deployment."""
        self._locks.forget(namespace, name)
        self.metrics.drift_seen(namespace, name, None)
        for key in [key for key in self._applied if key[1] == namespace and key[2].startswith(name)]:
            self._applied.pop(key, None)

    def reconcile(self, namespace: str, name: str) -> None:
        """Bring one ModelDeployment's serving objects, traffic and status up to date."""
        with self._locks.hold(namespace, name), self.metrics.reconciling(resources.MODEL_DEPLOYMENT.kind):
            body = self.kube.get(MODEL_DEPLOYMENTS, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            seen = self._observe(body)
            now = self.clock()
            planned = delivery_plan.plan(seen, now, self.settings)
            if planned.measure:
                seen = dataclasses.replace(seen, answers=self._measure(planned.measure))
                planned = delivery_plan.plan(seen, now, self.settings)
            written = self._act(body, planned, seen)
            if written is not None:
                monitor = monitoring.Monitor(self.kube, self._measure, self.metrics, self.default_prometheus)
                monitor.reconcile(written, now)

    def reconcile_model(self, namespace: str, model: str) -> None:
        """A version of `model` changed: every deployment of that model looks again."""
        for body in self.kube.list(MODEL_DEPLOYMENTS, namespace):
            if (body.get("spec") or {}).get("model") == model:
                self.reconcile(namespace, body["metadata"]["name"])

    # -- observe ------------------------------------------------------------------------------

    def _observe(self, body: Mapping[str, Any]) -> rollout.Observed:
        metadata = body["metadata"]
        namespace, name, uid = metadata.get("namespace") or "default", metadata["name"], metadata.get("uid", "")
        selector = f"{serving.DEPLOYMENT_LABEL}={name}"
        deployments = [d for d in self.kube.list(client.DEPLOYMENTS, namespace, selector) if shared.owned_by(d, uid)]
        serving_pods = {
            labels[serving.VERSION_LABEL]: _pods_of(deployment)
            for deployment in deployments
            if (labels := deployment["metadata"].get("labels") or {}).get(serving.COMPONENT_LABEL) == serving.SERVER
            and serving.VERSION_LABEL in labels
        }
        router = next((d for d in deployments if d["metadata"]["name"] == serving.router_name(name)), None)
        autoscalers = self.kube.list(client.HORIZONTAL_POD_AUTOSCALERS, namespace, selector)
        seen = rollout.observed_from(
            body,
            self.kube.list(MODEL_VERSIONS, namespace),
            deployments=serving_pods,
            autoscalers=frozenset(a["metadata"]["name"] for a in autoscalers if shared.owned_by(a, uid)),
            router_ready=_pods_of(router).ready if router else 0,
            default_prometheus=self.default_prometheus,
        )
        if seen.spec.strategy.shadow is None or seen.status.candidate_version is None:
            return seen
        target = traffic_providers.Target(serving.Owner(name, namespace, uid), seen.spec)
        return dataclasses.replace(seen, comparison=self._traffic(seen.spec).comparison(self.kube, target))

    def _measure(self, requests: Sequence[analysis.MeasurementRequest]) -> dict[str, analysis.Answer]:
        """Every requested measurement; one that outlives its timeout is an error, not a hang."""
        worker = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="kiln-analysis")
        futures = {request.key: (request, worker.submit(_measure_one, self.providers, request)) for request in requests}
        answers = {}
        try:
            for key, (request, future) in futures.items():
                try:
                    answers[key] = future.result(timeout=request.timeout + 1)
                except concurrent.futures.TimeoutError:
                    answers[key] = analysis.Answer(error=f"no answer within {request.timeout:g}s")
        finally:
            worker.shutdown(wait=False)
        return answers

    # -- act ----------------------------------------------------------------------------------

    def _traffic(self, spec: modeldeployment.ModelDeploymentSpec) -> traffic_providers.TrafficRouter:
        return traffic_providers.provider_for(spec.traffic.provider, self.routers)

    def _apply(self, obj: Mapping[str, Any]) -> None:
        metadata = obj["metadata"]
        key = (obj["kind"], metadata["namespace"], metadata["name"])
        digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
        previous = self._applied.get(key)
        if previous is not None and previous[0] == digest and time.monotonic() - previous[1] < REAPPLY_SECONDS:
            return
        self.kube.create_or_patch(client.resource_of(obj), obj)
        self._applied[key] = (digest, time.monotonic())

    def _act(
        self, body: Mapping[str, Any], planned: delivery_plan.Plan, seen: rollout.Observed
    ) -> Mapping[str, Any] | None:
        """Apply the plan; the deployment as written, or None when the traffic provider refused the split."""
        namespace = body["metadata"].get("namespace") or "default"
        if planned.traffic is not None:
            target = traffic_providers.Target(serving.Owner(seen.name, seen.namespace, seen.uid), seen.spec)
            try:
                self._traffic(seen.spec).apply(self.kube, target, planned.traffic)
            except traffic_providers.TrafficError as error:  # a person must fix it: nothing else is applied
                log.warning("ModelDeployment %s/%s: %s", namespace, seen.name, error.message)
                return None
        for obj in planned.apply:
            self._apply(obj)
        for name in planned.unscale:  # before a retired Deployment goes, so nothing scales it meanwhile
            self.kube.delete(client.HORIZONTAL_POD_AUTOSCALERS, namespace, name)
            self._applied.pop((client.HORIZONTAL_POD_AUTOSCALERS.kind, namespace, name), None)
        for name in planned.retire:
            for resource in (client.DEPLOYMENTS, client.SERVICES):
                self.kube.delete(resource, namespace, name)
                self._applied.pop((resource.kind, namespace, name), None)
        wire = planned.status.to_wire()
        if body.get("status") != wire:
            old = body.get("status")
            body = self.kube.patch_status(MODEL_DEPLOYMENTS, body, wire)
            self.metrics.deployment_status_written(old, wire)
        shared.post_events(self.kube, body, planned.events, log)
        return body
