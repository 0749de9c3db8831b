"""Benchmark the dev cluster's control loop: 1,000 simulated pods from 100 Deployments to Ready.

Run with `python tests/benchmarks/bench_pods.py` (or `make bench`). It starts the dev
cluster in this process (`ThreadedDevCluster`, in memory, ten 64-cpu nodes of 110 pods
each), creates 100 Deployments of 10 replicas each through the `kubernetes` client
(an image that is not local, so every container is simulated), and waits, bounded,
until all 1,000 pods are Ready and every Deployment reports 10 available replicas.
It prints the time taken, pods per second, and this process's memory (VmRSS from
/proc/self/status) before the cluster starts, once it is up, and at the end; the
cluster runs in a thread of this process, so that is the dev cluster's memory (plus
the client's).

Not collected by pytest (the file name does not match test_*.py).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config

from kiln.devcluster import cluster, config

NAMESPACE = "default"
IMAGE = "registry.example/app:1"
POLL_SECONDS = 0.5
PROGRESS_SECONDS = 5.0


def memory_kib(field: str = "VmRSS") -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name, "bench": "pods"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": IMAGE,
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        }
                    ]
                },
            },
        },
    }


@dataclass
class Progress:
    available_deployments: int = 0
    ready_pods: int = 0
    pods: int = 0


def _items(response: Any) -> list[dict[str, Any]]:
    """The items of a list call made with _preload_content=False: plain JSON, without the client's
    slow model deserialization (the cluster shares this process's interpreter)."""
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


def observe(apps: Any, core: Any, replicas: int, *, with_pods: bool) -> Progress:
    selector = "bench=pods"
    deployments = _items(apps.list_namespaced_deployment(NAMESPACE, label_selector=selector, _preload_content=False))
    progress = Progress(
        available_deployments=sum(
            1 for d in deployments if (d.get("status") or {}).get("availableReplicas", 0) == replicas
        )
    )
    if with_pods:
        pods = _items(core.list_namespaced_pod(NAMESPACE, label_selector=selector, _preload_content=False))
        progress.pods = len(pods)
        progress.ready_pods = sum(
            1
            for pod in pods
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in pod["status"].get("conditions", []))
        )
    return progress


def wait_until_ready(apps: Any, core: Any, deployments: int, replicas: int, timeout: float) -> tuple[float, Progress]:
    """Poll until every Deployment reports all replicas available and all pods are Ready; seconds waited."""
    started = time.perf_counter()
    deadline = started + timeout
    next_report = started + PROGRESS_SECONDS
    progress = Progress()
    while time.perf_counter() < deadline:
        progress = observe(apps, core, replicas, with_pods=False)
        if progress.available_deployments == deployments:
            progress = observe(apps, core, replicas, with_pods=True)
            if progress.ready_pods == progress.pods == deployments * replicas:
                return time.perf_counter() - started, progress
        now = time.perf_counter()
        if now >= next_report:
            print(f"  {now - started:5.1f}s: {progress.available_deployments}/{deployments} Deployments available")
            next_report = now + PROGRESS_SECONDS
        time.sleep(POLL_SECONDS)
    progress = observe(apps, core, replicas, with_pods=True)
    raise TimeoutError(
        f"after {timeout:g}s: {progress.available_deployments}/{deployments} Deployments available,"
        f" {progress.ready_pods}/{progress.pods} pods Ready"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--deployments", type=int, default=100, help="Deployments to create")
    parser.add_argument("--replicas", type=int, default=10, help="replicas of each")
    parser.add_argument("--nodes", type=int, default=10, help="nodes of 64 cpu, 256Gi and 110 pods")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every pod to be Ready")
    arguments = parser.parse_args(argv)
    pods = arguments.deployments * arguments.replicas

    before = memory_kib()
    settings = config.load(
        None, {"nodePools": [{"count": arguments.nodes, "cpu": "64", "memory": "256Gi", "pods": 110}]}
    )
    threaded = cluster.ThreadedDevCluster(settings=settings)
    dev = threaded.__enter__()
    try:
        started_rss = memory_kib()
        print(f"dev cluster at {dev.url} (in memory, {arguments.nodes} nodes, in this process)")
        api = kube_config.new_client_from_config(config_file=str(dev.kubeconfig_path))
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        try:
            started = time.perf_counter()
            for index in range(arguments.deployments):
                apps.create_namespaced_deployment(NAMESPACE, deployment(f"app-{index:03d}", arguments.replicas))
            create_seconds = time.perf_counter() - started
            print(f"created {arguments.deployments} Deployments of {arguments.replicas} in {create_seconds:.2f}s")
            try:
                waited, progress = wait_until_ready(
                    apps, core, arguments.deployments, arguments.replicas, arguments.timeout
                )
            except TimeoutError as error:
                print(f"FAILED: {error}")
                return 1
            elapsed = create_seconds + waited
        finally:
            api.close()
        end_rss, peak = memory_kib(), memory_kib("VmHWM")
    finally:
        threaded.__exit__(None, None, None)

    print(
        f"ready:  {progress.ready_pods} pods Ready, {progress.available_deployments} Deployments with"
        f" {arguments.replicas} available, {elapsed:.2f}s after the first create = {pods / elapsed:,.1f} pods/s"
    )
    print(f"memory: VmRSS {mib(before)} before the cluster started, {mib(started_rss)} once it was up,")
    print(f"        {mib(end_rss)} with {pods} pods Ready (+{mib(end_rss - before)}), peak VmHWM {mib(peak)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
