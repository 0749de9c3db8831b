"""The objects that serve a ModelDeployment, derived from its status: nothing here decides progress.

- one Deployment per live version (`<md>-v<version>`), running kiln-server with that ModelVersion
  in `KILN_MODEL_VERSIONS`, its model store claim mounted read-only, annotated for Prometheus,
  ready on `/v2/health/ready`, under the restricted Pod Security profile; kiln-server copies the
  artifact (from the claim, or downloads it from `s3://`) into an emptyDir cache, where it is
  verified and loaded from, and which outlives a restart of the container;
- a Service per live version (named as its Deployment), which the router sends to: a proxy's
  pooled connections stay with the pods they were opened to, so a version's address must never
  change whose pods it reaches;
- a Service per variant for people and tools: `<md>-stable`, and `<md>-canary` (the candidate's
  pods, or stable's between rollouts);
- the router: a ConfigMap with its weights, a Deployment of kiln-router that watches it, the
  ServiceAccount and Role that let it read that one ConfigMap, and the Service named after the
  ModelDeployment on port 80, the one address clients use;
- with traffic provider `replicas`, no router: the Service named after the ModelDeployment selects
  every serving pod, and the replica counts (`replica_split`) are the split; with `gatewayAPI`, no
  router either: the HTTPRoute (`kiln.providers.traffic.gateway_api`) sends to the version Services.

Every object carries an ownerReference to the ModelDeployment and the `app.kubernetes.io/managed-by`
and `kiln.dev/modeldeployment` labels.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from kiln.api import base, common, modeldeployment
from kiln.delivery import versions

Object = dict[str, Any]

DEPLOYMENT_LABEL = f"{base.GROUP}/modeldeployment"
VERSION_LABEL = f"{base.GROUP}/model-version"
COMPONENT_LABEL = f"{base.GROUP}/component"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kiln"}
SERVER, ROUTER = "server", "router"
ROUTER_CONFIG_KEY = "router.json"
ROUTER_PORT = 8080
SERVICE_PORT = 80
PVC_DIR = "/var/run/kiln/pvc"
ARTIFACT_CACHE_DIR = "/var/run/kiln/artifacts"
GPU_TOLERATION: Object = {"key": common.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
STABLE, CANDIDATE, PREVIEW = "stable", "candidate", "preview"


@dataclasses.dataclass(frozen=True)
class Settings:
    image: str = "ghcr.io/kiln-dev/kiln:0.1.0"
    """The image whose `kiln-server` and `kiln-router` serve models."""


@dataclasses.dataclass(frozen=True)
class Owner:
    """The ModelDeployment the objects belong to."""

    name: str
    namespace: str
    uid: str


@dataclasses.dataclass(frozen=True)
class Live:
    """A version that runs, and with how many pods."""

    version: versions.Candidate
    replicas: int


def version_label(version: str) -> str:
    """A version as a label value: build metadata's `+` is not allowed there."""
    return version.replace("+", "_")


def deployment_name(owner: str, version: str) -> str:
    return f"{owner}-v{re.sub(r'[^a-z0-9-]', '-', version.lower())}"


def stable_service(owner: str) -> str:
    return f"{owner}-stable"


def canary_service(owner: str) -> str:
    return f"{owner}-canary"


def preview_service(owner: str) -> str:
    return f"{owner}-preview"


def router_name(owner: str) -> str:
    return f"{owner}-router"


def url(owner: Owner) -> str:
    return f"http://{owner.name}.{owner.namespace}.svc"


def replicas_for_weight(replicas: int, weight: int) -> int:
    """Candidate pods for a traffic share: the same share of spec.replicas, at least one."""
    if replicas == 0 or weight == 0:
        return min(replicas, 1) if weight else 0
    return max(1, math.ceil(replicas * weight / 100))


def replica_split(replicas: int, weight: int) -> tuple[int, int]:
    """(stable, candidate) pods for a weight when the replica counts are the split (provider
    replicas): together spec.replicas, the candidate's share rounded up as for every provider
    (`replicas_for_weight`, so a setWeight waits for exactly the pods it gets), at least one pod on
    each side that has any weight."""
    if replicas == 0:
        return 0, 0
    candidate = min(replicas, replicas_for_weight(replicas, weight))
    stable = replicas - candidate
    if weight < 100:
        stable = max(1, stable)
    return stable, candidate


def achieved_weight(stable: int, candidate: int) -> int:
    """The candidate's share of traffic, in percent, when requests are spread evenly over the pods."""
    total = stable + candidate
    return math.floor(100 * candidate / total + 0.5) if total else 0


