"""The dev cluster's access control, between the HTTP server and the pure authorizer: who a request
is (its token, then whom it impersonates, if it may), whether it may do what it asks, and the
authorization reviews. `AlwaysAllow` allows everything, as kube-apiserver's mode of that name;
`RBAC` reads the cluster's RBAC objects from the store on every decision, so a new binding counts
at once.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from kiln.devcluster import authorization, bootstrappolicy, errors, identity, kinds, registry, requestinfo, reviews

Object = authorization.Object

_RBAC_KEYS = {
    "roles": "roles.rbac.authorization.k8s.io",
    "cluster_roles": "clusterroles.rbac.authorization.k8s.io",
    "role_bindings": "rolebindings.rbac.authorization.k8s.io",
    "cluster_role_bindings": "clusterrolebindings.rbac.authorization.k8s.io",
}
_EVERYTHING = authorization.RuleSet(
    ({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "nonResourceURLs": ["*"]})
)


class Access:
    def __init__(self, cluster: registry.Registry, mode: str = authorization.ALWAYS_ALLOW) -> None:
        if mode not in authorization.MODES:
            raise ValueError(f"unknown authorization mode {mode!r}; one of {', '.join(authorization.MODES)}")
        self.registry = cluster
        self.mode = mode
        for resource in reviews.TYPES:
            cluster.types.add(resource)

    def install_defaults(self) -> None:
        """The bootstrap ClusterRoles and ClusterRoleBindings a missing one of which is created (kept on
        restart, as kube-apiserver keeps an edited default unless it is deleted)."""
        store = self.registry.store
        wanted = [("clusterroles", role) for role in authorization.aggregate(bootstrappolicy.CLUSTER_ROLES)]
        wanted += [("clusterrolebindings", binding) for binding in bootstrappolicy.CLUSTER_ROLE_BINDINGS]
        for plural, obj in wanted:
            rt = self.registry.types.get(authorization.RBAC_GROUP, "v1", plural)
            assert rt is not None
            if store.get(rt.key, "", obj["metadata"]["name"]) is None:
                self.registry.create(rt, "", copy.deepcopy(obj))

    def policy(self) -> authorization.Policy:
        store = self.registry.store
        return authorization.Policy(**{field: store.list(key, None) for field, key in _RBAC_KEYS.items()})

    def decide(self, attributes: authorization.Attributes) -> authorization.Decision:
        if self.mode == authorization.ALWAYS_ALLOW or authorization.MASTERS in attributes.user.groups:
            return authorization.Decision(True)  # without reading the policy: most requests are the admin's
        return authorization.authorize(self.policy(), attributes)

    def rules(self, user: identity.UserInfo, namespace: str) -> authorization.RuleSet:
        if self.mode == authorization.ALWAYS_ALLOW:
            return _EVERYTHING
        return authorization.rules_for(self.policy(), user, namespace)

    def admit(
        self, headers: Mapping[str, str], groups: list[str], method: str, path: str, query: Mapping[str, str]
    ) -> identity.UserInfo:
        """The user a request acts as, once it may act as them and do what it asks; else a 401 or 403."""
        user = self._impersonate(identity.token_user(headers.get("Authorization")), headers, groups)
        attributes = requestinfo.attributes(user, method, path, query)
        self._require(attributes)
        return user

    @staticmethod
    def reviews(resource: kinds.ResourceType) -> bool:
        return reviews.serves(resource)

    def review(self, kind: str, namespace: str, user: identity.UserInfo, body: Object) -> Object:
        return reviews.review(kind, namespace, user, body, decide=self.decide, rules=self.rules)

    def _require(self, attributes: authorization.Attributes) -> None:
        decision = self.decide(attributes)
        if not decision.allowed:
            raise authorization.forbidden(attributes, decision.reason)

    def _impersonate(self, user: identity.UserInfo, headers: Mapping[str, str], groups: list[str]) -> identity.UserInfo:
        """As kube-apiserver's impersonation filter: the `impersonate` verb on the user (or service
        account) and on every group asked for, each checked before the request acts as them."""
        wanted = headers.get("Impersonate-User")
        if wanted is None:
            if groups:
                raise errors.ApiError(
                    500, "InternalError", "requested impersonation of groups without impersonating a user"
                )
            return user
        account = identity.service_account_of(wanted)
        if account is not None:
            namespace, name = account
            self._require(_impersonation(user, "serviceaccounts", name, namespace))
        else:
            self._require(_impersonation(user, "users", wanted))
        for group in groups:
            self._require(_impersonation(user, "groups", group))
        return identity.impersonated(wanted, groups)


def _impersonation(user: identity.UserInfo, resource: str, name: str, namespace: str = "") -> authorization.Attributes:
    return authorization.Attributes(user, "impersonate", namespace=namespace, resource=resource, name=name)
