"""Admission in the dev cluster, driven by kubectl and the `kubernetes` client: ValidatingAdmissionPolicies
(Deny, Warn, params, request.userInfo) and webhooks (a kopf operator's, and one that is down).

One dev cluster serves the whole module; every test works in a namespace of its own.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
import yaml
from conftest import Kube
from kubernetes.client.rest import ApiException
from polling import eventually

from kiln.devcluster import cluster

NAMESPACES = itertools.count()
ADMIN_GROUP = "system:masters"  # impersonated users need RBAC too: give them all of it


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    with cluster.ThreadedDevCluster(tmp_path_factory.mktemp("admission") / "devcluster") as running:
        driver = Kube(running)
        yield driver
        driver.close()


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> str:
    words = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).split("-")
    name = "-".join([*(w for w in words[1:6] if w), str(next(NAMESPACES))])
    kube.kubectl("create", "namespace", name)
    return name


def apply(kube: Kube, *documents: dict[str, object], check: bool = True) -> subprocess.CompletedProcess[str]:
    return kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents), check=check)


def policy(name: str, validations: list[dict[str, object]], **spec: object) -> dict[str, object]:
    rules = [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
              "resources": ["deployments"]}]  # fmt: skip
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": rules}, "validations": validations}
        | spec,
    }


def binding(name: str, namespace: str, actions: tuple[str, ...] = ("Deny",), **spec: object) -> dict[str, object]:
    selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": list(actions),
            "matchResources": {"namespaceSelector": selector},
        }
        | spec,
    }


def deployment(name: str, labels: dict[str, str] | None = None, replicas: int = 1) -> dict[str, object]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": "example/app"}]}},
        },
    }  # fmt: skip


def test_a_policy_refuses_a_deployment_without_a_team_label(kube: Kube, namespace: str) -> None:
    validation = {"expression": "has(object.metadata.labels) && 'team' in object.metadata.labels",
                  "message": "every Deployment names its team"}  # fmt: skip
    apply(kube, policy("require-team", [validation]), binding("require-team", namespace))

    refused = kube.kubectl("-n", namespace, "create", "-f", "-", input=yaml.safe_dump(deployment("web")), check=False)
    assert refused.returncode != 0
    assert (
        "ValidatingAdmissionPolicy 'require-team' with binding 'require-team' denied request: "
        "every Deployment names its team" in refused.stderr
    )
    with pytest.raises(ApiException) as raised:
        kube.apps.create_namespaced_deployment(namespace, deployment("web"))
    assert raised.value.status == 422
    body = json.loads(raised.value.body)
    assert body["reason"] == "Invalid"
    assert body["message"].startswith('deployments.apps "web" is forbidden: ValidatingAdmissionPolicy')

    apply(kube, deployment("web", {"team": "search"}) | {"metadata": {"name": "web", "namespace": namespace,
                                                                       "labels": {"team": "search"}}})  # fmt: skip
    assert kube.apps.read_namespaced_deployment("web", namespace).metadata.labels == {"team": "search"}


def test_a_policy_over_request_user_info_sees_the_impersonated_user(kube: Kube, namespace: str) -> None:
    rules = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]
    validation = {"expression": "request.userInfo.username != 'mallory'",
                  "messageExpression": "'configmaps are not for ' + request.userInfo.username"}  # fmt: skip
    apply(kube, policy("no-mallory", [validation], matchConstraints={"resourceRules": rules}),
          binding("no-mallory", namespace))  # fmt: skip

    as_mallory = ("--as", "mallory", "--as-group", ADMIN_GROUP, "-n", namespace)
    refused = kube.kubectl(*as_mallory, "create", "configmap", "notes", check=False)
    assert refused.returncode != 0
    assert "denied request: configmaps are not for mallory" in refused.stderr
    kube.kubectl("--as", "alice", "--as-group", ADMIN_GROUP, "-n", namespace, "create", "configmap", "notes")


def test_a_policy_takes_its_limit_from_a_configmap_named_by_the_binding(kube: Kube, namespace: str) -> None:
    validation = {
        "expression": "object.spec.replicas <= int(params.data.maxReplicas)",
        "messageExpression": "'at most ' + params.data.maxReplicas + ' replicas'",
        "reason": "Forbidden",
    }
    limits = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "replica-limit", "namespace": namespace},
              "data": {"maxReplicas": "3"}}  # fmt: skip
    paramed = policy("max-replicas", [validation], paramKind={"apiVersion": "v1", "kind": "ConfigMap"})
    ref = {"name": "replica-limit", "namespace": namespace, "parameterNotFoundAction": "Deny"}
    apply(kube, limits, paramed, binding("max-replicas", namespace, paramRef=ref))

    with pytest.raises(ApiException) as raised:
        kube.apps.create_namespaced_deployment(namespace, deployment("big", replicas=5))
    assert raised.value.status == 403
    assert "denied request: at most 3 replicas" in json.loads(raised.value.body)["message"]
    kube.apps.create_namespaced_deployment(namespace, deployment("small", replicas=2))

    kube.core.delete_namespaced_config_map("replica-limit", namespace)
    with pytest.raises(ApiException) as missing:
        kube.apps.create_namespaced_deployment(namespace, deployment("other"))
    assert "no params found for policy binding with `Deny` parameterNotFoundAction" in missing.value.body


def test_a_policy_in_warn_mode_admits_and_kubectl_prints_the_warning(kube: Kube, namespace: str) -> None:
    validation = {"expression": "object.spec.replicas >= 2", "message": "one replica is no high availability"}
    apply(kube, policy("ha", [validation]), binding("ha", namespace, ("Warn", "Audit")))

    created = kube.kubectl("-n", namespace, "create", "-f", "-", input=yaml.safe_dump(deployment("lonely")))
    assert (
        "Warning: Validation failed for ValidatingAdmissionPolicy 'ha' with binding 'ha': "
        "one replica is no high availability" in created.stderr
    )
    assert kube.apps.read_namespaced_deployment("lonely", namespace).spec.replicas == 1
    audit = kube.cluster.audit_path.read_text()
    assert "validation.policy.admission.k8s.io/validation_failure" in audit


# webhooks


def test_a_policy_on_delete_sees_the_object_as_old_object_and_keeps_it(kube: Kube, namespace: str) -> None:
    rules = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE"], "resources": ["configmaps"]}]
    validation = {
        "expression": "object == null && !(has(oldObject.metadata.labels) && oldObject.metadata.labels.keep == 'yes')",
        "messageExpression": "oldObject.metadata.name + ' is kept: remove its keep label first'",
    }
    apply(kube, policy("keep-labelled", [validation], matchConstraints={"resourceRules": rules}),
          binding("keep-labelled", namespace))  # fmt: skip
    kube.kubectl("-n", namespace, "create", "configmap", "kept")
    kube.kubectl("-n", namespace, "label", "configmap", "kept", "keep=yes")
    kube.kubectl("-n", namespace, "create", "configmap", "scratch")

    refused = kube.kubectl("-n", namespace, "delete", "configmap", "kept", check=False)
    kube.kubectl("-n", namespace, "delete", "configmap", "scratch")

    assert refused.returncode != 0
    assert "denied request: kept is kept: remove its keep label first" in refused.stderr
    assert kube.core.read_namespaced_config_map("kept", namespace).metadata.labels == {"keep": "yes"}
    names = [item.metadata.name for item in kube.core.list_namespaced_config_map(namespace).items]
    assert "scratch" not in names
    with pytest.raises(ApiException) as missing:
        kube.core.delete_namespaced_config_map("never-was", namespace)
    assert missing.value.status == 404  # a policy is not asked about an object that does not exist


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def webhook_configuration(
    name: str, namespace: str, url: str, failure_policy: str, operations: tuple[str, ...] = ("CREATE",)
) -> dict[str, object]:
    rules = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": list(operations), "resources": ["configmaps"]}]
    selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{"name": f"{name}.kiln.dev", "clientConfig": {"url": url}, "rules": rules,
                      "failurePolicy": failure_policy, "sideEffects": "None", "timeoutSeconds": 2,
                      "namespaceSelector": selector, "admissionReviewVersions": ["v1"]}],
    }  # fmt: skip


@pytest.mark.parametrize(("failure_policy", "admitted"), [("Fail", False), ("Ignore", True)])
def test_a_webhook_that_is_down_refuses_under_fail_and_is_skipped_under_ignore(
    kube: Kube, namespace: str, failure_policy: str, admitted: bool
) -> None:
    url = f"http://127.0.0.1:{free_port()}/validate"
    apply(kube, webhook_configuration(f"down-{failure_policy.lower()}", namespace, url, failure_policy))

    created = kube.kubectl("-n", namespace, "create", "configmap", "settings", check=False)
    assert (created.returncode == 0) is admitted, created.stderr
    if not admitted:
        assert f'failed calling webhook "down-fail.kiln.dev": failed to call webhook: Post "{url}?timeout=2s"' in (
            created.stderr
        )
        assert "connection refused" in created.stderr


def test_a_webhook_on_delete_that_is_down_keeps_the_object_under_fail(kube: Kube, namespace: str) -> None:
    kube.kubectl("-n", namespace, "create", "configmap", "settings")
    url = f"http://127.0.0.1:{free_port()}/validate"
    apply(kube, webhook_configuration("down-delete", namespace, url, "Fail", operations=("DELETE",)))

    refused = kube.kubectl("-n", namespace, "delete", "configmap", "settings", check=False)

    assert refused.returncode != 0
    assert 'failed calling webhook "down-delete.kiln.dev"' in refused.stderr
    assert kube.core.read_namespaced_config_map("settings", namespace).metadata.name == "settings"
    kube.kubectl("delete", "validatingwebhookconfiguration", "down-delete")


OPERATOR = """
import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.admission.server = kopf.WebhookServer(addr="127.0.0.1", port=PORT, host="127.0.0.1", insecure=True)
    settings.admission.managed = "kiln-test.kopf.dev"
    settings.watching.server_timeout = 5


