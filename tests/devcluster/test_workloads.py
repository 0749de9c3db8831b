"""Workloads on the dev cluster: Deployments, Jobs and the scheduler, driven through real clients.

Pods run a small Python HTTP server (or a short Python job) as real processes,
so each story checks what a user sees in the API (status counts, conditions,
revisions, scheduling messages) and what really happens on the machine
(which processes answer, which are gone).
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml
from conftest import Kube, StartKube, container_pids, process_alive, server_script
from polling import eventually

NS = "default"
WAIT = 30.0
GPU = "nvidia.com/gpu"
H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
JOB_SCRIPT = """\
import os, sys, time
with open(sys.argv[1], "a") as log:
    log.write(f"start {os.environ['POD_NAME']} {time.time()}\\n")
time.sleep(0.5)
with open(sys.argv[1], "a") as log:
    log.write(f"end {os.environ['POD_NAME']} {time.time()}\\n")
"""


# Manifests


def pod_name_env() -> dict[str, Any]:
    return {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def server_container(script: pathlib.Path, greeting: str) -> dict[str, Any]:
    return {
        "name": "server",
        "image": "python:3.12-slim",
        "command": ["python", str(script)],
        "env": [pod_name_env(), {"name": "GREETING", "value": greeting}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
    }


def deployment(
    name: str, script: pathlib.Path, replicas: int, greeting: str = "v1", strategy: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy or {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": [server_container(script, greeting)]},
            },
        },
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]},
    }


def job(name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {**spec, "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
    }


def gpu_pod(name: str, gpus: int, **spec: Any) -> dict[str, Any]:
    """A simulated pod (runs at once, no process) asking for GPUs."""
    container = {"name": "main", "image": "nginx", "resources": {"limits": {GPU: str(gpus)}}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {**spec, "containers": [container]}}


def gpu_node(name: str, gpus: int, product: str = H100) -> dict[str, Any]:
    """A node as a kubelet and GPU feature discovery register it, status included."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", GPU: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.count": str(gpus),
            },
        },
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}],
        },
    }


# Reading state


def apply(kube: Kube, tmp_path: pathlib.Path, *manifests: dict[str, Any]) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    kube.kubectl("apply", "-f", str(path))


def pods_of(kube: Kube, selector: str) -> list[Any]:
    return list(kube.core.list_namespaced_pod(NS, label_selector=selector).items)


def is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def condition(conditions: list[Any] | None, kind: str) -> Any:
    return next((c for c in conditions or [] if c.type == kind), None)


def ready_pods(kube: Kube, selector: str, count: int) -> list[Any]:
    """Wait for exactly `count` live pods, all Ready, and return them."""

    def check() -> list[Any]:
        pods = [p for p in pods_of(kube, selector) if not p.metadata.deletion_timestamp]
        return pods if len(pods) == count and all(map(is_ready, pods)) else []

    return eventually(check, f"{count} ready pods of {selector}", WAIT)


def rollout(kube: Kube, name: str) -> None:
    result = kube.kubectl("rollout", "status", f"deployment/{name}", "--timeout=30s")
    assert "successfully rolled out" in result.stdout


def answers(kube: Kube, name: str, requests: int) -> list[str]:
    """What `requests` fresh connections to the Service's ClusterIP get back."""
    address = kube.core.read_namespaced_service(name, NS).spec.cluster_ip
    return [httpx.get(f"http://{address}:80/", timeout=5).text for _ in range(requests)]


def unschedulable_message(kube: Kube, name: str) -> str:
    def check() -> str:
        pod = kube.core.read_namespaced_pod(name, NS)
        scheduled = condition(pod.status.conditions, "PodScheduled")
        if scheduled is None or scheduled.status != "False" or scheduled.reason != "Unschedulable":
            return ""
        assert not pod.spec.node_name
        assert pod.status.phase == "Pending"
        return str(scheduled.message)

    return eventually(check, f"pod {name} to be found unschedulable", WAIT)


