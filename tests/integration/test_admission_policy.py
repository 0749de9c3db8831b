"""The chart's ValidatingAdmissionPolicy against the dev cluster: rendered by the real Helm engine, applied
with kubectl, then tried as a user would try to forge approvals and stage requests.

No operator runs: admission alone decides. mallory works with Kiln's resources as alice and bob do (bound
to the kiln-user ClusterRole), so only the policy stands between her and their names.
"""

from __future__ import annotations

import datetime
import importlib
import json
import re
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kiln_cluster import REPO, Kiln, cluster_with_crds, model_version

sys.path.insert(0, str(REPO / "tests" / "chart"))
chartgen = importlib.import_module("chartgen")  # the chart tests' renderer: the real Helm engine

OPERATOR = f"system:serviceaccount:{chartgen.NAMESPACE}:{chartgen.RELEASE}"
ADMIN_GROUP = "system:masters"  # RBAC aside: the policy applies to every user, masters too
MALLORY_RBAC = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRoleBinding",
    "metadata": {"name": "kiln-user-mallory"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kiln-user"},
    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}],
}
ARTIFACT = ("pvc://models/iris/model.skops", "0" * 64)


def policy_objects() -> list[dict[str, Any]]:
    objects = [o for o in chartgen.render() if o["apiVersion"].startswith("admissionregistration.k8s.io/")]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == [
        ("ValidatingAdmissionPolicy", "kiln-identities"),
        ("ValidatingAdmissionPolicy", "kiln-version-names"),
        ("ValidatingAdmissionPolicyBinding", "kiln-identities"),
        ("ValidatingAdmissionPolicyBinding", "kiln-version-names"),
    ]
    return objects


@pytest.fixture(scope="module")
def kiln(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiln]:
    """A dev cluster with the CRDs, the people's RBAC (and mallory's) and the chart's policy; no operator."""
    with cluster_with_crds(tmp_path_factory.mktemp("admission-policy")) as setup:
        setup.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([*policy_objects(), MALLORY_RBAC]))
        yield setup


@pytest.fixture
def namespace(kiln: Kiln) -> str:
    name = f"policy-{uuid.uuid4().hex[:8]}"
    kiln.kubectl("create", "namespace", name)
    return name


def approval(approver: str) -> dict[str, str]:
    return {"approver": approver, "comment": "", "time": "2025-01-01T00:00:00Z"}


def stage_request(user: str, stage: str = "Production", comment: str = "") -> str:
    request = {"stage": stage, "user": user, "time": "2025-01-01T00:00:00Z", "comment": comment}
    return json.dumps(request, separators=(",", ":"))


def create(kiln: Kiln, namespace: str, user: str, manifest: dict[str, Any]) -> Any:
    return kiln.kubectl("--as", user, "-n", namespace, "create", "-f", "-", input=yaml.safe_dump(manifest), check=False)


def patch(kiln: Kiln, namespace: str, user: str, name: str, body: dict[str, Any], *as_group: str) -> Any:
    groups = [arg for group in as_group for arg in ("--as-group", group)]
    command = ["--as", user, *groups, "-n", namespace, "patch", "mv", name, "--type", "merge", "-p", json.dumps(body)]
    return kiln.kubectl(*command, check=False)


def refused(result: Any, message: str, policy: str = "kiln-identities") -> None:
    assert result.returncode != 0, result.stdout
    assert f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: {message}" in (
        result.stderr
    ), result.stderr


def test_a_version_created_with_forged_approvals_is_refused(kiln: Kiln, namespace: str) -> None:
    forged = model_version(
        "iris-1.0.0", "1.0.0", ARTIFACT, requiredApprovals=2, approvals=[approval("alice"), approval("bob")]
    )
    refused(
        create(kiln, namespace, "mallory", forged),
        "spec.approvals[0].approver must be the user making the request (mallory), not alice",
    )
    own = model_version("iris-1.0.0", "1.0.0", ARTIFACT, requiredApprovals=2, approvals=[approval("mallory")])
    assert create(kiln, namespace, "mallory", own).returncode == 0


def test_patching_in_someone_elses_approval_is_refused_naming_the_entry(kiln: Kiln, namespace: str) -> None:
    kiln.apply(namespace, model_version("iris-2.0.0", "2.0.0", ARTIFACT, requiredApprovals=2))
    kiln.kiln("approve", "mv/iris-2.0.0", "-n", namespace, "--as", "carol")
    kiln.kiln("approve", "mv/iris-2.0.0", "-n", namespace, "--as", "dana")
    earlier = kiln.model_version(namespace, "iris-2.0.0")["spec"]["approvals"]

    forged = patch(kiln, namespace, "mallory", "iris-2.0.0", {"spec": {"approvals": [*earlier, approval("alice")]}})
    refused(forged, "spec.approvals[2].approver must be the user making the request (mallory), not alice")
    masters = patch(kiln, namespace, "mallory", "iris-2.0.0", {"spec": {"approvals": [approval("alice")]}}, ADMIN_GROUP)
    refused(masters, "spec.approvals[0].approver must be the user making the request (mallory), not alice")
    rewritten = [{**earlier[0], "approver": "alice"}, earlier[1]]  # editing an entry makes it a new one
    refused(
        patch(kiln, namespace, "mallory", "iris-2.0.0", {"spec": {"approvals": rewritten}}),
        "spec.approvals[0].approver must be the user making the request (mallory), not alice",
    )

    withdrawn = patch(kiln, namespace, "mallory", "iris-2.0.0", {"spec": {"approvals": earlier[:1]}})
    assert withdrawn.returncode == 0, withdrawn.stderr  # removing approvals forges nobody
    approvers = [a["approver"] for a in kiln.model_version(namespace, "iris-2.0.0")["spec"]["approvals"]]
    assert approvers == ["carol"]


