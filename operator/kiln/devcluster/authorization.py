"""RBAC authorization, as kube-apiserver's RBAC authorizer decides it: pure functions, no I/O.

A request's attributes (who, which verb, on what) and the cluster's Roles,
ClusterRoles, RoleBindings and ClusterRoleBindings in; a decision and its
reason out. Members of `system:masters` are allowed everything before RBAC is
asked, as kube-apiserver's privileged-group authorizer does. ClusterRoles with
an `aggregationRule` hold the rules of the ClusterRoles their selectors pick,
as the clusterrole-aggregation controller keeps them. Refusals are worded as
kube-apiserver words them, since users paste them into searches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kiln.devcluster import errors, identity, selectors

Object = dict[str, Any]
Rule = dict[str, Any]

MASTERS = "system:masters"
RBAC_GROUP = "rbac.authorization.k8s.io"
ALL = "*"
ALWAYS_ALLOW = "AlwaysAllow"
RBAC = "RBAC"
MODES = (ALWAYS_ALLOW, RBAC)


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do, as kube-apiserver's authorizer.Attributes carries it."""

    user: identity.UserInfo
    verb: str
    resource_request: bool = True
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class Policy:
    """The RBAC objects of a cluster, as stored."""

    roles: Sequence[Object] = ()
    cluster_roles: Sequence[Object] = ()
    role_bindings: Sequence[Object] = ()
    cluster_role_bindings: Sequence[Object] = ()


@dataclass(frozen=True)
class RuleSet:
    """The rules that apply to a user in a namespace, and the bindings whose roles could not be found."""

    rules: tuple[Rule, ...] = ()
    errors: tuple[str, ...] = field(default=())


# matching one rule


def _verb_matches(rule: Rule, verb: str) -> bool:
    return any(v in (ALL, verb) for v in rule.get("verbs") or ())


def _group_matches(rule: Rule, group: str) -> bool:
    return any(g in (ALL, group) for g in rule.get("apiGroups") or ())


