"""Server-side defaults of the built-in kinds that clients and controllers rely on."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

Object = dict[str, Any]


def _pod_spec(spec: Object) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
    spec.setdefault("securityContext", {})
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        image = str(container.get("image", ""))
        container.setdefault(
            "imagePullPolicy", "Always" if image.endswith(":latest") or ":" not in image else "IfNotPresent"
        )
        container.setdefault("resources", {})
        for port in container.get("ports", []):
            port.setdefault("protocol", "TCP")


def _qos_class(spec: Object) -> str:
    """Guaranteed when every container limits cpu and memory at its requests, BestEffort when none
    asks for either, Burstable otherwise."""
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    resources = [container.get("resources") or {} for container in containers]
    compute = ("cpu", "memory")
    if not any(r.get(kind, {}).get(name) for r in resources for kind in ("requests", "limits") for name in compute):
        return "BestEffort"
    guaranteed = all(
        r.get("limits", {}).get(name) and r.get("requests", {}).get(name) == r["limits"][name]
        for r in resources
        for name in compute
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _pod(obj: Object) -> None:
    spec = obj.setdefault("spec", {})
    _pod_spec(spec)
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        for name, limit in (resources.get("limits") or {}).items():  # a limit alone is also the request
            resources.setdefault("requests", {}).setdefault(name, limit)
    obj.setdefault("status", {}).setdefault("phase", "Pending")
    obj["status"].setdefault("qosClass", _qos_class(spec))


def _template_spec(obj: Object) -> None:
    template = obj.get("spec", {}).get("template")
    if isinstance(template, dict):
        _pod_spec(template.setdefault("spec", {}))


def _deployment(obj: Object) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy.setdefault("type", "RollingUpdate")
        strategy.setdefault("rollingUpdate", {}).setdefault("maxSurge", "25%")
        strategy["rollingUpdate"].setdefault("maxUnavailable", "25%")
    _template_spec(obj)


def _replica_set(obj: Object) -> None:
    obj.setdefault("spec", {}).setdefault("replicas", 1)
    _template_spec(obj)


def _job(obj: Object) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    template = spec.get("template")
    if isinstance(template, dict):
        _pod_spec(template.setdefault("spec", {}))
        template["spec"]["restartPolicy"] = template["spec"].get("restartPolicy") or "Never"


def _cron_job(obj: Object) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job = spec.setdefault("jobTemplate", {})
    if isinstance(job, dict):
        _job(job)


def _service(obj: Object) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports", []):
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def _namespace(obj: Object) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")
    obj.setdefault("metadata", {}).setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]


def _persistent_volume_claim(obj: Object) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def _secret(obj: Object) -> None:
    if not obj.get("type"):
        obj["type"] = "Opaque"
    # stringData is write-only: folded into data (its keys win), never stored or returned.
    written = obj.pop("stringData", None)
    if isinstance(written, dict) and written:
        data = obj.get("data") or {}
        data.update({key: base64.b64encode(str(value).encode()).decode() for key, value in written.items()})
        obj["data"] = data


_BY_KIND: dict[tuple[str, str], Callable[[Object], None]] = {
    ("v1", "Secret"): _secret,
    ("v1", "Pod"): _pod,
    ("v1", "Service"): _service,
    ("v1", "Namespace"): _namespace,
    ("v1", "PersistentVolumeClaim"): _persistent_volume_claim,
    ("apps/v1", "Deployment"): _deployment,
    ("apps/v1", "ReplicaSet"): _replica_set,
    ("batch/v1", "Job"): _job,
    ("batch/v1", "CronJob"): _cron_job,
}


def apply(obj: Object) -> None:
    """Fill in a built-in object's defaults, in place."""
    defaulter = _BY_KIND.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if defaulter:
        defaulter(obj)