def test_kiln_approve_as_alice_is_admitted(kiln: Kiln, namespace: str) -> None:
    kiln.apply(namespace, model_version("iris-3.0.0", "3.0.0", ARTIFACT, requiredApprovals=2))

    approved = kiln.kiln("approve", "mv/iris-3.0.0", "-n", namespace, "--as", "alice", "-m", "looks good")
    kiln.kiln("approve", "mv/iris-3.0.0", "-n", namespace, "--as", "bob")

    assert approved.stdout == "alice approved mv/iris-3.0.0: 1 of 2 required distinct approvals\n"
    approvals = kiln.model_version(namespace, "iris-3.0.0")["spec"]["approvals"]
    assert [(a["approver"], a["comment"]) for a in approvals] == [("alice", "looks good"), ("bob", "")]


def test_a_stage_request_must_name_the_user_asking(kiln: Kiln, namespace: str) -> None:
    kiln.apply(namespace, model_version("iris-4.0.0", "4.0.0", ARTIFACT))
    message = (
        "metadata.annotations[kiln.dev/stage-request].user must be the user making the request (mallory), "
        "in the JSON `kiln stage` writes"
    )

    def annotate(user: str, value: str, *as_group: str) -> Any:
        body = {"metadata": {"annotations": {"kiln.dev/stage-request": value}}, "spec": {"stage": "Staging"}}
        return patch(kiln, namespace, user, "iris-4.0.0", body, *as_group)

    refused(annotate("mallory", stage_request("alice", "Staging")), message)
    # Her own name beside alice's, in a second key, an escaped key or a comment, is no way round it.
    duplicated = stage_request("mallory", "Staging")[:-1] + ',"user":"alice"}'
    escaped = stage_request("mallory", "Staging")[:-1] + ',"us\\u0065r":"alice"}'
    spaced = '{"stage": "Staging", "user": "mallory", "user": "alice"}'
    for forged in (duplicated, escaped, spaced):
        refused(annotate("mallory", forged), message)
    assert annotate("mallory", stage_request("alice", "Staging", comment='","user":"mallory","time":"')).returncode
    assert annotate("mallory", stage_request("mallory", "Staging", comment='quoted "why"\n')).returncode == 0

    staged = kiln.kiln("stage", "mv/iris-4.0.0", "Production", "-n", namespace, "--as", "erin", "--wait", "0")
    assert staged.returncode == 0
    annotations = kiln.model_version(namespace, "iris-4.0.0")["metadata"]["annotations"]
    request = json.loads(annotations["kiln.dev/stage-request"])
    assert (request["user"], request["stage"]) == ("erin", "Production")
    # A change elsewhere keeps erin's request as it is: only a changed one must name the user.
    relabeled = patch(kiln, namespace, "mallory", "iris-4.0.0", {"metadata": {"labels": {"team": "search"}}})
    assert relabeled.returncode == 0, relabeled.stderr


def test_the_operators_service_account_may_write_the_stage_request_it_supersedes_with(
    kiln: Kiln, namespace: str
) -> None:
    """Promoting a version archives the previous Production one for the user who promoted the new one."""
    kiln.apply(namespace, model_version("iris-5.0.0", "5.0.0", ARTIFACT))
    now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    superseded = json.dumps({"stage": "Archived", "user": "alice", "time": now, "comment": "superseded"})
    body = {"metadata": {"annotations": {"kiln.dev/stage-request": superseded}}, "spec": {"stage": "Archived"}}

    assert patch(kiln, namespace, OPERATOR, "iris-5.0.0", body, ADMIN_GROUP).returncode == 0
    as_operator = patch(kiln, namespace, OPERATOR, "iris-5.0.0", {"spec": {"approvals": [approval("alice")]}},
                        ADMIN_GROUP)  # fmt: skip
    assert re.search(r"spec\.approvals\[0\]\.approver must be the user making the request \(system:serviceaccount:",
                     as_operator.stderr), as_operator.stderr  # fmt: skip


def test_a_version_must_be_named_for_its_model_and_version_so_a_second_one_is_refused(
    kiln: Kiln, namespace: str
) -> None:
    misnamed = model_version("iris-latest", "6.0.0+build.7", ARTIFACT)
    refused(
        create(kiln, namespace, "alice", misnamed),
        "metadata.name must be iris-6.0.0-build.7 (spec.modelName-spec.version in lower case, + as -)",
        policy="kiln-version-names",
    )
    assert (
        create(kiln, namespace, "alice", model_version("iris-6.0.0-build.7", "6.0.0+build.7", ARTIFACT)).returncode == 0
    )

    again = create(kiln, namespace, "bob", model_version("iris-6.0.0-build.7", "6.0.0+build.7", ARTIFACT))

    assert again.returncode != 0
    assert 'modelversions.kiln.dev "iris-6.0.0-build.7" already exists' in again.stderr
    stored = kiln.model_version(namespace, "iris-6.0.0-build.7")
    assert stored["spec"]["version"] == "6.0.0+build.7"
    names = kiln.kubectl("get", "mv", "-n", namespace, "-o", "name").stdout.split()
    assert names == ["modelversion.kiln.dev/iris-6.0.0-build.7"]
