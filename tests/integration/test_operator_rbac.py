"""Least privilege, proven: `kiln run` as the chart's ServiceAccount, holding only the chart's ClusterRole,
trains examples/train-iris (pods, claims, the kiln-trainer identity, a registered ModelVersion) and serves
the version through a ModelDeployment; the dev cluster enforces RBAC, so a missing rule is a real 403.

Then the dev cluster's audit log is read back: every request the operator made must be granted by the
rendered rules (decided by the dev cluster's own authorizer), and every verb the rules grant must have been
used, or be in UNEXERCISED with the path that needs it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pathlib
import sys
from typing import Any

import yaml
from kiln_cluster import REPO, Kiln, OperatorProcess, cluster_with_crds
from polling import eventually
from test_training import wait_for_phase

from kiln.devcluster import authorization, identity

sys.path.insert(0, str(REPO / "tests" / "chart"))
chartgen = importlib.import_module("chartgen")  # the chart tests' renderer: the real Helm engine

EXAMPLE = REPO / "examples" / "train-iris" / "trainingjob.yaml"
NAMESPACE = "iris"

# (apiGroup, resource, verb) the chart grants that this run does not use, each for the path that needs it.
UNEXERCISED = {
    # Peering between replicas (`kiln run --peering`, the chart's default with 2 replicas); the test runs one.
    ("kopf.dev", "clusterkopfpeerings", "get"),
    ("kopf.dev", "clusterkopfpeerings", "list"),
    ("kopf.dev", "clusterkopfpeerings", "watch"),
    ("kopf.dev", "clusterkopfpeerings", "patch"),
    # A finished TrainingJob with ttlSecondsAfterFinished is deleted, with its workers' access.
    ("kiln.dev", "trainingjobs", "delete"),
    ("", "serviceaccounts", "delete"),
    ("rbac.authorization.k8s.io", "roles", "delete"),
    ("rbac.authorization.k8s.io", "rolebindings", "delete"),
    # The kiln-trainer Role grants it (RBAC lets only a holder grant), and a reconcile whose status write
    # was refused (the job changed meanwhile) reads the job again; otherwise jobs are read as watched.
    ("kiln.dev", "trainingjobs", "get"),
    # A retraining trigger of a steady ModelDeployment starts a TrainingJob (spec.monitoring.retraining).
    ("kiln.dev", "trainingjobs", "create"),
    # Trained ModelVersions are created by kiln-trainer, and the operator grants that to it in a Role.
    ("kiln.dev", "modelversions", "create"),
    # Gang restarts after a worker fails; deleted children of a stopped rollout.
    ("", "pods", "delete"),
    ("", "services", "delete"),
    ("", "persistentvolumeclaims", "delete"),
    ("apps", "deployments", "delete"),
    # Gang scheduling through coscheduling or Volcano (spec.scheduling), not the built-in admission.
    ("scheduling.x-k8s.io", "podgroups", "create"),
    ("scheduling.x-k8s.io", "podgroups", "patch"),
    ("scheduling.x-k8s.io", "podgroups", "delete"),
    ("scheduling.volcano.sh", "podgroups", "create"),
    ("scheduling.volcano.sh", "podgroups", "patch"),
    ("scheduling.volcano.sh", "podgroups", "delete"),
    # Autoscaled serving versions (spec.autoscaling); the autoscalers are listed on every reconcile.
    ("autoscaling", "horizontalpodautoscalers", "create"),
    ("autoscaling", "horizontalpodautoscalers", "patch"),
    ("autoscaling", "horizontalpodautoscalers", "delete"),
    # Traffic through the Gateway API (traffic.provider gatewayAPI).
    ("gateway.networking.k8s.io", "httproutes", "get"),
    ("gateway.networking.k8s.io", "httproutes", "create"),
    ("gateway.networking.k8s.io", "httproutes", "patch"),
    # Held only so the kiln-router Role may grant it (RBAC refuses to grant what the grantor lacks).
    ("", "configmaps", "watch"),
    # Held so each job's workers' Role may grant them (the workers report progress on their own pods and
    # read whether they were preempted); the operator patches the workers of a preempted job.
    ("", "pods", "get"),
    ("", "pods", "patch"),
    # A failed worker's last log lines, for the TrainingJob's message.
    ("", "pods/log", "get"),
    # `kiln whoami`-style identity checks; every authenticated user holds this through system:basic-user.
    ("authentication.k8s.io", "selfsubjectreviews", "create"),
    # Children that already exist and differ (a changed spec, a second rollout, an operator restart) are
    # patched: this run creates each once.
    ("", "serviceaccounts", "patch"),
    ("rbac.authorization.k8s.io", "roles", "patch"),
    ("rbac.authorization.k8s.io", "rolebindings", "patch"),
    ("", "services", "patch"),
    ("", "configmaps", "patch"),
    ("apps", "deployments", "patch"),
    # kiln-router's Role grants list on its ConfigMap; the replicas traffic provider reads its Deployments.
    ("", "configmaps", "list"),
    ("apps", "deployments", "get"),
}


def _operator_rbac() -> list[dict[str, Any]]:
    """The chart's ServiceAccount, ClusterRole and ClusterRoleBinding, rendered with default values."""
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    objects = [obj for obj in chartgen.render() if obj["kind"] in kinds]
    assert sorted(obj["kind"] for obj in objects) == sorted(kinds)
    return objects


