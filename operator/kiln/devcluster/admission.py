"""What an admission request is, and which admission rules it matches, as kube-apiserver decides it.

ValidatingAdmissionPolicies and admission webhooks share the matching:
`rules`/`resourceRules` (apiGroups, apiVersions, resources with subresources
and wildcards, operations, scope), `excludeResourceRules`, the
`namespaceSelector` (over the namespace's labels; a Namespace is matched by its
own), the `objectSelector` (over the new or the old object's labels) and
`matchConditions` (CEL over `object`, `oldObject`, `request`, `params`). The
AdmissionReview a webhook receives and the `request` variable CEL sees are
built here too.

Pure functions over dicts; no I/O.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import cel

from kiln.devcluster import celext, identity, selectors

Object = dict[str, Any]

CREATE, UPDATE, DELETE, CONNECT = "CREATE", "UPDATE", "DELETE", "CONNECT"
OPTIONS_KIND = {CREATE: "CreateOptions", UPDATE: "UpdateOptions", DELETE: "DeleteOptions"}
FAIL, IGNORE = "Fail", "Ignore"


@dataclass(frozen=True)
class Request:
    """One admission request: what is written, how, and by whom."""

    operation: str
    group: str
    version: str
    resource: str
    kind: str
    namespace: str
    name: str
    user: identity.UserInfo
    namespaced: bool = True
    subresource: str = ""
    dry_run: bool = False
    uid: str = ""
    namespace_labels: dict[str, str] = field(default_factory=dict)

    @property
    def qualified_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def to_cel(self) -> Object:
        """The `request` variable of CEL expressions (admission.k8s.io/v1 AdmissionRequest)."""
        kind = {"group": self.group, "version": self.version, "kind": self.kind}
        resource = {"group": self.group, "version": self.version, "resource": self.resource}
        return {
            "uid": self.uid,
            "kind": kind,
            "resource": resource,
            "subResource": self.subresource,
            "requestKind": kind,
            "requestResource": resource,
            "requestSubResource": self.subresource,
            "name": self.name,
            "namespace": self.namespace,
            "operation": self.operation,
            "userInfo": {"username": self.user.username, "groups": list(self.user.groups), "uid": "", "extra": {}},
            "dryRun": self.dry_run,
        }

    def review(self, obj: Object | None, old: Object | None) -> Object:
        """The AdmissionReview v1 a webhook is sent."""
        body = self.to_cel()
        if not body["subResource"]:
            del body["subResource"], body["requestSubResource"]
        if not body["namespace"]:
            del body["namespace"]
        body["object"] = obj
        body["oldObject"] = old
        options_kind = OPTIONS_KIND.get(self.operation)
        if options_kind:
            body["options"] = {"apiVersion": "meta.k8s.io/v1", "kind": options_kind}
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


def _listed(values: list[str] | None, wanted: str) -> bool:
    return bool(values) and ("*" in values or wanted in values)  # type: ignore[operator]


def _resource_listed(resources: list[str] | None, request: Request) -> bool:
    for entry in resources or []:
        resource, _, sub = entry.partition("/")
        if resource not in ("*", request.resource):
            continue
        if (not sub and not request.subresource) or sub == "*" or (sub and sub == request.subresource):
            return True
    return False


def rule_matches(rule: Object, request: Request) -> bool:
    """One RuleWithOperations (or NamedRuleWithOperations: `resourceNames` narrows it further)."""
    scope = rule.get("scope") or "*"
    if scope == "Cluster" and request.namespaced:
        return False
    if scope == "Namespaced" and not request.namespaced:
        return False
    names = rule.get("resourceNames")
    return (
        _listed(rule.get("operations"), request.operation)
        and _listed(rule.get("apiGroups"), request.group)
        and _listed(rule.get("apiVersions"), request.version)
        and _resource_listed(rule.get("resources"), request)
        and (not names or request.name in names)
    )


def _labels(obj: Object | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def namespace_selected(selector: Object | None, request: Request, obj: Object | None) -> bool:
    """A cluster-scoped object other than a Namespace is always selected; a Namespace by its labels."""
    if not selector:
        return True
    if request.resource == "namespaces" and request.group == "":
        return selectors.selector_matches(selector, _labels(obj))
    if not request.namespaced:
        return True
    return selectors.selector_matches(selector, request.namespace_labels)


def object_selected(selector: Object | None, obj: Object | None, old: Object | None) -> bool:
    """Selected when the new object or the old one has matching labels."""
    if not selector:
        return True
    return any(
        candidate is not None and selectors.selector_matches(selector, _labels(candidate)) for candidate in (obj, old)
    )


def resources_match(match: Object | None, request: Request, obj: Object | None, old: Object | None) -> bool:
    """A MatchResources: resourceRules (all when absent), excludeResourceRules and both selectors."""
    match = match or {}
    rules = match.get("resourceRules")
    if rules is not None and not any(rule_matches(rule, request) for rule in rules):
        return False
    if any(rule_matches(rule, request) for rule in match.get("excludeResourceRules") or []):
        return False
    return namespace_selected(match.get("namespaceSelector"), request, obj) and object_selected(
        match.get("objectSelector"), obj, old
    )


def webhook_matches(webhook: Object, request: Request, obj: Object | None, old: Object | None) -> bool:
    """A webhook's rules and selectors (its matchConditions are CEL, see `conditions_hold`)."""
    return (
        any(rule_matches(rule, request) for rule in webhook.get("rules") or [])
        and namespace_selected(webhook.get("namespaceSelector"), request, obj)
        and object_selected(webhook.get("objectSelector"), obj, old)
    )


class EvaluationError(Exception):
    """A CEL expression that failed to compile or evaluate; worded as kube-apiserver words it."""


@functools.cache
def _program(expression: str) -> Any:
    return cel.compile(expression)


def evaluate(expression: str, variables: Object) -> Any:
    try:
        return _program(expression).execute(celext.context(variables))
    except Exception as error:  # the CEL library raises several types, for compile and for evaluation errors
        raise EvaluationError(f"expression '{expression}' resulted in error: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"no such key: {error.args[0]}"
    return str(error) or type(error).__name__


def variables(request: Request, obj: Object | None, old: Object | None, params: Object | None = None) -> Object:
    """What admission CEL sees; `oldObject` is null on create and `object` on delete."""
    return {
        "object": obj,
        "oldObject": old,
        "request": request.to_cel(),
        "params": params,
        "namespaceObject": {"metadata": {"name": request.namespace, "labels": request.namespace_labels}}
        if request.namespaced
        else None,
    }


def conditions_hold(conditions: list[Object] | None, context: Object) -> bool:
    """Whether every matchCondition holds; an error raises EvaluationError for failurePolicy to judge.

    As kube-apiserver does, a false condition wins over an error in another one."""
    failed: EvaluationError | None = None
    for condition in conditions or []:
        try:
            holds = evaluate(condition["expression"], context)
        except EvaluationError as error:
            failed = failed or error
            continue
        if holds is not True:
            return False
    if failed is not None:
        raise EvaluationError(f"failed to evaluate match condition: {failed}")
    return True
