"""Simulated nodes: Node objects with capacity, GPU labels and taints, as a kubelet and GPU
feature discovery would register them."""

from __future__ import annotations

from typing import Any

from kiln.devcluster import config, discovery, objects

Object = dict[str, Any]

GPU = "nvidia.com/gpu"
EPHEMERAL_STORAGE = "100Gi"


def _instance_type(pool: config.NodePool) -> str:
    if pool.instance_type:
        return pool.instance_type
    suffix = f"-{pool.gpus}gpu" if pool.gpus else ""
    return f"kiln-{pool.cpu}cpu-{pool.memory.lower()}{suffix}"


def node_object(pool: config.NodePool, name: str) -> Object:
    """One node of a pool, with status, ready to be created."""
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": _instance_type(pool),
        "kiln.dev/node-pool": pool.name,
    }
    capacity = {"cpu": pool.cpu, "memory": pool.memory, "pods": str(pool.pods), "ephemeral-storage": EPHEMERAL_STORAGE}
    if pool.gpus:
        capacity[GPU] = str(pool.gpus)
        labels["nvidia.com/gpu.present"] = "true"
        labels["nvidia.com/gpu.count"] = str(pool.gpus)
        if pool.gpu_product:
            labels["nvidia.com/gpu.product"] = pool.gpu_product
            memory = config.gpu_memory_mib(pool.gpu_product)
            if memory:
                labels["nvidia.com/gpu.memory"] = str(memory)
    labels.update(pool.labels)
    stamp = objects.now()
    conditions = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [taint.model_dump(exclude_defaults=False) for taint in pool.taints]} if pool.taints else {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                {
                    "type": kind,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
                for kind, status, reason, message in conditions
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "Kiln dev cluster",
                "kernelVersion": "",
                "containerRuntimeVersion": "kiln-process://1",
                "kubeletVersion": discovery.VERSION_INFO["gitVersion"],
                "kubeProxyVersion": discovery.VERSION_INFO["gitVersion"],
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def pool_nodes(pool: config.NodePool) -> list[Object]:
    return [node_object(pool, f"{pool.name}-{index}") for index in range(1, pool.count + 1)]