def _resource_matches(rule: Rule, resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for wanted in rule.get("resources") or ():
        if wanted in (ALL, combined):
            return True
        if subresource and wanted == f"*/{subresource}":
            return True
    return False


def _name_matches(rule: Rule, name: str) -> bool:
    names = rule.get("resourceNames") or ()
    return not names or name in names


def _url_matches(rule: Rule, path: str) -> bool:
    for wanted in rule.get("nonResourceURLs") or ():
        if wanted in (ALL, path):
            return True
        if wanted.endswith("*") and path.startswith(wanted[:-1]):
            return True
    return False


def rule_allows(attributes: Attributes, rule: Rule) -> bool:
    if not _verb_matches(rule, attributes.verb):
        return False
    if not attributes.resource_request:
        return _url_matches(rule, attributes.path)
    return (
        _group_matches(rule, attributes.api_group)
        and _resource_matches(rule, attributes.resource, attributes.subresource)
        and _name_matches(rule, attributes.name)
    )


# subjects and bindings


def _service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def applies_to(user: identity.UserInfo, subject: Object, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return bool(user.username == name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return bool(namespace) and user.username == _service_account_user(namespace, name)
    return False


def _describe_subject(subject: Object, binding_namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return f'ServiceAccount "{subject.get("name", "")}/{namespace}"'
    return f'{subject.get("kind")} "{subject.get("name", "")}"'


def _describe_binding(binding: Object, subject: Object) -> str:
    metadata, ref = binding["metadata"], binding.get("roleRef") or {}
    namespace = metadata.get("namespace", "")
    if namespace:
        source = f'RoleBinding "{metadata["name"]}/{namespace}"'
    else:
        source = f'ClusterRoleBinding "{metadata["name"]}"'
    return f'{source} of {ref.get("kind")} "{ref.get("name")}" to {_describe_subject(subject, namespace)}'


def _matching_subject(user: identity.UserInfo, binding: Object) -> Object | None:
    namespace = binding["metadata"].get("namespace", "")
    return next((s for s in binding.get("subjects") or () if applies_to(user, s, namespace)), None)


# aggregation


def aggregate(cluster_roles: Sequence[Object]) -> list[Object]:
    """The ClusterRoles with every aggregationRule applied, as the aggregation controller settles them.

    Aggregated roles may pick other aggregated roles (admin picks edit, edit picks view), so the
    rules are gathered again until nothing changes; a cycle stops growing once it holds every rule.
    """
    roles = {role["metadata"]["name"]: role for role in cluster_roles}
    for _ in range(len(roles) + 1):
        changed = False
        for name, role in sorted(roles.items()):
            selectors_ = (role.get("aggregationRule") or {}).get("clusterRoleSelectors")
            if not selectors_:
                continue
            rules = _aggregated_rules(name, selectors_, roles)
            if rules != (role.get("rules") or []):
                roles[name] = {**role, "rules": rules}
                changed = True
        if not changed:
            break
    return [roles[role["metadata"]["name"]] for role in cluster_roles]


def _aggregated_rules(name: str, role_selectors: list[Object], roles: dict[str, Object]) -> list[Rule]:
    rules: list[Rule] = []
    for other_name, other in sorted(roles.items()):
        if other_name == name:
            continue
        labels = other["metadata"].get("labels") or {}
        if any(selectors.selector_matches(selector, labels) for selector in role_selectors):
            rules.extend(rule for rule in other.get("rules") or [] if rule not in rules)
    return rules


# the decision


def _role_rules(policy: Policy, ref: Object, namespace: str, cluster_roles: dict[str, Object]) -> list[Rule] | str:
    """The rules of the role a binding refers to, or why they cannot be had."""
    kind, name = ref.get("kind"), ref.get("name", "")
    if kind == "ClusterRole":
        role = cluster_roles.get(name)
        if role is None:
            return f'clusterrole.{RBAC_GROUP} "{name}" not found'
        return list(role.get("rules") or [])
    if kind == "Role" and namespace:
        for role in policy.roles:
            if role["metadata"]["name"] == name and role["metadata"].get("namespace") == namespace:
                return list(role.get("rules") or [])
        return f'role.{RBAC_GROUP} "{name}" not found'
    return f'unsupported role reference kind: "{kind}"'


def _visit(policy: Policy, user: identity.UserInfo, namespace: str) -> Iterator[tuple[str, list[Rule] | str]]:
    """(description of the binding, its rules or an error) for every binding of the user that applies
    in the namespace: all ClusterRoleBindings, then the RoleBindings of that namespace."""
    cluster_roles = {role["metadata"]["name"]: role for role in aggregate(policy.cluster_roles)}
    bindings = list(policy.cluster_role_bindings)
    if namespace:
        bindings += [b for b in policy.role_bindings if b["metadata"].get("namespace") == namespace]
    for binding in bindings:
        subject = _matching_subject(user, binding)
        if subject is None:
            continue
        binding_namespace = binding["metadata"].get("namespace", "")
        rules = _role_rules(policy, binding.get("roleRef") or {}, binding_namespace, cluster_roles)
        yield _describe_binding(binding, subject), rules


def authorize(policy: Policy, attributes: Attributes) -> Decision:
    """Allowed, with the binding that allows it; or denied, with the missing roles as the reason."""
    if MASTERS in attributes.user.groups:
        return Decision(True)
    problems: list[str] = []
    for source, rules in _visit(policy, attributes.user, attributes.namespace):
        if isinstance(rules, str):
            problems.append(rules)
            continue
        if any(rule_allows(attributes, rule) for rule in rules):
            return Decision(True, f"RBAC: allowed by {source}")
    return Decision(False, _rbac_reason(problems))


def _rbac_reason(problems: list[str]) -> str:
    if not problems:
        return ""
    return "RBAC: " + (problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]")


def rules_for(policy: Policy, user: identity.UserInfo, namespace: str) -> RuleSet:
    """Every rule that applies to the user in the namespace, as a SelfSubjectRulesReview lists them."""
    rules: list[Rule] = []
    problems: list[str] = []
    for _, found in _visit(policy, user, namespace):
        if isinstance(found, str):
            problems.append(found)
        else:
            rules.extend(found)
    return RuleSet(tuple(rules), tuple(problems))


# refusals


def forbidden_message(attributes: Attributes) -> str:
    """kube-apiserver's responsewriters.forbiddenMessage."""
    user = attributes.user.username
    if not attributes.resource_request:
        return f'User "{user}" cannot {attributes.verb} path "{attributes.path}"'
    resource = attributes.resource
    if attributes.subresource:
        resource += f"/{attributes.subresource}"
    where = f'in the namespace "{attributes.namespace}"' if attributes.namespace else "at the cluster scope"
    return f'User "{user}" cannot {attributes.verb} resource "{resource}" in API group "{attributes.api_group}" {where}'


def forbidden(attributes: Attributes, reason: str) -> errors.ApiError:
    """The 403 a refused request gets, as responsewriters.Forbidden and apierrors.NewForbidden make it."""
    why = forbidden_message(attributes) + (f": {reason}" if reason else "")
    if not attributes.resource_request:
        return errors.ApiError(403, "Forbidden", f"forbidden: {why}", {})
    qualified = f"{attributes.resource}.{attributes.api_group}" if attributes.api_group else attributes.resource
    details: Object = {"kind": attributes.resource}
    if attributes.api_group:
        details["group"] = attributes.api_group
    if attributes.name:
        details["name"] = attributes.name
        return errors.ApiError(403, "Forbidden", f'{qualified} "{attributes.name}" is forbidden: {why}', details)
    return errors.ApiError(403, "Forbidden", f"{qualified} is forbidden: {why}", details)