def _labels(owner: Owner, component: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**MANAGED_BY, DEPLOYMENT_LABEL: owner.name, COMPONENT_LABEL: component, **(extra or {})}


def _metadata(owner: Owner, name: str, labels: Mapping[str, str]) -> Object:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(labels),
        "ownerReferences": [
            {
                "apiVersion": base.API_VERSION,
                "kind": "ModelDeployment",
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def owned_metadata(owner: Owner, name: str, labels: Mapping[str, str] | None = None) -> Object:
    """Metadata of an object the ModelDeployment owns: its ownerReference, `app.kubernetes.io/managed-by`
    and `kiln.dev/modeldeployment`."""
    return _metadata(owner, name, {**MANAGED_BY, DEPLOYMENT_LABEL: owner.name, **(labels or {})})


def resources(compute: common.ComputeResources) -> Object:
    requests, limits = compute.requests_and_limits()
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def _claim_of(uri: str) -> str | None:
    return uri.removeprefix("pvc://").split("/", 1)[0] if uri.startswith("pvc://") else None


def _served_version(candidate: versions.Candidate) -> Object:
    """The ModelVersion as kiln-server reads it: what it is, without the cluster's bookkeeping."""
    body = candidate.body
    metadata = body.get("metadata", {})
    return {
        "apiVersion": body.get("apiVersion", base.API_VERSION),
        "kind": "ModelVersion",
        "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")},
        "spec": body.get("spec", {}),
    }


def _server_env(spec: modeldeployment.ModelDeploymentSpec, live: Live) -> list[Object]:
    env: list[Object] = [
        {"name": "KILN_MODEL_VERSIONS", "value": json.dumps([_served_version(live.version)], sort_keys=True)},
        {"name": "KILN_SERVER_PORT", "value": str(spec.server.port)},
        {"name": "KILN_ARTIFACT_CACHE", "value": ARTIFACT_CACHE_DIR},
        {"name": "KILN_MAX_BATCH_SIZE", "value": str(spec.server.max_batch_size)},
    ]
    claim = _claim_of(live.version.model.spec.artifact.uri)
    if claim is not None:
        # The store finds claim C at $KILN_PVC_ROOT/C. The root is named through the claim's own
        # mount so that tools which map mount paths (the dev cluster's kubelet) map it as well.
        env += [
            {"name": "KILN_PVC_LAYOUT", "value": "mounted"},
            {"name": "KILN_PVC_ROOT", "value": f"{PVC_DIR}/{claim}/.."},
        ]
    if live.version.fault_injection:
        env.append({"name": "KILN_FAULT_INJECTION", "value": live.version.fault_injection})
    # The user's variables come last so that they may override Kiln's.
    env.extend(variable.to_wire() for variable in spec.server.env)
    return env


def _server_pod(owner: Owner, spec: modeldeployment.ModelDeploymentSpec, live: Live, settings: Settings) -> Object:
    port = spec.server.port
    volumes: list[Object] = [{"name": "tmp", "emptyDir": {}}, {"name": "artifacts", "emptyDir": {}}]
    mounts: list[Object] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "artifacts", "mountPath": ARTIFACT_CACHE_DIR},
    ]
    claim = _claim_of(live.version.model.spec.artifact.uri)
    if claim is not None:
        volumes.append({"name": "model-store", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "model-store", "mountPath": f"{PVC_DIR}/{claim}", "readOnly": True})
    args = ["--allow-unsafe-formats"] if spec.server.allow_pickle else []
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 2, "failureThreshold": 3}
    container: Object = {
        "name": SERVER,
        "image": spec.server.image or settings.image,
        "command": ["kiln-server"],
        "args": args,
        "env": _server_env(spec, live),
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10},
        "resources": resources(spec.resources),
        "securityContext": common.restricted_container_security(),
        "volumeMounts": mounts,
    }
    pod_spec: Object = {
        "automountServiceAccountToken": False,
        "securityContext": common.restricted_pod_security(),
        "containers": [container],
        "volumes": volumes,
        # kiln-server drains for 2 s after SIGTERM, then waits for requests in flight.
        "terminationGracePeriodSeconds": 30,
    }
    if spec.resources.gpus is not None:
        pod_spec["tolerations"] = [GPU_TOLERATION]
        if spec.resources.gpus.product:
            pod_spec["nodeSelector"] = {"nvidia.com/gpu.product": spec.resources.gpus.product}
    return {
        "metadata": {
            "labels": _labels(owner, SERVER, {VERSION_LABEL: version_label(live.version.version)}),
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(port)},
        },
        "spec": pod_spec,
    }


