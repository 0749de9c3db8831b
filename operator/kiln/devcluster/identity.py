"""Who is asking: bearer tokens and impersonation, as kube-apiserver reports them.

The dev cluster knows *who* each request comes from, so audit records, `kubectl
auth whoami`, RBAC and a controller that records approvers see real user names.
The admin token of the kubeconfig is in `system:masters`; a pod's
service-account token names that service account. Whether a user may
impersonate another (`kubectl --as alice --as-group reviewers`) is for the
authorizer (`access`) to decide; `impersonated` is whom the request then acts as.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.devcluster import errors

ADMIN_TOKEN = "kiln-dev"
ADMIN_USER = "kiln-admin"
SERVICE_ACCOUNT_TOKEN_PREFIX = "kiln-dev-sa:"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
SERVICE_ACCOUNT_USER_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class UserInfo:
    username: str
    groups: tuple[str, ...]

    def to_wire(self) -> dict[str, object]:
        return {"username": self.username, "groups": list(self.groups)}


ADMIN = UserInfo(ADMIN_USER, ("system:masters", AUTHENTICATED))


def service_account_token(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_TOKEN_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")


def service_account_of(username: str) -> tuple[str, str] | None:
    """(namespace, name) when the user name is a service account's."""
    if not username.startswith(SERVICE_ACCOUNT_USER_PREFIX):
        return None
    namespace, _, name = username.removeprefix(SERVICE_ACCOUNT_USER_PREFIX).partition(":")
    return (namespace, name) if namespace and name and ":" not in name else None


def token_user(authorization: str | None) -> UserInfo:
    """The user a bearer token names; no token is the local developer; a bad one is a 401."""
    if not authorization:
        return ADMIN  # no credentials: the local developer, as with an insecure port
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise errors.ApiError(401, "Unauthorized", "Unauthorized")
    if token == ADMIN_TOKEN:
        return ADMIN
    if token.startswith(SERVICE_ACCOUNT_TOKEN_PREFIX):
        namespace, _, name = token.removeprefix(SERVICE_ACCOUNT_TOKEN_PREFIX).partition(":")
        if namespace and name:
            groups = (*service_account_groups(namespace), AUTHENTICATED)
            return UserInfo(f"{SERVICE_ACCOUNT_USER_PREFIX}{namespace}:{name}", groups)
    raise errors.ApiError(401, "Unauthorized", "Unauthorized")


def impersonated(username: str, groups: list[str]) -> UserInfo:
    """Whom a request impersonating `username` (and `groups`) acts as: a service account without
    groups asked for gets its own, and every user but the anonymous one is authenticated."""
    account = service_account_of(username)
    wanted = list(groups) if groups or account is None else list(service_account_groups(account[0]))
    implied = UNAUTHENTICATED if username == ANONYMOUS else AUTHENTICATED
    if implied not in wanted:
        wanted.append(implied)
    return UserInfo(username, tuple(wanted))


def self_subject_review(user: UserInfo) -> dict[str, object]:
    return {
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": user.to_wire()},
    }
