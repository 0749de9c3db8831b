"""The dev cluster's RBAC authorizer, request attributes and refusals, decided as kube-apiserver decides them."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.devcluster import authorization, bootstrappolicy, identity, requestinfo, reviews
from kiln.devcluster.authorization import Attributes

Object = dict[str, Any]

ALICE = identity.UserInfo("alice", ("reviewers", identity.AUTHENTICATED))
TRAINER = identity.UserInfo(
    "system:serviceaccount:team-a:trainer",
    ("system:serviceaccounts", "system:serviceaccounts:team-a", identity.AUTHENTICATED),
)
ANONYMOUS = identity.UserInfo(identity.ANONYMOUS, (identity.UNAUTHENTICATED,))


def role(namespace: str, name: str, *rules: Object) -> Object:
    return {"kind": "Role", "metadata": {"namespace": namespace, "name": name}, "rules": list(rules)}


def cluster_role(name: str, *rules: Object, labels: dict[str, str] | None = None, aggregate: str = "") -> Object:
    obj: Object = {"kind": "ClusterRole", "metadata": {"name": name, "labels": labels or {}}, "rules": list(rules)}
    if aggregate:
        obj["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {aggregate: "true"}}]}
    return obj


def binding(namespace: str, name: str, ref_kind: str, ref: str, *subjects: Object) -> Object:
    metadata = {"namespace": namespace, "name": name} if namespace else {"name": name}
    return {"metadata": metadata, "roleRef": {"kind": ref_kind, "name": ref}, "subjects": list(subjects)}


def user(name: str) -> Object:
    return {"kind": "User", "name": name}


def group(name: str) -> Object:
    return {"kind": "Group", "name": name}


def service_account(name: str, namespace: str = "") -> Object:
    return {"kind": "ServiceAccount", "name": name, **({"namespace": namespace} if namespace else {})}


def rule(verbs: list[str], groups: list[str], resources: list[str], names: list[str] | None = None) -> Object:
    found: Object = {"verbs": verbs, "apiGroups": groups, "resources": resources}
    if names:
        found["resourceNames"] = names
    return found


def pods(who: identity.UserInfo = ALICE, verb: str = "get", **fields: str) -> Attributes:
    return Attributes(who, verb, **{"namespace": "team-a", "resource": "pods", **fields})


def alice_may(*rules: Object) -> authorization.Policy:
    """Alice bound, in team-a, to a Role of these rules."""
    return authorization.Policy(
        roles=[role("team-a", "r", *rules)],
        role_bindings=[binding("team-a", "b", "Role", "r", user("alice"))],
    )


RULE_CASES = [
    ("an exact rule", rule(["get"], [""], ["pods"]), pods(), True),
    ("another verb", rule(["list"], [""], ["pods"]), pods(), False),
    ("every verb", rule(["*"], [""], ["pods"]), pods(verb="deletecollection"), True),
    ("another group", rule(["get"], ["apps"], ["pods"]), pods(), False),
    ("every group", rule(["get"], ["*"], ["pods"]), pods(), True),
    ("another resource", rule(["get"], [""], ["services"]), pods(), False),
    ("every resource", rule(["get"], [""], ["*"]), pods(), True),
    ("the parent for a subresource", rule(["get"], [""], ["pods"]), pods(subresource="log"), False),
    ("the subresource", rule(["get"], [""], ["pods/log"]), pods(subresource="log"), True),
    ("a subresource for the parent", rule(["get"], [""], ["pods/log"]), pods(), False),
    ("*/status for any status", rule(["update"], ["*"], ["*/status"]), pods(verb="update", subresource="status"), True),
    ("*/status for scale", rule(["update"], ["*"], ["*/status"]), pods(verb="update", subresource="scale"), False),
    (
        "deployments/scale",
        rule(["patch"], ["apps"], ["deployments/scale"]),
        pods(verb="patch", api_group="apps", resource="deployments", subresource="scale", name="web"),
        True,
    ),
    ("pods/binding", rule(["create"], [""], ["pods/binding"]), pods(verb="create", subresource="binding"), True),
    ("a listed name", rule(["get"], [""], ["pods"], ["web"]), pods(name="web"), True),
    ("another name", rule(["get"], [""], ["pods"], ["web"]), pods(name="db"), False),
    ("names for a list of all", rule(["list"], [""], ["pods"], ["web"]), pods(verb="list"), False),
]


@pytest.mark.parametrize(("case", "granted", "asked", "allowed"), RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_a_rule_matches_on_verb_group_resource_subresource_and_name(
    case: str, granted: Object, asked: Attributes, allowed: bool
) -> None:
    assert authorization.authorize(alice_may(granted), asked).allowed is allowed


URL_CASES = [
    ("/healthz", ["/healthz"], True),
    ("/healthz/ping", ["/healthz"], False),
    ("/apis/apps/v1", ["/apis/*"], True),
    ("/apis", ["/apis/*"], False),
    ("/openapi/v2", ["/openapi/*"], True),
    ("/version", ["*"], True),
    ("/foo", ["/version"], False),
]


@pytest.mark.parametrize(("path", "urls", "allowed"), URL_CASES)
def test_non_resource_urls_match_exactly_or_by_a_trailing_star(path: str, urls: list[str], allowed: bool) -> None:
    policy = authorization.Policy(
        cluster_roles=[cluster_role("urls", {"verbs": ["get"], "nonResourceURLs": urls})],
        cluster_role_bindings=[binding("", "b", "ClusterRole", "urls", user("alice"))],
    )
    asked = Attributes(ALICE, "get", resource_request=False, path=path)
    assert authorization.authorize(policy, asked).allowed is allowed


SUBJECT_CASES = [
    ("the user", user("alice"), ALICE, True),
    ("another user", user("bob"), ALICE, False),
    ("a group of hers", group("reviewers"), ALICE, True),
    ("every authenticated user", group(identity.AUTHENTICATED), ALICE, True),
    ("unauthenticated users, for her", group(identity.UNAUTHENTICATED), ALICE, False),
    ("unauthenticated users", group(identity.UNAUTHENTICATED), ANONYMOUS, True),
    ("the service account", service_account("trainer", "team-a"), TRAINER, True),
    ("the account in the binding's namespace", service_account("trainer"), TRAINER, True),
    ("an account of that name elsewhere", service_account("trainer", "team-b"), TRAINER, False),
    ("all service accounts", group("system:serviceaccounts"), TRAINER, True),
    ("the namespace's service accounts", group("system:serviceaccounts:team-a"), TRAINER, True),
    ("another namespace's service accounts", group("system:serviceaccounts:team-b"), TRAINER, False),
]


@pytest.mark.parametrize(("case", "subject", "who", "allowed"), SUBJECT_CASES, ids=[c[0] for c in SUBJECT_CASES])
def test_a_binding_applies_to_its_users_groups_and_service_accounts(
    case: str, subject: Object, who: identity.UserInfo, allowed: bool
) -> None:
    policy = authorization.Policy(
        roles=[role("team-a", "reader", rule(["get"], [""], ["pods"]))],
        role_bindings=[binding("team-a", "b", "Role", "reader", subject)],
    )
    assert authorization.authorize(policy, pods(who)).allowed is allowed


def test_a_role_binding_grants_only_in_its_namespace_and_a_cluster_role_binding_everywhere() -> None:
    reader = cluster_role("pod-reader", rule(["get", "list"], [""], ["pods"]))
    in_team_a = authorization.Policy(
        cluster_roles=[reader], role_bindings=[binding("team-a", "b", "ClusterRole", "pod-reader", user("alice"))]
    )
    assert authorization.authorize(in_team_a, pods()).allowed
    assert not authorization.authorize(in_team_a, pods(namespace="team-b")).allowed
    assert not authorization.authorize(in_team_a, pods(verb="list", namespace="")).allowed
    everywhere = authorization.Policy(
        cluster_roles=[reader], cluster_role_bindings=[binding("", "b", "ClusterRole", "pod-reader", user("alice"))]
    )
    assert authorization.authorize(everywhere, pods(namespace="team-b")).allowed
    assert authorization.authorize(everywhere, pods(verb="list", namespace="")).allowed


def test_system_masters_may_do_anything_without_a_binding() -> None:
    assert authorization.authorize(
        authorization.Policy(), Attributes(identity.ADMIN, "delete", resource="nodes")
    ).allowed
    assert authorization.authorize(authorization.Policy(), pods(identity.ADMIN)).allowed


def test_the_allowing_binding_is_the_reason_as_kube_describes_it() -> None:
    policy = authorization.Policy(
        roles=[role("team-a", "reader", rule(["get"], [""], ["pods"]))],
        role_bindings=[binding("team-a", "read-pods", "Role", "reader", service_account("trainer"))],
    )
    decision = authorization.authorize(policy, pods(TRAINER))
    assert decision == authorization.Decision(
        True, 'RBAC: allowed by RoleBinding "read-pods/team-a" of Role "reader" to ServiceAccount "trainer/team-a"'
    )
    cluster_wide = authorization.Policy(
        cluster_roles=[cluster_role("reader", rule(["get"], [""], ["pods"]))],
        cluster_role_bindings=[binding("", "everyone", "ClusterRole", "reader", group(identity.AUTHENTICATED))],
    )
    assert authorization.authorize(cluster_wide, pods()).reason == (
        'RBAC: allowed by ClusterRoleBinding "everyone" of ClusterRole "reader" to Group "system:authenticated"'
    )


def test_a_binding_to_a_missing_role_is_the_reason_of_a_refusal() -> None:
    policy = authorization.Policy(
        role_bindings=[binding("team-a", "b", "Role", "gone", user("alice"))],
        cluster_role_bindings=[binding("", "c", "ClusterRole", "also-gone", user("alice"))],
    )
    decision = authorization.authorize(policy, pods())
    assert decision == authorization.Decision(
        False,
        'RBAC: [clusterrole.rbac.authorization.k8s.io "also-gone" not found, '
        'role.rbac.authorization.k8s.io "gone" not found]',
    )


def test_aggregated_cluster_roles_hold_the_rules_of_the_roles_their_selectors_pick_transitively() -> None:
    roles = [
        cluster_role("admin", aggregate="to-admin"),
        cluster_role("edit", rule(["stale"], [""], ["x"]), labels={"to-admin": "true"}, aggregate="to-edit"),
        cluster_role("view", labels={"to-edit": "true"}, aggregate="to-view"),
        cluster_role("kiln-view", rule(["get"], ["kiln.dev"], ["modelversions"]), labels={"to-view": "true"}),
        cluster_role("kiln-edit", rule(["create"], ["kiln.dev"], ["modelversions"]), labels={"to-edit": "true"}),
        cluster_role("unrelated", rule(["*"], ["*"], ["*"])),
    ]
    aggregated = {r["metadata"]["name"]: r["rules"] for r in authorization.aggregate(roles)}
    get, create = rule(["get"], ["kiln.dev"], ["modelversions"]), rule(["create"], ["kiln.dev"], ["modelversions"])
    assert aggregated["view"] == [get]
    assert aggregated["edit"] == [create, get]
    assert aggregated["admin"] == [create, get]

    policy = authorization.Policy(
        cluster_roles=roles, role_bindings=[binding("team-a", "b", "ClusterRole", "admin", user("alice"))]
    )
    asked = Attributes(ALICE, "get", api_group="kiln.dev", namespace="team-a", resource="modelversions")
    assert authorization.authorize(policy, asked).allowed
    assert not authorization.authorize(policy, Attributes(ALICE, "stale", namespace="team-a", resource="x")).allowed


def test_the_default_policy_lets_users_discover_and_review_themselves_but_touch_nothing() -> None:
    policy = authorization.Policy(
        cluster_roles=bootstrappolicy.CLUSTER_ROLES, cluster_role_bindings=bootstrappolicy.CLUSTER_ROLE_BINDINGS
    )
    for path in ("/api", "/apis/apps/v1", "/version", "/openapi/v2", "/healthz"):
        assert authorization.authorize(policy, Attributes(ALICE, "get", resource_request=False, path=path)).allowed
    assert authorization.authorize(
        policy, Attributes(ANONYMOUS, "get", resource_request=False, path="/healthz")
    ).allowed
    assert not authorization.authorize(
        policy, Attributes(ANONYMOUS, "get", resource_request=False, path="/api")
    ).allowed
    review = Attributes(ALICE, "create", api_group="authorization.k8s.io", resource="selfsubjectaccessreviews")
    assert authorization.authorize(policy, review).allowed
    assert not authorization.authorize(policy, pods()).allowed
    with_view = authorization.Policy(
        cluster_roles=bootstrappolicy.CLUSTER_ROLES,
        role_bindings=[binding("team-a", "b", "ClusterRole", "view", user("alice"))],
    )
    assert authorization.authorize(with_view, pods(subresource="log")).allowed
    assert not authorization.authorize(with_view, pods(verb="delete")).allowed
    scale = pods(verb="update", api_group="apps", resource="deployments", subresource="scale", name="web")
    with_edit = authorization.Policy(
        cluster_roles=bootstrappolicy.CLUSTER_ROLES,
        role_bindings=[binding("team-a", "b", "ClusterRole", "edit", user("alice"))],
    )
    assert authorization.authorize(with_edit, scale).allowed
    assert not authorization.authorize(with_edit, pods(verb="create", api_group="rbac.authorization.k8s.io",
                                                       resource="roles")).allowed  # fmt: skip


FORBIDDEN_CASES = [
    (
        pods(TRAINER, "list"),
        'pods is forbidden: User "system:serviceaccount:team-a:trainer" cannot list resource "pods" '
        'in API group "" in the namespace "team-a"',
        {"kind": "pods"},
    ),
    (
        pods(name="web"),
        'pods "web" is forbidden: User "alice" cannot get resource "pods" in API group "" in the namespace "team-a"',
        {"kind": "pods", "name": "web"},
    ),
    (
        pods(name="web", subresource="log"),
        'pods "web" is forbidden: User "alice" cannot get resource "pods/log" in API group "" '
        'in the namespace "team-a"',
        {"kind": "pods", "name": "web"},
    ),
    (
        Attributes(ALICE, "list", api_group="apps", resource="deployments"),
        'deployments.apps is forbidden: User "alice" cannot list resource "deployments" in API group "apps" '
        "at the cluster scope",
        {"kind": "deployments", "group": "apps"},
    ),
    (
        Attributes(ALICE, "impersonate", resource="users", name="bob"),
        'users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" '
        "at the cluster scope",
        {"kind": "users", "name": "bob"},
    ),
    (
        Attributes(ALICE, "get", resource_request=False, path="/foo"),
        'forbidden: User "alice" cannot get path "/foo"',
        {},
    ),
]


@pytest.mark.parametrize(("asked", "message", "details"), FORBIDDEN_CASES)
def test_a_refusal_is_a_403_worded_as_kube_apiserver_words_it(asked: Attributes, message: str, details: Object) -> None:
    refused = authorization.forbidden(asked, "")
    assert (refused.code, refused.reason, refused.message, refused.details) == (403, "Forbidden", message, details)


def test_a_refusal_with_a_reason_says_it_after_a_colon() -> None:
    refused = authorization.forbidden(pods(), 'RBAC: role.rbac.authorization.k8s.io "gone" not found')
    assert refused.message.endswith('in the namespace "team-a": RBAC: role.rbac.authorization.k8s.io "gone" not found')


ATTRIBUTE_CASES = [
    ("GET", "/api/v1/namespaces/ns/pods", {}, ("list", "", "ns", "pods", "", "")),
    ("GET", "/api/v1/namespaces/ns/pods", {"watch": "true"}, ("watch", "", "ns", "pods", "", "")),
    ("GET", "/api/v1/watch/namespaces/ns/pods/web", {}, ("watch", "", "ns", "pods", "web", "")),
    ("GET", "/api/v1/namespaces/ns/pods/web/log", {}, ("get", "", "ns", "pods", "web", "log")),
    ("POST", "/api/v1/namespaces/ns/pods/web/binding", {}, ("create", "", "ns", "pods", "web", "binding")),
    ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale", {},
     ("update", "apps", "ns", "deployments", "d", "scale")),
    ("PATCH", "/apis/kiln.dev/v1alpha1/namespaces/ns/modelversions/m/status", {},
     ("patch", "kiln.dev", "ns", "modelversions", "m", "status")),
    ("DELETE", "/api/v1/namespaces/ns/configmaps", {}, ("deletecollection", "", "ns", "configmaps", "", "")),
    ("DELETE", "/api/v1/namespaces/ns/configmaps/c", {}, ("delete", "", "ns", "configmaps", "c", "")),
    ("GET", "/api/v1/nodes", {}, ("list", "", "", "nodes", "", "")),
    ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "ns", "namespaces", "ns", "")),
    ("PUT", "/api/v1/namespaces/ns/finalize", {}, ("update", "", "ns", "namespaces", "ns", "finalize")),
    ("GET", "/api/v1/namespaces/ns/configmaps", {"fieldSelector": "metadata.name=router", "watch": "1"},
     ("watch", "", "ns", "configmaps", "router", "")),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "query", "expected"), ATTRIBUTE_CASES)
def test_request_attributes_are_read_from_the_request_as_kube_requestinfo_reads_them(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    found = requestinfo.attributes(ALICE, method, path, query)
    assert found.resource_request
    assert (found.verb, found.api_group, found.namespace, found.resource, found.name, found.subresource) == expected


@pytest.mark.parametrize("path", ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/healthz", "/version"])
def test_discovery_and_health_paths_are_non_resource_requests(path: str) -> None:
    found = requestinfo.attributes(ALICE, "GET", path, {})
    assert (found.resource_request, found.verb, found.path) == (False, "get", path)


def test_an_impersonated_service_account_gets_its_groups_and_everyone_is_authenticated() -> None:
    assert identity.impersonated("system:serviceaccount:team-a:trainer", []) == TRAINER
    assert identity.impersonated("alice", ["reviewers"]) == ALICE
    assert identity.impersonated(identity.ANONYMOUS, []) == ANONYMOUS


def test_a_rules_review_lists_what_applies_in_the_namespace() -> None:
    policy = alice_may(rule(["get"], [""], ["pods"], ["web"]))

    def rules(who: identity.UserInfo, namespace: str) -> authorization.RuleSet:
        return authorization.rules_for(policy, who, namespace)

    body = {"spec": {"namespace": "team-a"}}
    answered = reviews.review(
        "SelfSubjectRulesReview", "", ALICE, body, decide=lambda a: authorization.Decision(True), rules=rules
    )
    assert answered["status"] == {
        "resourceRules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["web"]}],
        "nonResourceRules": [],
        "incomplete": False,
    }
    elsewhere = reviews.review(
        "SelfSubjectRulesReview",
        "",
        ALICE,
        {"spec": {"namespace": "team-b"}},
        decide=lambda a: authorization.Decision(True),
        rules=rules,
    )
    assert elsewhere["status"]["resourceRules"] == []
