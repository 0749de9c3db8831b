"""What an HTTP request asks to do, read from its method, path and query as kube-apiserver's
RequestInfoFactory reads it: the attributes an authorizer decides on. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Mapping

from kiln.devcluster import authorization, identity

_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


def attributes(user: identity.UserInfo, method: str, path: str, query: Mapping[str, str]) -> authorization.Attributes:
    parts = [part for part in path.split("/") if part]
    non_resource = authorization.Attributes(user, method.lower(), resource_request=False, path=path)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    group = ""
    rest = parts[1:]
    if parts[0] == "apis":
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    verb = _VERBS.get(method.upper(), "")
    if rest[0] == "watch":
        if len(rest) < 2:
            return non_resource
        verb, rest = "watch", rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource, name, subresource = [*rest, "", "", ""][:3]
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "").lower() in ("1", "true") else "list"
        name = _name_from_field_selector(query.get("fieldSelector"))
    if not name and verb == "delete":
        verb = "deletecollection"
    return authorization.Attributes(
        user,
        verb,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        path=path,
    )


def _name_from_field_selector(text: str | None) -> str:
    """A list or watch selecting `metadata.name=<name>` is authorized as a request for that name."""
    for term in (text or "").split(","):
        key, _, value = term.partition("==") if "==" in term else term.partition("=")
        if key.strip() == "metadata.name" and not key.endswith("!") and value.strip():
            return value.strip()
    return ""
