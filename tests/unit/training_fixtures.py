"""Builders shared by the TrainingJob unit tests: job bodies in wire form, nodes and pods as the API
server returns them, and the fixed clock the plans are run at."""

from __future__ import annotations

import datetime
from typing import Any

from kiln.training import admission, plan, workers

Object = dict[str, Any]

T0 = datetime.datetime(2024, 6, 11, 10, 0, tzinfo=datetime.UTC)
NAMESPACE = "ml"
UID = "9f1c2e7a-5b1d-4c3e-8a7f-0d2b6e4c1a90"
GPU = workers.GPU_RESOURCE
A100 = "NVIDIA-A100-SXM4-80GB"
H100 = "NVIDIA-H100-80GB-HBM3"
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
GPU_TAINT = {"key": GPU, "value": "present", "effect": "NoSchedule"}
DIGEST = "3b" * 32


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def job_body(
    name: str = "resnet",
    *,
    status: Object | None = None,
    generation: int = 3,
    created: datetime.datetime = T0,
    annotations: dict[str, str] | None = None,
    namespace: str = NAMESPACE,
    uid: str = UID,
    **spec: Any,
) -> Object:
    """A TrainingJob as read from the API server; `spec` is camelCase and defaults to a container job."""
    if "container" not in spec and "sklearn" not in spec:
        spec["container"] = {"image": "registry.example/resnet-train:1.4", "command": ["torchrun", "train.py"]}
    metadata: Object = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "generation": generation,
        "creationTimestamp": stamp(created),
    }
    if annotations:
        metadata["annotations"] = annotations
    body: Object = {"apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingJob", "metadata": metadata, "spec": spec}
    if status is not None:
        body["status"] = status
    return body


def sklearn_spec(*, dataset: Object | None = None, **extra: Any) -> Object:
    return {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "params": {"n_estimators": 200},
        "dataset": dataset or {"builtin": "iris"},
        **extra,
    }


def job(**kwargs: Any) -> workers.Job:
    return workers.Job.from_body(job_body(**kwargs))


def node(
    name: str,
    *,
    cpu: str = "16",
    memory: str = "64Gi",
    gpus: int = 0,
    product: str | None = None,
    pods: str = "110",
    taints: list[Object] | None = None,
    unschedulable: bool = False,
    labels: dict[str, str] | None = None,
) -> Object:
    """A node as the kubelet and GPU feature discovery report it."""
    node_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})}
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "100Gi"}
    if gpus:
        node_labels[workers.GPU_PRESENT_LABEL] = "true"
        node_labels["nvidia.com/gpu.count"] = str(gpus)
        if product:
            node_labels[workers.GPU_PRODUCT_LABEL] = product
        allocatable[GPU] = str(gpus)
    spec: Object = {"podCIDR": "10.244.1.0/24"}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels},
        "spec": spec,
        "status": {"allocatable": allocatable, "capacity": dict(allocatable)},
    }


def pod(
    name: str,
    node_name: str | None,
    *,
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    init: list[dict[str, str]] | None = None,
    phase: str = "Running",
    namespace: str = "default",
) -> Object:
    """A pod (bound when `node_name` is set) with one container."""
    resources: Object = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    spec: Object = {"containers": [{"name": "main", "image": "registry.example/app:1", "resources": resources}]}
    if init:
        spec["initContainers"] = [
            {"name": f"init-{index}", "image": "busybox:1.36", "resources": {"requests": asked}}
            for index, asked in enumerate(init)
        ]
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
        "status": {"phase": phase},
    }


def gang(
    name: str,
    *,
    size: int = 1,
    gpus: int | None = None,
    cpu: str | None = None,
    memory: str | None = None,
    product: str | None = None,
    tolerations: list[Object] | None = None,
    node_selector: dict[str, str] | None = None,
    cpu_nodes: bool = False,
    priority: int = 0,
    created: datetime.datetime = T0,
) -> admission.Gang:
    """A job's gang, with its placement built the way the controller builds it."""
    resources: Object = {}
    if gpus is not None:
        resources["gpus"] = {"count": gpus, **({"product": product} if product else {})}
    if cpu is not None:
        resources["cpu"] = cpu
    if memory is not None:
        resources["memory"] = memory
    spec: Object = {"workers": size, "resources": resources}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    one = job(name=name, created=created, **spec)
    return admission.Gang(
        namespace=one.namespace,
        name=name,
        size=size,
        where=workers.placement(one.spec, cpu_nodes),
        priority=priority,
        queued_at=stamp(created),
    )


def worker(
    rank: int,
    phase: str = "Running",
    *,
    attempt: int = 0,
    job_name: str = "resnet",
    deleting: bool = False,
    created: datetime.datetime | None = T0,
    exit_code: int | None = None,
    reason: str = "",
    message: str = "",
) -> plan.Worker:
    return plan.Worker(
        name=workers.worker_name(job_name, rank),
        rank=rank,
        attempt=attempt,
        phase=phase,
        deleting=deleting,
        created=created,
        exit_code=exit_code,
        reason=reason,
        message=message,
    )
