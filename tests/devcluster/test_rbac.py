"""RBAC in the dev cluster, driven by real clients: `kubectl auth can-i` (today's kubectl and 1.27),
refusals as kubectl prints them and as the `kubernetes` client raises them, and a service
account that may do exactly what its Role says."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from conftest import Kubectl, StartKube, kubectl_binary, make_kubectl
from kubernetes import client
from kubernetes.client.rest import ApiException
from polling import eventually

from kiln.devcluster import cluster, identity

NS = "team-a"
SA = f"system:serviceaccount:{NS}:trainer"

TRAINER_ACCESS = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: trainer, namespace: {NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: config-reader, namespace: {NS}}}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, list, watch, create]
  - apiGroups: [""]
    resources: [pods/log]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: trainer-reads-config, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: config-reader}}
subjects:
  - {{kind: ServiceAccount, name: trainer, namespace: {NS}}}
"""


@pytest.fixture(params=["current", "1.27"])
def any_kubectl(request: pytest.FixtureRequest, devcluster: cluster.DevCluster) -> Kubectl:
    """Today's kubectl and kubectl 1.27, both against the dev cluster."""
    return make_kubectl(devcluster, kubectl_binary(None if request.param == "current" else request.param))


def client_for(devcluster: cluster.DevCluster, token: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = devcluster.url
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def can_i(kubectl: Kubectl, *args: str) -> str:
    return kubectl("auth", "can-i", *args, check=False).stdout.strip()


def test_can_i_answers_for_the_admin_and_for_an_impersonated_service_account(any_kubectl: Kubectl) -> None:
    kubectl = any_kubectl
    kubectl("apply", "-f", "-", input=TRAINER_ACCESS)

    assert can_i(kubectl, "delete", "nodes") == "yes"
    assert can_i(kubectl, "get", "configmaps", "-n", NS, "--as", SA) == "yes"
    assert can_i(kubectl, "watch", "configmaps", "-n", NS, "--as", SA) == "yes"
    assert can_i(kubectl, "delete", "configmaps", "-n", NS, "--as", SA) == "no"
    assert can_i(kubectl, "get", "configmaps", "-n", "default", "--as", SA) == "no"
    assert can_i(kubectl, "get", "pods", "--subresource", "log", "-n", NS, "--as", SA) == "yes"
    assert can_i(kubectl, "get", "pods", "-n", NS, "--as", SA) == "no"
    assert can_i(kubectl, "get", "/healthz", "--as", SA) == "yes"
    assert can_i(kubectl, "get", "/logs", "--as", SA) == "no"


def test_can_i_list_shows_the_rules_that_apply_in_the_namespace(any_kubectl: Kubectl) -> None:
    kubectl = any_kubectl
    kubectl("apply", "-f", "-", input=TRAINER_ACCESS)

    listed = kubectl("auth", "can-i", "--list", "-n", NS, "--as", SA).stdout
    rows = [line.split() for line in listed.splitlines()]
    assert rows[0][:2] == ["Resources", "Non-Resource"]
    assert ["configmaps", "[]", "[]", "[get", "list", "watch", "create]"] in rows
    assert ["pods/log", "[]", "[]", "[get]"] in rows
    assert ["selfsubjectaccessreviews.authorization.k8s.io", "[]", "[]", "[create]"] in rows
    assert ["[/version]", "[]", "[get]"] in rows
    elsewhere = kubectl("auth", "can-i", "--list", "-n", "default", "--as", SA).stdout
    assert "configmaps" not in elsewhere

    admin = kubectl("auth", "can-i", "--list").stdout
    assert ["*.*", "[]", "[]", "[*]"] in [line.split() for line in admin.splitlines()]


def test_a_refused_request_is_printed_by_kubectl_as_kube_apiserver_words_it(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=TRAINER_ACCESS)

    listed = kubectl("get", "pods", "-n", NS, "--as", SA, check=False)
    assert listed.returncode == 1
    assert listed.stderr.strip() == (
        f'Error from server (Forbidden): pods is forbidden: User "{SA}" cannot list resource "pods" '
        f'in API group "" in the namespace "{NS}"'
    )
    node = kubectl("get", "node", "node-1", "--as", "bob", check=False)
    assert node.stderr.strip() == (
        'Error from server (Forbidden): nodes "node-1" is forbidden: User "bob" cannot get resource "nodes" '
        'in API group "" at the cluster scope'
    )
    raw = kubectl("get", "--raw", "/logs", "--as", "bob", check=False)
    assert 'forbidden: User "bob" cannot get path "/logs"' in raw.stderr


def test_impersonation_needs_the_impersonate_verb(kubectl: Kubectl, devcluster: cluster.DevCluster) -> None:
    kubectl("apply", "-f", "-", input=TRAINER_ACCESS)
    kubectl("create", "clusterrole", "impersonate-alice", "--verb=impersonate", "--resource=users",
            "--resource-name=alice")  # fmt: skip
    kubectl("create", "clusterrolebinding", "trainer-as-alice", "--clusterrole=impersonate-alice",
            f"--serviceaccount={NS}:trainer")  # fmt: skip

    with client_for(devcluster, identity.service_account_token(NS, "trainer")) as api:
        whoami = client.AuthenticationV1Api(api)
        api.default_headers["Impersonate-User"] = "alice"
        assert whoami.create_self_subject_review(client.V1SelfSubjectReview()).status.user_info.username == "alice"
        api.default_headers["Impersonate-User"] = "bob"
        with pytest.raises(ApiException) as refused:
            whoami.create_self_subject_review(client.V1SelfSubjectReview())
    assert refused.value.status == 403
    assert json.loads(refused.value.body)["message"] == (
        f'users "bob" is forbidden: User "{SA}" cannot impersonate resource "users" in API group "" '
        "at the cluster scope"
    )


def test_a_service_account_bound_to_a_role_lacking_one_verb_fails_on_exactly_that_call(
    kubectl: Kubectl, devcluster: cluster.DevCluster
) -> None:
    kubectl("apply", "-f", "-", input=TRAINER_ACCESS)

    with client_for(devcluster, identity.service_account_token(NS, "trainer")) as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings")))
        assert core.read_namespaced_config_map("settings", NS).metadata.name == "settings"
        assert [c.metadata.name for c in core.list_namespaced_config_map(NS).items] == ["settings"]
        with pytest.raises(ApiException) as refused:
            core.delete_namespaced_config_map("settings", NS)
        assert core.read_namespaced_config_map("settings", NS).metadata.name == "settings"
    assert refused.value.status == 403
    status = json.loads(refused.value.body)
    assert (status["reason"], status["details"]) == ("Forbidden", {"name": "settings", "kind": "configmaps"})
    assert status["message"] == (
        f'configmaps "settings" is forbidden: User "{SA}" cannot delete resource "configmaps" '
        f'in API group "" in the namespace "{NS}"'
    )


def test_a_subject_access_review_asks_for_someone_else(devcluster: cluster.DevCluster, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=TRAINER_ACCESS)
    with client_for(devcluster, identity.ADMIN_TOKEN) as api:
        reviews = client.AuthorizationV1Api(api)
        attributes = client.V1ResourceAttributes(namespace=NS, verb="list", resource="configmaps")
        spec = client.V1SubjectAccessReviewSpec(
            user=SA, groups=["system:serviceaccounts"], resource_attributes=attributes
        )
        answered = reviews.create_subject_access_review(client.V1SubjectAccessReview(spec=spec))
    assert answered.status.allowed
    assert answered.status.reason == (
        f'RBAC: allowed by RoleBinding "trainer-reads-config/{NS}" of Role "config-reader" '
        f'to ServiceAccount "trainer/{NS}"'
    )


def test_always_allow_lets_every_service_account_do_anything(start_kube: StartKube) -> None:
    kube = start_kube({"authorization": "AlwaysAllow"})
    assert can_i(kube.kubectl, "delete", "nodes", "--as", SA) == "yes"
    assert kube.kubectl("get", "pods", "--as", SA).returncode == 0


def test_kiln_cluster_start_says_how_requests_are_authorized(tmp_path: pathlib.Path) -> None:
    kiln = [str(pathlib.Path(sys.executable).parent / "kiln"), "cluster"]

    def start(*flags: str) -> str:
        started = subprocess.run([*kiln, "start", "--data-dir", str(data_dir), *flags], capture_output=True,
                                 text=True, timeout=90, check=False)  # fmt: skip
        assert started.returncode == 0, started.stderr
        return started.stdout

    data_dir = tmp_path / "cli"
    try:
        assert "authorization: RBAC" in start().splitlines()
        subprocess.run([*kiln, "stop", "--data-dir", str(data_dir)], capture_output=True, timeout=60, check=True)
        assert "authorization: AlwaysAllow" in start("--authorization", "AlwaysAllow").splitlines()
    finally:
        subprocess.run([*kiln, "stop", "--data-dir", str(data_dir)], capture_output=True, timeout=60, check=False)


KILN_VIEWER = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: podgroups-view
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
  - apiGroups: [scheduling.x-k8s.io]
    resources: [podgroups]
    verbs: [get, list, watch]
"""


def test_a_cluster_role_labelled_aggregate_to_view_joins_view_edit_and_admin(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=KILN_VIEWER)
    kubectl("create", "rolebinding", "alice-views", "--clusterrole=view", "--user=alice", "-n", "default")

    assert can_i(kubectl, "list", "podgroups.scheduling.x-k8s.io", "--as", "alice") == "yes"
    assert can_i(kubectl, "delete", "podgroups.scheduling.x-k8s.io", "--as", "alice") == "no"

    def shown(role: str) -> list[dict[str, object]]:
        rules: list[dict[str, object]] = json.loads(kubectl("get", "clusterrole", role, "-o", "json").stdout)["rules"]
        return rules

    wanted = {"apiGroups": ["scheduling.x-k8s.io"], "resources": ["podgroups"], "verbs": ["get", "list", "watch"]}
    eventually(lambda: all(wanted in shown(role) for role in ("view", "edit", "admin")), "aggregated rules")