def node_of(kube: Kube, name: str) -> str:
    def check() -> str:
        pod = kube.core.read_namespaced_pod(name, NS)
        return str(pod.spec.node_name) if pod.spec.node_name and pod.status.phase == "Running" else ""

    return eventually(check, f"pod {name} to be bound and running", WAIT)


def job_condition(kube: Kube, name: str, kind: str) -> Any:
    def check() -> Any:
        found = condition(kube.batch.read_namespaced_job_status(name, NS).status.conditions, kind)
        return found if found is not None and found.status == "True" else None

    return eventually(check, f"job {name} to be {kind}", WAIT)


class Sampler:
    """Samples something in a thread until stopped, so a test can check what held all along."""

    def __init__(self, sample: Callable[[], Any]) -> None:
        self.sample = sample
        self.samples: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def script(tmp_path: pathlib.Path) -> pathlib.Path:
    return server_script(tmp_path)


@pytest.fixture
def web(kube: Kube, tmp_path: pathlib.Path, script: pathlib.Path) -> Kube:
    """A Deployment `web` of three Python servers answering "v1", behind a Service `web`, rolled out."""
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    apply(kube, tmp_path, deployment("web", script, 3, strategy=strategy), service("web"))
    rollout(kube, "web")
    return kube


# Deployments


def test_a_deployment_of_servers_becomes_available_behind_its_service(web: Kube) -> None:
    deployed = web.apps.read_namespaced_deployment("web", NS)
    status = deployed.status
    assert (status.replicas, status.ready_replicas, status.available_replicas, status.updated_replicas) == (3, 3, 3, 3)
    assert status.observed_generation == deployed.metadata.generation
    available = condition(status.conditions, "Available")
    assert (available.status, available.reason) == ("True", "MinimumReplicasAvailable")
    progressing = condition(status.conditions, "Progressing")
    assert (progressing.status, progressing.reason) == ("True", "NewReplicaSetAvailable")

    pods = ready_pods(web, "app=web", 3)
    names = {pod.metadata.name for pod in pods}
    assert len({pod.status.pod_ip for pod in pods}) == 3
    replies = answers(web, "web", 9)
    assert {reply.split()[1] for reply in replies} == {"v1"}
    assert {reply.split()[0] for reply in replies} <= names
    assert len({reply.split()[0] for reply in replies}) > 1, replies


def test_a_rolling_update_replaces_every_pod_and_keeps_the_minimum_available(web: Kube) -> None:
    old_pods = {pod.metadata.name for pod in ready_pods(web, "app=web", 3)}
    (old_set,) = web.apps.list_namespaced_replica_set(NS, label_selector="app=web").items

    def sample() -> tuple[int, int, int]:
        live = [p for p in pods_of(web, "app=web") if not p.metadata.deletion_timestamp]
        available = web.apps.read_namespaced_deployment_status("web", NS).status.available_replicas or 0
        return len([p for p in live if is_ready(p)]), len(live), available

    with Sampler(sample) as sampler:
        web.kubectl("set", "env", "deployment/web", "GREETING=v2")
        rollout(web, "web")
    ready_counts, live_counts, available_counts = zip(*sampler.samples, strict=True)
    assert min(ready_counts) >= 2, ready_counts  # replicas - maxUnavailable
    assert min(available_counts) >= 2, available_counts
    assert max(live_counts) == 4, live_counts  # replicas + maxSurge, and the sampler saw the surge

    new_pods = {pod.metadata.name for pod in ready_pods(web, "app=web", 3)}
    assert not new_pods & old_pods
    sets = {rs.metadata.name: rs for rs in web.apps.list_namespaced_replica_set(NS, label_selector="app=web").items}
    (new_set,) = (rs for name, rs in sets.items() if name != old_set.metadata.name)
    assert new_set.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert (new_set.spec.replicas, new_set.status.ready_replicas) == (3, 3)
    assert sets[old_set.metadata.name].spec.replicas == 0
    eventually(
        lambda: not web.apps.read_namespaced_replica_set_status(old_set.metadata.name, NS).status.replicas,
        "the old ReplicaSet to report no pods",
        WAIT,
    )
    assert {reply.split()[1] for reply in answers(web, "web", 6)} == {"v2"}


