"""Admission matching and ValidatingAdmissionPolicy evaluation in the dev cluster (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kiln.devcluster import admission, identity, policies

Object = dict[str, Any]
ALICE = identity.UserInfo("alice", ("devs", identity.AUTHENTICATED))


def request(**overrides: Any) -> admission.Request:
    fields: dict[str, Any] = {
        "operation": admission.CREATE,
        "group": "apps",
        "version": "v1",
        "resource": "deployments",
        "kind": "Deployment",
        "namespace": "team-a",
        "name": "web",
        "user": ALICE,
        "namespace_labels": {"env": "prod"},
    }
    return admission.Request(**(fields | overrides))


def deployment(labels: dict[str, str] | None = None, replicas: int = 1) -> Object:
    return {"metadata": {"name": "web", "namespace": "team-a", "labels": labels or {}}, "spec": {"replicas": replicas}}


RULE = {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}


@pytest.mark.parametrize(
    ("rule", "changes", "matches"),
    [
        (RULE, {}, True),
        (RULE, {"operation": admission.DELETE}, False),
        (RULE | {"apiGroups": ["*"]}, {"group": "batch"}, True),
        (RULE, {"group": "batch"}, False),
        (RULE, {"subresource": "status"}, False),
        (RULE | {"resources": ["deployments/status"]}, {"subresource": "status"}, True),
        (RULE | {"resources": ["*/*"]}, {"subresource": "scale"}, True),
        (RULE | {"resources": ["*"]}, {"subresource": "scale"}, False),
        (RULE | {"scope": "Cluster"}, {}, False),
        (RULE | {"operations": ["*"]}, {"operation": admission.DELETE}, True),
        (RULE | {"resourceNames": ["api"]}, {}, False),
    ],
)
def test_a_rule_matches_groups_versions_resources_subresources_operations_and_scope(
    rule: Object, changes: dict[str, Any], matches: bool
) -> None:
    assert admission.rule_matches(rule, request(**changes)) is matches


def test_selectors_look_at_the_namespace_and_at_either_the_new_or_the_old_object() -> None:
    match = {"resourceRules": [RULE], "namespaceSelector": {"matchLabels": {"env": "prod"}}}
    assert admission.resources_match(match, request(), deployment(), None)
    assert not admission.resources_match(match, request(namespace_labels={"env": "dev"}), deployment(), None)
    by_label = {"objectSelector": {"matchLabels": {"tier": "web"}}}
    assert admission.resources_match(by_label, request(), deployment(), deployment({"tier": "web"}))
    assert not admission.resources_match(by_label, request(), deployment(), None)
    excluded = {"resourceRules": [RULE], "excludeResourceRules": [RULE | {"resourceNames": ["web"]}]}
    assert not admission.resources_match(excluded, request(), deployment(), None)


def test_a_false_match_condition_wins_over_an_error_in_another() -> None:
    context = admission.variables(request(), deployment(), None)
    assert not admission.conditions_hold([{"expression": "object.nope == 1"}, {"expression": "false"}], context)
    with pytest.raises(admission.EvaluationError, match="failed to evaluate match condition"):
        admission.conditions_hold([{"expression": "object.nope == 1"}, {"expression": "true"}], context)


def vap(validations: list[Object], **spec: Any) -> Object:
    return {"metadata": {"name": "p"}, "spec": {"matchConstraints": {"resourceRules": [RULE]},
                                               "validations": validations} | spec}  # fmt: skip


def bind(*actions: str, **spec: Any) -> Object:
    return {"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": list(actions)} | spec}


def test_a_failed_validation_is_denied_with_its_message_or_the_expression() -> None:
    policy = vap([{"expression": "object.spec.replicas <= 3"}, {"expression": "'team' in object.metadata.labels",
                                                               "message": "name a team"}])  # fmt: skip
    failures = policies.evaluate(policy, bind("Deny"), request(), deployment(replicas=5), None)
    assert [f.message for f in failures] == ["failed expression: object.spec.replicas <= 3", "name a team"]
    denied = policies.verdict(failures).denied
    assert denied is not None
    assert denied.denial == (
        "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: failed expression: object.spec.replicas <= 3"
    )


def test_message_expressions_variables_params_and_the_user_are_in_scope() -> None:
    policy = vap(
        [{"expression": "variables.replicas <= int(params.data.max)",
          "messageExpression": "request.userInfo.username + ' asked for ' + string(variables.replicas)"}],
        variables=[{"name": "replicas", "expression": "object.spec.replicas"}],
    )  # fmt: skip
    failures = policies.evaluate(policy, bind("Deny"), request(), deployment(replicas=9), None,
                                 params={"data": {"max": "4"}})  # fmt: skip
    assert [f.message for f in failures] == ["alice asked for 9"]


@pytest.mark.parametrize(("failure_policy", "failed"), [("Fail", True), ("Ignore", False)])
def test_an_evaluation_error_fails_only_under_failure_policy_fail(failure_policy: str, failed: bool) -> None:
    policy = vap([{"expression": "object.spec.missing > 1"}], failurePolicy=failure_policy)
    failures = policies.evaluate(policy, bind("Deny"), request(), deployment(), None)
    assert bool(failures) is failed
    if failed:
        assert failures[0].message == "expression 'object.spec.missing > 1' resulted in error: no such key: missing"


def test_warn_and_audit_actions_admit_with_a_warning_and_an_annotation() -> None:
    failures = policies.evaluate(vap([{"expression": "false", "message": "no"}]), bind("Warn", "Audit"),
                                 request(), deployment(), None)  # fmt: skip
    verdict = policies.verdict(failures)
    assert verdict.denied is None
    assert verdict.warnings == ("Validation failed for ValidatingAdmissionPolicy 'p' with binding 'b': no",)
    audited = json.loads(verdict.audit_annotations[policies.AUDIT_KEY])
    assert audited == [{"message": "no", "policy": "p", "binding": "b", "expressionIndex": 0,
                        "validationActions": ["Warn", "Audit"]}]  # fmt: skip


def test_a_binding_narrows_its_policy_and_missing_params_follow_the_not_found_action() -> None:
    policy = vap([{"expression": "true"}])
    narrowed = bind("Deny", matchResources={"namespaceSelector": {"matchLabels": {"env": "dev"}}})
    assert policies.binding_matches(policy, bind("Deny"), request(), deployment(), None)
    assert not policies.binding_matches(policy, narrowed, request(), deployment(), None)
    assert [f.message for f in policies.missing_params(policy, bind("Deny", paramRef={"name": "x"}))] == [
        policies.NO_PARAMS
    ]
    allowing = bind("Deny", paramRef={"name": "x", "parameterNotFoundAction": "Allow"})
    assert policies.missing_params(policy, allowing) == []


def test_a_webhook_review_carries_the_request_as_kube_sends_it() -> None:
    review = request(operation=admission.UPDATE).review(deployment(replicas=2), deployment())
    body = review["request"]
    assert review["kind"] == "AdmissionReview"
    assert body["resource"] == {"group": "apps", "version": "v1", "resource": "deployments"}
    assert body["userInfo"]["username"] == "alice"
    assert body["options"] == {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"}
    assert body["oldObject"]["spec"]["replicas"] == 1