@kopf.on.validate("configmaps", labels={"checked": "yes"})
def no_secrets(body, warnings, **_):
    if "password" in (body.get("data") or {}):
        raise kopf.AdmissionError("passwords belong in Secrets", code=403)
    warnings.append("checked by the kopf webhook")


@kopf.on.mutate("configmaps", labels={"checked": "yes"})
def stamp(patch, **_):
    patch.setdefault("metadata", {}).setdefault("annotations", {})["kiln.dev/stamped"] = "by-kopf"
"""


@pytest.fixture
def kopf_operator(kube: Kube, tmp_path: pathlib.Path) -> Iterator[None]:
    port = free_port()
    script = tmp_path / "operator.py"
    script.write_text(textwrap.dedent(OPERATOR).replace("PORT", str(port)))
    env = {"KUBECONFIG": str(kube.cluster.kubeconfig_path), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", str(script)],
        env=env,
        stdout=(tmp_path / "kopf.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        eventually(
            lambda: (
                kube.kubectl("get", "mutatingwebhookconfiguration", "kiln-test.kopf.dev", check=False).returncode == 0
                and kube.kubectl("get", "validatingwebhookconfiguration", "kiln-test.kopf.dev", check=False).returncode
                == 0
            ),
            "kopf to register its webhooks",
            timeout=30,
        )
        time.sleep(0.5)
        yield
    finally:
        process.terminate()
        process.wait(timeout=15)
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            kube.kubectl("delete", kind, "kiln-test.kopf.dev", "--ignore-not-found")


def test_kopf_validating_and_mutating_webhooks_refuse_and_patch(
    kube: Kube, namespace: str, kopf_operator: None
) -> None:
    secretive = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"password": "hunter2"},
                 "metadata": {"name": "secretive", "namespace": namespace, "labels": {"checked": "yes"}}}  # fmt: skip
    refused = apply(kube, secretive, check=False)
    assert refused.returncode != 0
    assert 'admission webhook "no-secrets.kiln-test.kopf.dev" denied the request: passwords belong in Secrets' in (
        refused.stderr
    )

    plain = secretive | {"data": {"colour": "blue"}}
    plain["metadata"] = secretive["metadata"] | {"name": "plain"}  # type: ignore[operator]
    created = apply(kube, plain)
    assert "Warning: checked by the kopf webhook" in created.stderr
    stored = kube.core.read_namespaced_config_map("plain", namespace)
    assert stored.metadata.annotations["kiln.dev/stamped"] == "by-kopf"

    unchecked = kube.kubectl("-n", namespace, "create", "configmap", "unchecked", "--from-literal=password=x")
    assert unchecked.returncode == 0
