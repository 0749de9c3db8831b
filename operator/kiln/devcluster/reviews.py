"""The authorization.k8s.io/v1 reviews: may this user do this (SubjectAccessReview and its Self- and
Local- forms), and what may I do here (SelfSubjectRulesReview), which `kubectl auth can-i` asks.

Pure: a review's body, who asks, and the authorizer's answers in; the review with its status out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kiln.devcluster import authorization, errors, identity, kinds, schema

Object = dict[str, Any]
Decide = Callable[[authorization.Attributes], authorization.Decision]
RulesFor = Callable[[identity.UserInfo, str], authorization.RuleSet]

GROUP = "authorization.k8s.io"
SELF_SUBJECT_ACCESS_REVIEW = "SelfSubjectAccessReview"
SUBJECT_ACCESS_REVIEW = "SubjectAccessReview"
LOCAL_SUBJECT_ACCESS_REVIEW = "LocalSubjectAccessReview"
SELF_SUBJECT_RULES_REVIEW = "SelfSubjectRulesReview"

TYPES: tuple[kinds.ResourceType, ...] = tuple(
    kinds.ResourceType(GROUP, "v1", kind, plural, namespaced=namespaced, verbs=("create",))
    for kind, plural, namespaced in (
        (SELF_SUBJECT_ACCESS_REVIEW, "selfsubjectaccessreviews", False),
        (SUBJECT_ACCESS_REVIEW, "subjectaccessreviews", False),
        (LOCAL_SUBJECT_ACCESS_REVIEW, "localsubjectaccessreviews", True),
        (SELF_SUBJECT_RULES_REVIEW, "selfsubjectrulesreviews", False),
    )
)


def serves(resource: kinds.ResourceType) -> bool:
    return resource.group == GROUP


def review(
    kind: str, namespace: str, user: identity.UserInfo, body: Object, *, decide: Decide, rules: RulesFor
) -> Object:
    """The review `body` (of `kind`, posted in `namespace` for the Local one) answered for `user`."""
    spec = body.get("spec") or {}
    if kind == SELF_SUBJECT_RULES_REVIEW:
        status = _rules_status(rules(user, str(spec.get("namespace") or "")))
    else:
        subject = user if kind == SELF_SUBJECT_ACCESS_REVIEW else _subject(kind, spec)
        if kind == LOCAL_SUBJECT_ACCESS_REVIEW:
            _check_local_namespace(spec, namespace)
        decision = decide(_attributes(kind, subject, spec))
        status = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
    metadata = {**(body.get("metadata") or {}), "creationTimestamp": None}
    if kind == LOCAL_SUBJECT_ACCESS_REVIEW:
        metadata["namespace"] = namespace
    return {"kind": kind, "apiVersion": f"{GROUP}/v1", "metadata": metadata, "spec": spec, "status": status}


def _invalid(kind: str, field: str, value: Any, detail: str) -> errors.ApiError:
    return errors.invalid(kind, GROUP, "", [schema.FieldError(field, "FieldValueInvalid", detail, value)])


def _subject(kind: str, spec: Object) -> identity.UserInfo:
    user, groups = str(spec.get("user") or ""), [str(g) for g in spec.get("groups") or []]
    if not user and not groups:
        raise _invalid(kind, "spec.user", "", "at least one of user or group must be specified")
    return identity.UserInfo(user, tuple(groups))


def _check_local_namespace(spec: Object, namespace: str) -> None:
    asked = (spec.get("resourceAttributes") or {}).get("namespace")
    if asked != namespace:
        detail = "must match metadata.namespace"
        raise _invalid(LOCAL_SUBJECT_ACCESS_REVIEW, "spec.resourceAttributes.namespace", asked, detail)


def _attributes(kind: str, user: identity.UserInfo, spec: Object) -> authorization.Attributes:
    resource: Object | None = spec.get("resourceAttributes")
    non_resource: Object | None = spec.get("nonResourceAttributes")
    if (resource is None) == (non_resource is None):
        detail = "exactly one of nonResourceAttributes or resourceAttributes must be specified"
        raise _invalid(kind, "spec.resourceAttributes", resource, detail)
    if non_resource is not None:
        return authorization.Attributes(
            user, str(non_resource.get("verb", "")), resource_request=False, path=str(non_resource.get("path", ""))
        )
    assert resource is not None
    return authorization.Attributes(
        user,
        str(resource.get("verb", "")),
        api_group=str(resource.get("group", "")),
        api_version=str(resource.get("version", "")),
        namespace=str(resource.get("namespace", "")),
        resource=str(resource.get("resource", "")),
        subresource=str(resource.get("subresource", "")),
        name=str(resource.get("name", "")),
    )


def _rules_status(found: authorization.RuleSet) -> Object:
    resource_rules, non_resource_rules = [], []
    for rule in found.rules:
        if rule.get("nonResourceURLs"):
            non_resource_rules.append(
                {"verbs": list(rule.get("verbs") or []), "nonResourceURLs": rule["nonResourceURLs"]}
            )
            continue
        shown = {"verbs": list(rule.get("verbs") or []), "apiGroups": list(rule.get("apiGroups") or [])}
        shown["resources"] = list(rule.get("resources") or [])
        if rule.get("resourceNames"):
            shown["resourceNames"] = list(rule["resourceNames"])
        resource_rules.append(shown)
    status: Object = {
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": bool(found.errors),
    }
    if found.errors:
        status["evaluationError"] = ", ".join(found.errors)
    return status