def server_deployment(
    owner: Owner, spec: modeldeployment.ModelDeploymentSpec, live: Live, settings: Settings
) -> Object:
    labels = _labels(owner, SERVER, {VERSION_LABEL: version_label(live.version.version)})
    selector = {DEPLOYMENT_LABEL: owner.name, VERSION_LABEL: version_label(live.version.version)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, deployment_name(owner.name, live.version.version), labels),
        "spec": {
            "replicas": live.replicas,
            "selector": {"matchLabels": selector},
            # A new pod is ready before an old one goes, so a version never stops answering.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": _server_pod(owner, spec, live, settings),
        },
    }


REQUESTS_PER_SECOND_METRIC = "kiln_server_requests_per_second"
"""The per-pod metric a target of requests per second scales on; a custom metrics adapter (such as
prometheus-adapter) serves it from kiln-server's `kiln_server_requests_total`."""


def autoscaler(owner: Owner, autoscaling: modeldeployment.Autoscaling, version: str, floor: int) -> Object:
    """The HorizontalPodAutoscaler of one version's Deployment: never below the pods the rollout gives
    that version now, never above maxReplicas (or that floor, when a rollout asks for more)."""
    name = deployment_name(owner.name, version)
    metrics: list[Object] = []
    if autoscaling.target_cpu_utilization_percentage is not None:
        utilization = {"type": "Utilization", "averageUtilization": autoscaling.target_cpu_utilization_percentage}
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": utilization}})
    if autoscaling.target_requests_per_second is not None:
        average = {"type": "AverageValue", "averageValue": f"{autoscaling.target_requests_per_second:g}"}
        metrics.append({"type": "Pods", "pods": {"metric": {"name": REQUESTS_PER_SECOND_METRIC}, "target": average}})
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, name, _labels(owner, SERVER, {VERSION_LABEL: version_label(version)})),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": floor,
            "maxReplicas": max(autoscaling.max_replicas, floor),
            "metrics": metrics,
        },
    }


def _service(owner: Owner, name: str, selector: Mapping[str, str], target_port: int, component: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, name, _labels(owner, component)),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": target_port, "protocol": "TCP"}],
        },
    }


def variant_service(owner: Owner, spec: modeldeployment.ModelDeploymentSpec, name: str, version: str) -> Object:
    selector = {DEPLOYMENT_LABEL: owner.name, VERSION_LABEL: version_label(version)}
    return _service(owner, name, selector, spec.server.port, SERVER)


def version_service(owner: Owner, spec: modeldeployment.ModelDeploymentSpec, version: str) -> Object:
    """The Service of one version's pods, named as its Deployment."""
    return variant_service(owner, spec, deployment_name(owner.name, version), version)


def router_config(owner: Owner, document: Mapping[str, Any]) -> Object:
    """The ConfigMap kiln-router watches, holding its configuration document."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, router_name(owner.name), _labels(owner, ROUTER)),
        "data": {ROUTER_CONFIG_KEY: json.dumps(document, sort_keys=True)},
    }


def front_service(owner: Owner, spec: modeldeployment.ModelDeploymentSpec) -> Object:
    """The Service named after the ModelDeployment on port 80, over every serving pod of it: with
    provider replicas, the pods' numbers per version are the traffic split."""
    selector = {DEPLOYMENT_LABEL: owner.name, COMPONENT_LABEL: SERVER}
    return _service(owner, owner.name, selector, spec.server.port, SERVER)


def router_objects(owner: Owner, spec: modeldeployment.ModelDeploymentSpec, settings: Settings) -> list[Object]:
    """The router's ServiceAccount, Role, RoleBinding, Deployment and the client-facing Service."""
    name = router_name(owner.name)
    labels = _labels(owner, ROUTER)
    replicas = spec.traffic.router.replicas if spec.traffic.router else 1
    selector = {DEPLOYMENT_LABEL: owner.name, COMPONENT_LABEL: ROUTER}
    container: Object = {
        "name": ROUTER,
        "image": settings.image,
        "command": ["kiln-router"],
        "args": ["--port", str(ROUTER_PORT), "--configmap", f"{owner.namespace}/{name}"],
        "ports": [{"name": "http", "containerPort": ROUTER_PORT}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": common.restricted_container_security(),
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(ROUTER_PORT)},
                },
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": common.restricted_pod_security(),
                    "containers": [container],
                },
            },
        },
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(owner, name, labels),
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name], "verbs": ["get", "list", "watch"]}
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(owner, name, labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(owner, name, labels)}
    front = _service(owner, owner.name, selector, ROUTER_PORT, ROUTER)
    return [account, role, binding, deployment, front]
