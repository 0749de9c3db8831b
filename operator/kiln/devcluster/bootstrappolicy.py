"""The ClusterRoles and ClusterRoleBindings a fresh cluster has, as kube-apiserver bootstraps them.

`cluster-admin` for `system:masters`; discovery, public info and the self-reviews for every
authenticated user (public info for unauthenticated ones too); and the user-facing `admin`,
`edit` and `view`, which are aggregated from the `system:aggregate-to-*` roles by their
`rbac.authorization.k8s.io/aggregate-to-*` labels, so a CRD's own roles can join them.
"""

from __future__ import annotations

from typing import Any

Object = dict[str, Any]

READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
READ_WRITE = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
MASTERS = "system:masters"
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"

_BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


def _rule(verbs: list[str], group: str, *resources: str) -> Object:
    return {"apiGroups": [group], "resources": list(resources), "verbs": list(verbs)}


def _urls(verbs: list[str], *urls: str) -> Object:
    return {"nonResourceURLs": list(urls), "verbs": list(verbs)}


def _cluster_role(
    name: str, rules: list[Object], labels: dict[str, str] | None = None, aggregate_from: str | None = None
) -> Object:
    role: Object = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**_BOOTSTRAP_LABELS, **(labels or {})}, "annotations": dict(_AUTOUPDATE)},
        "rules": rules,
    }
    if aggregate_from:
        selector = {"matchLabels": {f"{AGGREGATE_TO}{aggregate_from}": "true"}}
        role["aggregationRule"] = {"clusterRoleSelectors": [selector]}
    return role


def _cluster_binding(name: str, *groups: str) -> Object:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": dict(_BOOTSTRAP_LABELS), "annotations": dict(_AUTOUPDATE)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group} for group in groups],
    }


_VIEW_RULES = [
    _rule(READ, "", "configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
          "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services", "services/status"),
    _rule(READ, "", "bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
          "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"),
    _rule(READ, "", "namespaces"),
    _rule(READ, "discovery.k8s.io", "endpointslices"),
    _rule(READ, "apps", "controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
          "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets",
          "statefulsets/scale", "statefulsets/status"),
    _rule(READ, "autoscaling", "horizontalpodautoscalers", "horizontalpodautoscalers/status"),
    _rule(READ, "batch", "cronjobs", "cronjobs/status", "jobs", "jobs/status"),
    _rule(READ, "policy", "poddisruptionbudgets", "poddisruptionbudgets/status"),
    _rule(READ, "networking.k8s.io", "ingresses", "ingresses/status", "networkpolicies"),
]  # fmt: skip

_EDIT_RULES = [
    _rule(READ, "", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"),
    _rule(["impersonate"], "", "serviceaccounts"),
    _rule(WRITE, "", "pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"),
    _rule(["create"], "", "pods/eviction"),
    _rule(WRITE, "", "configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
          "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"),
    _rule(["create"], "", "serviceaccounts/token"),
    _rule(WRITE, "apps", "daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
          "replicasets/scale", "statefulsets", "statefulsets/scale"),
    _rule(WRITE, "autoscaling", "horizontalpodautoscalers"),
    _rule(WRITE, "batch", "cronjobs", "jobs"),
    _rule(WRITE, "policy", "poddisruptionbudgets"),
    _rule(WRITE, "networking.k8s.io", "ingresses", "networkpolicies"),
    _rule(READ_WRITE, "coordination.k8s.io", "leases"),
]  # fmt: skip

_ADMIN_RULES = [
    _rule(["create"], "authorization.k8s.io", "localsubjectaccessreviews"),
    _rule(READ_WRITE, "rbac.authorization.k8s.io", "rolebindings", "roles"),
]

_PUBLIC_INFO_URLS = ("/healthz", "/livez", "/readyz", "/version", "/version/")
_DISCOVERY_URLS = ("/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", *_PUBLIC_INFO_URLS)

CLUSTER_ROLES: tuple[Object, ...] = (
    _cluster_role("cluster-admin", [_rule(["*"], "*", "*"), _urls(["*"], "*")]),
    _cluster_role("system:discovery", [_urls(["get"], *_DISCOVERY_URLS)]),
    _cluster_role("system:public-info-viewer", [_urls(["get"], *_PUBLIC_INFO_URLS)]),
    _cluster_role(
        "system:basic-user",
        [
            _rule(["create"], "authentication.k8s.io", "selfsubjectreviews"),
            _rule(["create"], "authorization.k8s.io", "selfsubjectaccessreviews", "selfsubjectrulesreviews"),
        ],
    ),
    _cluster_role("admin", [], aggregate_from="admin"),
    _cluster_role("edit", [], labels={f"{AGGREGATE_TO}admin": "true"}, aggregate_from="edit"),
    _cluster_role("view", [], labels={f"{AGGREGATE_TO}edit": "true"}, aggregate_from="view"),
    _cluster_role("system:aggregate-to-admin", _ADMIN_RULES, labels={f"{AGGREGATE_TO}admin": "true"}),
    _cluster_role("system:aggregate-to-edit", _EDIT_RULES, labels={f"{AGGREGATE_TO}edit": "true"}),
    _cluster_role("system:aggregate-to-view", _VIEW_RULES, labels={f"{AGGREGATE_TO}view": "true"}),
)

CLUSTER_ROLE_BINDINGS: tuple[Object, ...] = (
    _cluster_binding("cluster-admin", MASTERS),
    _cluster_binding("system:discovery", AUTHENTICATED),
    _cluster_binding("system:basic-user", AUTHENTICATED),
    _cluster_binding("system:public-info-viewer", AUTHENTICATED, UNAUTHENTICATED),
)
