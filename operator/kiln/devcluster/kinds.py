"""The resource types the dev cluster serves: the built-in ones and those CRDs register."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ResourceType:
    """One servable resource: its names, scope, subresources and, for CRDs, its schema."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    verbs: tuple[str, ...] = ALL_VERBS
    schema: dict[str, Any] | None = None
    printer_columns: tuple[PrinterColumn, ...] = ()
    served_versions: tuple[str, ...] = field(default=())
    crd: bool = False

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """The storage key of the resource, independent of the version asked for."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


def _builtin(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short_names: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    subresources: tuple[str, ...] = (),
    verbs: tuple[str, ...] = ALL_VERBS,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        namespaced=namespaced,
        short_names=short_names,
        categories=categories,
        subresources=frozenset(subresources),
        verbs=verbs,
    )


BUILTINS: tuple[ResourceType, ...] = (
    _builtin("", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",), subresources=("status",)),
    _builtin(
        "",
        "v1",
        "Pod",
        "pods",
        short_names=("po",),
        categories=("all",),
        subresources=("status", "log", "binding"),
    ),
    _builtin("", "v1", "Service", "services", short_names=("svc",), categories=("all",), subresources=("status",)),
    _builtin("", "v1", "Endpoints", "endpoints", short_names=("ep",)),
    _builtin("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
    _builtin("", "v1", "Secret", "secrets"),
    _builtin("", "v1", "Event", "events", short_names=("ev",)),
    _builtin("", "v1", "Node", "nodes", namespaced=False, short_names=("no",), subresources=("status",)),
    _builtin(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        short_names=("pvc",),
        subresources=("status",),
    ),
    _builtin("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",)),
    _builtin(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        short_names=("deploy",),
        categories=("all",),
        subresources=("status", "scale"),
    ),
    _builtin(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        short_names=("rs",),
        categories=("all",),
        subresources=("status", "scale"),
    ),
    _builtin(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        namespaced=False,
        short_names=("pv",),
        subresources=("status",),
    ),
    _builtin("batch", "v1", "Job", "jobs", categories=("all",), subresources=("status",)),
    _builtin("batch", "v1", "CronJob", "cronjobs", short_names=("cj",), categories=("all",), subresources=("status",)),
    _builtin("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", namespaced=False, short_names=("pc",)),
    _builtin("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False, short_names=("sc",)),
    _builtin("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    _builtin(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        namespaced=False,
        verbs=("create",),
    ),
    _builtin("coordination.k8s.io", "v1", "Lease", "leases"),
    _builtin("events.k8s.io", "v1", "Event", "events", short_names=("ev",)),
    _builtin(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        short_names=("pdb",),
        subresources=("status",),
    ),
    _builtin(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        short_names=("hpa",),
        categories=("all",),
        subresources=("status",),
    ),
    _builtin("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    _builtin("", "v1", "ResourceQuota", "resourcequotas", short_names=("quota",), subresources=("status",)),
    _builtin("", "v1", "LimitRange", "limitranges", short_names=("limits",)),
    *(
        _builtin(
            "admissionregistration.k8s.io",
            "v1",
            kind,
            plural,
            namespaced=False,
            categories=("api-extensions",),
            subresources=subresources,
        )
        for kind, plural, subresources in (
            ("ValidatingAdmissionPolicy", "validatingadmissionpolicies", ("status",)),
            ("ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", ()),
            ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations", ()),
            ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations", ()),
        )
    ),
    _builtin(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        subresources=("status",),
    ),
)


def from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CRD serves: one per served version, all stored under one key."""
    spec = crd["spec"]
    names = spec["names"]
    served = tuple(version["name"] for version in spec["versions"] if version.get("served", True))
    types = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        subresources = set(version.get("subresources") or {})
        columns = tuple(
            PrinterColumn(
                name=column["name"],
                json_path=column["jsonPath"],
                type=column.get("type", "string"),
                description=column.get("description", ""),
                priority=column.get("priority", 0),
            )
            for column in version.get("additionalPrinterColumns", [])
        )
        types.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                kind=names["kind"],
                plural=names["plural"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames", [])),
                categories=tuple(names.get("categories", [])),
                subresources=frozenset(subresources),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=columns,
                served_versions=served,
                crd=True,
            )
        )
    return types


class ResourceTypes:
    """The registry of servable resource types, looked up the ways the REST API needs."""

    def __init__(self) -> None:
        self._by_gv_plural: dict[tuple[str, str, str], ResourceType] = {}
        for resource in BUILTINS:
            self.add(resource)

    def add(self, resource: ResourceType) -> None:
        self._by_gv_plural[(resource.group, resource.version, resource.plural)] = resource

    def remove_group_resource(self, group: str, plural: str) -> None:
        for key in [key for key in self._by_gv_plural if key[0] == group and key[2] == plural]:
            del self._by_gv_plural[key]

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gv_plural.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        return list(self._by_gv_plural.values())

    def group_versions(self) -> dict[str, list[str]]:
        """Every group (core as "") with its versions, preferred first."""
        groups: dict[str, list[str]] = {}
        for group, version, _ in self._by_gv_plural:
            versions = groups.setdefault(group, [])
            if version not in versions:
                versions.append(version)
        return groups

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [r for (g, v, _), r in self._by_gv_plural.items() if g == group and v == version]
