"""ResourceQuota and LimitRange in the dev cluster, driven by kubectl and the `kubernetes` client.

One dev cluster (two nodes of four GPUs) serves the whole module; every test works in a namespace of its own.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator

import pytest
import yaml
from conftest import Kube
from kubernetes.client.rest import ApiException
from polling import eventually

from kiln.devcluster import cluster, config

NAMESPACES = itertools.count()


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    settings = config.load(None, {"nodePools": [{"count": 2, "gpus": 4}]})
    with cluster.ThreadedDevCluster(tmp_path_factory.mktemp("quota") / "devcluster", settings=settings) as running:
        driver = Kube(running)
        yield driver
        driver.close()


@pytest.fixture
def namespace(kube: Kube) -> str:
    name = f"quota-{next(NAMESPACES)}"
    kube.kubectl("create", "namespace", name)
    return name


def apply(kube: Kube, namespace: str, *documents: dict[str, object], check: bool = True) -> object:
    return kube.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(documents), check=check)


def gpu_pod(name: str, gpus: int = 1) -> dict[str, object]:
    resources = {"requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}}
    container = {"name": "train", "image": "example/trainer", "resources": resources}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container]}}


def deployment(name: str) -> dict[str, object]:
    template = {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "example/app"}]},
    }
    spec = {"replicas": 0, "selector": {"matchLabels": {"app": name}}, "template": template}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def resource_quota(name: str, hard: dict[str, str]) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}}


def used(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    status = kube.core.read_namespaced_resource_quota(name, namespace).status
    return dict((status.used if status else None) or {})


def test_a_gpu_quota_refuses_the_fifth_gpu_pod_and_follows_creates_and_deletes(kube: Kube, namespace: str) -> None:
    apply(kube, namespace, resource_quota("gpu", {"requests.nvidia.com/gpu": "4"}))
    eventually(lambda: used(kube, namespace, "gpu") == {"requests.nvidia.com/gpu": "0"}, "the quota's status")
    quota = kube.core.read_namespaced_resource_quota("gpu", namespace)
    assert quota.status.hard == {"requests.nvidia.com/gpu": "4"}

    for index in range(4):
        apply(kube, namespace, gpu_pod(f"gpu-{index}"))
    eventually(lambda: used(kube, namespace, "gpu") == {"requests.nvidia.com/gpu": "4"}, "four GPUs used")

    refused = kube.kubectl("-n", namespace, "create", "-f", "-", input=yaml.safe_dump(gpu_pod("gpu-4")), check=False)
    assert refused.returncode != 0
    assert (
        'pods "gpu-4" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=1, '
        "used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4"
    ) in refused.stderr
    with pytest.raises(ApiException) as raised:
        kube.core.create_namespaced_pod(namespace, gpu_pod("gpu-4"))
    assert raised.value.status == 403
    assert json.loads(raised.value.body)["reason"] == "Forbidden"

    kube.core.delete_namespaced_pod("gpu-0", namespace, grace_period_seconds=0)
    eventually(lambda: used(kube, namespace, "gpu") == {"requests.nvidia.com/gpu": "3"}, "a GPU freed")
    kube.core.create_namespaced_pod(namespace, gpu_pod("gpu-4"))
    eventually(lambda: used(kube, namespace, "gpu") == {"requests.nvidia.com/gpu": "4"}, "four GPUs used again")


def test_a_finished_pod_no_longer_counts(kube: Kube, namespace: str) -> None:
    apply(kube, namespace, resource_quota("pods", {"pods": "1", "requests.cpu": "1"}))
    container = {"name": "once", "image": "python", "command": [sys.executable, "-c", "print('done')"],
                 "resources": {"requests": {"cpu": "500m"}}}  # fmt: skip
    once = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "once"},
            "spec": {"restartPolicy": "Never", "containers": [container]}}  # fmt: skip
    apply(kube, namespace, once)
    eventually(lambda: used(kube, namespace, "pods") == {"pods": "1", "requests.cpu": "500m"}, "one pod used")
    eventually(
        lambda: kube.core.read_namespaced_pod("once", namespace).status.phase == "Succeeded",
        "the pod to finish",
        timeout=30,
    )
    eventually(lambda: used(kube, namespace, "pods") == {"pods": "0", "requests.cpu": "0"}, "nothing used")
    apply(kube, namespace, once | {"metadata": {"name": "twice"}})


def test_a_cpu_quota_needs_requests_and_a_limit_range_supplies_them(kube: Kube, namespace: str) -> None:
    apply(kube, namespace, resource_quota("compute", {"requests.cpu": "2", "requests.memory": "1Gi"}))
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
            "spec": {"containers": [{"name": "app", "image": "example/app"}]}}  # fmt: skip
    refused = apply(kube, namespace, bare, check=False)
    assert refused.returncode != 0  # type: ignore[attr-defined]
    assert "failed quota: compute: must specify requests.cpu for: app; requests.memory for: app" in (
        refused.stderr  # type: ignore[attr-defined]
    )

    limits = {"type": "Container", "default": {"cpu": "1", "memory": "512Mi"},
              "defaultRequest": {"cpu": "250m", "memory": "256Mi"}}  # fmt: skip
    apply(kube, namespace, {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults"},
                            "spec": {"limits": [limits]}})  # fmt: skip
    apply(kube, namespace, bare)
    pod = kube.core.read_namespaced_pod("bare", namespace)
    resources = pod.spec.containers[0].resources
    assert resources.requests == {"cpu": "250m", "memory": "256Mi"}
    assert resources.limits == {"cpu": "1", "memory": "512Mi"}
    assert "LimitRanger plugin set" in pod.metadata.annotations["kubernetes.io/limit-ranger"]
    eventually(
        lambda: used(kube, namespace, "compute") == {"requests.cpu": "250m", "requests.memory": "256Mi"},
        "the defaulted requests counted",
    )


def test_an_object_count_quota_refuses_the_second_deployment(kube: Kube, namespace: str) -> None:
    apply(kube, namespace, resource_quota("deployments", {"count/deployments.apps": "1"}))
    apply(kube, namespace, deployment("first"))
    refused = kube.kubectl(
        "-n", namespace, "create", "-f", "-", input=yaml.safe_dump(deployment("second")), check=False
    )
    assert refused.returncode != 0
    assert (
        'deployments.apps "second" is forbidden: exceeded quota: deployments, requested: count/deployments.apps=1, '
        "used: count/deployments.apps=1, limited: count/deployments.apps=1"
    ) in refused.stderr