def test_recreate_never_runs_old_and_new_pods_together(
    kube: Kube, tmp_path: pathlib.Path, script: pathlib.Path
) -> None:
    apply(kube, tmp_path, deployment("batch", script, 2, strategy={"type": "Recreate"}))
    rollout(kube, "batch")
    old_pids = [pid for pod in ready_pods(kube, "app=batch", 2) for pid in container_pids(pod)]
    assert len(old_pids) == 2

    def sample() -> tuple[set[str], list[int]]:
        pods = pods_of(kube, "app=batch")
        hashes = {pod.metadata.labels["pod-template-hash"] for pod in pods}
        started = [pid for pod in pods for pid in container_pids(pod)]
        return hashes, [pid for pid in old_pids if process_alive(pid)] if set(started) - set(old_pids) else []

    with Sampler(sample) as sampler:
        kube.kubectl("set", "env", "deployment/batch", "GREETING=v2")
        rollout(kube, "batch")
    mixed = [hashes for hashes, _ in sampler.samples if len(hashes) > 1]
    assert not mixed, "old and new pods existed at the same time"
    overlapping = [alive for _, alive in sampler.samples if alive]
    assert not overlapping, "a new pod's process started while an old one still ran"
    assert not any(map(process_alive, old_pids))


def test_deleting_a_deployment_removes_its_replica_sets_pods_and_processes(web: Kube) -> None:
    pids = [pid for pod in ready_pods(web, "app=web", 3) for pid in container_pids(pod)]
    assert len(pids) == 3
    assert all(map(process_alive, pids))

    web.kubectl("delete", "deployment", "web")

    eventually(lambda: not web.apps.list_namespaced_replica_set(NS).items, "the ReplicaSets to go", WAIT)
    eventually(lambda: not pods_of(web, "app=web"), "the pods to go", WAIT)
    assert not any(map(process_alive, pids))


def test_kubectl_scale_moves_a_deployment_up_and_down(web: Kube) -> None:
    web.kubectl("scale", "deployment/web", "--replicas=5")
    ready_pods(web, "app=web", 5)
    rollout(web, "web")
    scale = web.apps.read_namespaced_deployment_scale("web", NS)
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (5, 5, "app=web")

    before = {pod.metadata.name: container_pids(pod) for pod in pods_of(web, "app=web")}
    web.kubectl("scale", "deployment/web", "--replicas=2")
    kept = {pod.metadata.name for pod in ready_pods(web, "app=web", 2)}
    rollout(web, "web")
    status = web.apps.read_namespaced_deployment_status("web", NS).status
    assert (status.replicas, status.ready_replicas, status.available_replicas) == (2, 2, 2)
    removed = [pid for name, pids in before.items() if name not in kept for pid in pids]
    assert len(removed) == 3
    eventually(lambda: not any(map(process_alive, removed)), "the removed pods' processes to end", WAIT)


def test_kubectl_scale_with_a_precondition_goes_through_the_scale_subresource(web: Kube) -> None:
    """`--current-replicas` makes kubectl read and update autoscaling/v1 Scale, found through discovery."""
    refused = web.kubectl("scale", "deployment/web", "--current-replicas=5", "--replicas=1", check=False)
    assert refused.returncode != 0
    assert "Expected replicas to be 5, was 3" in refused.stderr
    assert web.apps.read_namespaced_deployment("web", NS).spec.replicas == 3

    web.kubectl("scale", "deployment/web", "--current-replicas=3", "--replicas=1")
    ready_pods(web, "app=web", 1)
    assert web.apps.read_namespaced_deployment_scale("web", NS).status.replicas == 1


# Jobs


