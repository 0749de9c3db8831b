"""What a fresh dev cluster has beyond the bare API: the PodGroup CRDs of the gang schedulers it
simulates (coscheduling and Volcano), a default StorageClass, and the system PriorityClasses."""

from __future__ import annotations

from typing import Any

Object = dict[str, Any]

_OPEN_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _pod_group_crd(group: str, version: str, short_name: str) -> Object:
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "properties": {"minMember": {"type": "integer", "format": "int32", "minimum": 0}},
                "x-kubernetes-preserve-unknown-fields": True,
            },
            "status": _OPEN_OBJECT,
        },
    }
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "MinMember", "type": "integer", "jsonPath": ".spec.minMember"},
        {"name": "Scheduled", "type": "integer", "jsonPath": ".status.scheduled"},
        {"name": "Running", "type": "integer", "jsonPath": ".status.running"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"podgroups.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "podgroups", "singular": "podgroup", "kind": "PodGroup", "shortNames": [short_name]},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


CRDS = (
    _pod_group_crd("scheduling.x-k8s.io", "v1alpha1", "pg"),
    _pod_group_crd("scheduling.volcano.sh", "v1beta1", "podgroup-v1beta1"),
)

DEFAULT_STORAGE_CLASS = "standard"
STORAGE_CLASS: Object = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": DEFAULT_STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "kiln.dev/local-directory",
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}

PRIORITY_CLASSES = (
    {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "system-cluster-critical"},
        "value": 2000000000,
        "description": (
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."
        ),
    },
    {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "system-node-critical"},
        "value": 2000001000,
        "description": "Used for system critical pods that must not be moved from their current node.",
    },
)