def _service_account_kubeconfig(setup: Kiln, account: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    """The dev cluster's kubeconfig with the account's token, as a pod of that account would present."""
    kubeconfig = yaml.safe_load(setup.devcluster.kubeconfig_path.read_text())
    token = identity.service_account_token(account["metadata"]["namespace"], account["metadata"]["name"])
    for user in kubeconfig["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(kubeconfig))
    return path


def _granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _attributes(entry: dict[str, Any], user: identity.UserInfo) -> authorization.Attributes:
    return authorization.Attributes(
        user=user,
        verb=entry["verb"],
        api_group=entry["group"],
        api_version=entry["version"],
        namespace=entry["namespace"] or "",
        resource=entry["resource"],
        subresource=entry["subresource"] or "",
        name=entry["name"] or "",
    )


def test_the_operator_needs_exactly_the_charts_rules(tmp_path: pathlib.Path) -> None:
    rbac = _operator_rbac()
    (account,) = (obj for obj in rbac if obj["kind"] == "ServiceAccount")
    (role,) = (obj for obj in rbac if obj["kind"] == "ClusterRole")
    (binding,) = (obj for obj in rbac if obj["kind"] == "ClusterRoleBinding")
    username = f"system:serviceaccount:{account['metadata']['namespace']}:{account['metadata']['name']}"

    with cluster_with_crds(tmp_path) as setup:
        setup.kubectl("create", "namespace", account["metadata"]["namespace"])
        setup.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
        kubeconfig = _service_account_kubeconfig(setup, account, tmp_path / "operator.kubeconfig")
        operator = OperatorProcess(dataclasses.replace(setup, env={**setup.env, "KUBECONFIG": str(kubeconfig)}))
        operator.start()
        try:
            setup.kubectl("create", "namespace", NAMESPACE)
            setup.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
            assert wait_for_phase(setup, NAMESPACE, "train-iris", "Succeeded", 180)["modelVersion"] == "iris-1.0.0"
            setup.wait_for_phase(NAMESPACE, "iris-1.0.0", "Validated")
            serving = {
                "apiVersion": "kiln.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "iris"},
                "spec": {"model": "iris", "version": "1.0.0"},
            }
            setup.apply(NAMESPACE, serving)

            def deployed() -> list[str] | None:
                names = [d.metadata.name for d in setup.apps().list_namespaced_deployment(NAMESPACE).items]
                return names or None

            eventually(deployed, f"the ModelDeployment's Deployments (see {setup.operator_log})", 60)
        finally:
            operator.stop()
        setup.assert_no_traceback()
        log = setup.operator_log.read_text()
        assert "Forbidden" not in log, log[-6000:]  # a missing rule is a real 403
        audit = [json.loads(line) for line in (setup.devcluster.state_dir / "audit.jsonl").read_text().splitlines()]

    made = [entry for entry in audit if entry["user"] == username]
    assert made, "the operator made no requests as its ServiceAccount"
    user = identity.UserInfo(username, tuple(made[0]["groups"]))
    policy = authorization.Policy(cluster_roles=[role], cluster_role_bindings=[binding])
    refused = sorted(
        {
            (entry["verb"], entry["group"], entry["resource"], entry["subresource"], entry["namespace"])
            for entry in made
            if not authorization.authorize(policy, _attributes(entry, user)).allowed
        }
    )
    assert refused == [], "requests the chart's ClusterRole does not allow"

    used = {
        (entry["group"], f"{entry['resource']}/{entry['subresource']}" if entry["subresource"] else entry["resource"],
         entry["verb"])
        for entry in made
    }  # fmt: skip
    unused = _granted(role["rules"]) - used
    assert sorted(unused - UNEXERCISED) == [], "rules no request used: drop them or say in UNEXERCISED why"
    assert sorted(UNEXERCISED & used) == [], "UNEXERCISED names rules this run used: take them off"