def test_a_job_runs_its_completions_two_at_a_time(kube: Kube, tmp_path: pathlib.Path) -> None:
    log = tmp_path / "job.log"
    container = {"name": "work", "image": "python:3.12-slim", "command": ["python", "-c", JOB_SCRIPT, str(log)],
                 "env": [pod_name_env()]}  # fmt: skip
    kube.batch.create_namespaced_job(NS, job("work", container, completions=4, parallelism=2, backoffLimit=0))

    complete = job_condition(kube, "work", "Complete")
    assert complete.reason == "CompletionsReached"
    status = kube.batch.read_namespaced_job_status("work", NS).status
    assert (status.succeeded, status.failed, status.active) == (4, None, None)
    assert status.completion_time is not None
    pods = pods_of(kube, "job-name=work")
    assert [pod.status.phase for pod in pods] == ["Succeeded"] * 4

    events = sorted(
        (float(stamp), 1 if kind == "start" else -1)
        for kind, _, stamp in (line.split() for line in log.read_text().splitlines())
    )
    assert len(events) == 8
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert most == 2


def test_a_job_whose_pod_always_fails_stops_at_its_backoff_limit(kube: Kube) -> None:
    container = {"name": "fail", "image": "python:3.12-slim", "command": ["python", "-c", "raise SystemExit(1)"]}
    kube.batch.create_namespaced_job(NS, job("doomed", container, backoffLimit=1))

    failed = job_condition(kube, "doomed", "Failed")
    assert (failed.reason, failed.message) == ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    status = kube.batch.read_namespaced_job_status("doomed", NS).status
    assert (status.failed, status.succeeded, status.active) == (2, None, None)
    assert condition(status.conditions, "Complete") is None
    pods = pods_of(kube, "job-name=doomed")
    assert [pod.status.phase for pod in pods] == ["Failed", "Failed"]
    assert {pod.status.container_statuses[0].state.terminated.exit_code for pod in pods} == {1}


def test_a_job_of_a_simulated_image_completes(start_kube: StartKube) -> None:
    kube = start_kube({"simulatedJobDuration": 0.5})
    container = {"name": "sim", "image": "busybox", "command": ["sh", "-c", "echo done"]}
    kube.batch.create_namespaced_job(NS, job("sim", container, completions=2, parallelism=2))

    job_condition(kube, "sim", "Complete")
    assert kube.batch.read_namespaced_job_status("sim", NS).status.succeeded == 2
    pods = pods_of(kube, "job-name=sim")
    assert [pod.status.phase for pod in pods] == ["Succeeded", "Succeeded"]
    for pod in pods:
        (container_status,) = pod.status.container_statuses
        assert container_status.image_id == "kiln-simulated://busybox"
        assert container_status.container_id is None
        assert container_status.state.terminated.exit_code == 0


def test_active_deadline_fails_a_job_that_runs_too_long(kube: Kube) -> None:
    sleep = ["python", "-c", "import time; time.sleep(60)"]
    container = {"name": "slow", "image": "python:3.12-slim", "command": sleep}
    # Long enough for the process to be seen running on a busy machine, short next to its 60 s sleep.
    kube.batch.create_namespaced_job(NS, job("slow", container, activeDeadlineSeconds=8))
    (pid,) = eventually(
        lambda: [pid for pod in pods_of(kube, "job-name=slow") for pid in container_pids(pod)], "the job's process"
    )

    failed = job_condition(kube, "slow", "Failed")
    assert (failed.reason, failed.message) == ("DeadlineExceeded", "Job was active longer than specified deadline")
    eventually(lambda: not process_alive(pid), "the job's process to be killed", WAIT)
    eventually(lambda: not kube.batch.read_namespaced_job_status("slow", NS).status.active, "no active pods", WAIT)


# Scheduling


def test_a_pod_too_big_for_every_node_binds_once_a_big_enough_node_joins(
    start_kube: StartKube, tmp_path: pathlib.Path
) -> None:
    kube = start_kube({"nodePools": [{"name": "gpu", "count": 2, "gpus": 4, "gpuProduct": H100}]})
    kube.core.create_namespaced_pod(NS, gpu_pod("trainer", 8))

    assert unschedulable_message(kube, "trainer") == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."

    apply(kube, tmp_path, gpu_node("big-1", 8))
    assert node_of(kube, "trainer") == "big-1"


