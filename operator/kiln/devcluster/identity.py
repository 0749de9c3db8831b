"""Who is asking: bearer tokens and impersonation, as kube-apiserver reports them.

The dev cluster authorizes every authenticated user fully (it is a development
tool, not a security boundary), but it knows *who* each request comes from, so
audit records, `kubectl auth whoami` and a controller that records approvers
see real user names. The admin token of the kubeconfig may impersonate anyone
(`kubectl --as alice --as-group reviewers`); a pod's service-account token
names that service account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kiln.devcluster import errors

ADMIN_TOKEN = "kiln-dev"
ADMIN_USER = "kiln-admin"
SERVICE_ACCOUNT_TOKEN_PREFIX = "kiln-dev-sa:"
AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class UserInfo:
    username: str
    groups: tuple[str, ...]

    def to_wire(self) -> dict[str, object]:
        return {"username": self.username, "groups": list(self.groups)}


ADMIN = UserInfo(ADMIN_USER, ("system:masters", AUTHENTICATED))


def service_account_token(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_TOKEN_PREFIX}{namespace}:{name}"


def _from_token(authorization: str | None) -> UserInfo:
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
            groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED)
            return UserInfo(f"system:serviceaccount:{namespace}:{name}", groups)
    raise errors.ApiError(401, "Unauthorized", "Unauthorized")


def authenticate(headers: Mapping[str, str], impersonation_groups: list[str]) -> UserInfo:
    """The user a request acts as: its token's user, or whom that user impersonates."""
    user = _from_token(headers.get("Authorization"))
    impersonated = headers.get("Impersonate-User")
    if impersonated is None:
        if impersonation_groups:
            raise errors.ApiError(
                500, "InternalError", "requested impersonation of groups without impersonating a user"
            )
        return user
    if "system:masters" not in user.groups:
        message = f'users "{impersonated}" is forbidden: User "{user.username}" cannot impersonate resource "users"'
        raise errors.ApiError(403, "Forbidden", message)
    return UserInfo(impersonated, (*impersonation_groups, AUTHENTICATED))


def self_subject_review(user: UserInfo) -> dict[str, object]:
    return {
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": user.to_wire()},
    }