def test_node_selectors_and_gpu_taints_steer_pods(start_kube: StartKube) -> None:
    taint = {"key": GPU, "effect": "NoSchedule"}
    kube = start_kube({"nodePools": [
        {"name": "h100", "count": 1, "gpus": 4, "gpuProduct": H100, "taints": [taint]},
        {"name": "a100", "count": 1, "gpus": 4, "gpuProduct": A100},
    ]})  # fmt: skip
    toleration = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
    on_h100 = {"nvidia.com/gpu.product": H100}
    kube.core.create_namespaced_pod(NS, gpu_pod("untolerated", 1, nodeSelector=on_h100))
    kube.core.create_namespaced_pod(NS, gpu_pod("tolerated", 1, nodeSelector=on_h100, tolerations=[toleration]))
    kube.core.create_namespaced_pod(NS, gpu_pod("a100", 1, nodeSelector={"nvidia.com/gpu.product": A100}))
    kube.core.create_namespaced_pod(NS, gpu_pod("anywhere", 4))

    assert node_of(kube, "tolerated") == "h100-1"
    assert node_of(kube, "a100") == "a100-1"
    assert unschedulable_message(kube, "untolerated") == (
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint {nvidia.com/gpu: }."
    )
    assert unschedulable_message(kube, "anywhere") == (
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint {nvidia.com/gpu: }."
    )
    node = kube.core.read_node("h100-1")
    assert node.metadata.labels["nvidia.com/gpu.count"] == "4"
    assert node.status.allocatable[GPU] == "4"


def test_the_higher_priority_pod_binds_first_when_capacity_frees(start_kube: StartKube) -> None:
    kube = start_kube({"nodePools": [{"name": "gpu", "count": 1, "gpus": 1}]})
    for name, value in (("low", 10), ("high", 1000)):
        kube.scheduling.create_priority_class({"metadata": {"name": name}, "value": value})
    kube.core.create_namespaced_pod(NS, gpu_pod("holder", 1))
    node_of(kube, "holder")
    kube.core.create_namespaced_pod(NS, gpu_pod("low", 1, priorityClassName="low"))
    unschedulable_message(kube, "low")
    kube.core.create_namespaced_pod(NS, gpu_pod("high", 1, priorityClassName="high"))
    unschedulable_message(kube, "high")

    kube.core.delete_namespaced_pod("holder", NS, grace_period_seconds=0)

    assert node_of(kube, "high") == "gpu-1"
    assert unschedulable_message(kube, "low") == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


def test_a_pod_group_binds_all_of_its_members_or_none(start_kube: StartKube, tmp_path: pathlib.Path) -> None:
    kube = start_kube({"nodePools": [{"name": "gpu", "count": 1, "gpus": 3, "gpuProduct": H100}]})
    group = {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup", "metadata": {"name": "gang"},
             "spec": {"minMember": 4}}  # fmt: skip
    kube.custom.create_namespaced_custom_object("scheduling.x-k8s.io", "v1alpha1", NS, "podgroups", group)
    names = [f"rank-{index}" for index in range(4)]
    for name in names:
        pod = gpu_pod(name, 1)
        pod["metadata"]["labels"] = {"scheduling.x-k8s.io/pod-group": "gang"}
        kube.core.create_namespaced_pod(NS, pod)

    messages = [unschedulable_message(kube, name) for name in names]
    assert all("gang" in message for message in messages), messages
    assert not any(pod.spec.node_name for pod in kube.core.list_namespaced_pod(NS).items)

    apply(kube, tmp_path, gpu_node("gpu-extra", 1))
    nodes = [node_of(kube, name) for name in names]
    assert sorted(nodes) == ["gpu-1", "gpu-1", "gpu-1", "gpu-extra"]

    def scheduled() -> Any:
        found = kube.custom.get_namespaced_custom_object("scheduling.x-k8s.io", "v1alpha1", NS, "podgroups", "gang")
        status = found.get("status") or {}
        return status if status.get("phase") == "Running" else None

    assert eventually(scheduled, "the PodGroup to be Running", WAIT)["scheduled"] == 4
