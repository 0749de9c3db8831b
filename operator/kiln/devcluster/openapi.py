"""OpenAPI documents (/openapi/v2, /openapi/v3): what kubectl reads to learn that the server
validates fields itself (`fieldValidation`), and the schemas `kubectl explain` and
strategic merge read."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from kiln.devcluster import discovery, kinds, kube_schemas

Object = dict[str, Any]

V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
V2_PROTOBUF_STUB = b"\x0a\x032.0"
"""A gnostic OpenAPI v2 Document holding only `swagger: "2.0"` (field 1). kubectl before 1.29 asks
for v2 in protobuf only; an empty document lets it fall back to its built-in knowledge of the kinds,
while field validation is learned from the JSON OpenAPI v3 documents."""

_PATCH_PARAMETERS = ("dryRun", "fieldManager", "fieldValidation", "force")
_WRITE_PARAMETERS = ("dryRun", "fieldManager", "fieldValidation")


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _schema_name(rt: kinds.ResourceType) -> str:
    if not rt.crd:
        builtin_name = kube_schemas.definition_name(rt.api_version, rt.kind)
        if builtin_name:
            return builtin_name
    reversed_group = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{reversed_group}.{rt.version}.{rt.kind}"


def _rewrite_refs(node: Any, prefix: str) -> Any:
    """JSON Schema 2020 to OpenAPI: `$defs` refs re-pointed, `["string", "null"]` types narrowed."""
    if isinstance(node, list):
        return [_rewrite_refs(item, prefix) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = prefix + value.rsplit("/", 1)[-1]
        elif key == "type" and isinstance(value, list):
            concrete = [t for t in value if t != "null"]
            if len(concrete) == 1:
                out[key] = concrete[0]
        else:
            out[key] = _rewrite_refs(value, prefix)
    return out


def _referenced(name: str, seen: set[str]) -> None:
    if name in seen:
        return
    seen.add(name)
    for ref in _refs(kube_schemas.definitions().get(name, {})):
        _referenced(ref, seen)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _schemas(resources: list[kinds.ResourceType], prefix: str) -> Object:
    schemas: Object = {}
    builtin_names: set[str] = set()
    for rt in resources:
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        if rt.crd:
            crd_schema = copy.deepcopy(rt.schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
            crd_schema["x-kubernetes-group-version-kind"] = [gvk]
            schemas[_schema_name(rt)] = crd_schema
        else:
            name = kube_schemas.definition_name(rt.api_version, rt.kind)
            if name:
                _referenced(name, builtin_names)
    for name in sorted(builtin_names):
        schemas[name] = _rewrite_refs(kube_schemas.definitions()[name], prefix)
    return schemas


def _parameter(name: str, v3: bool) -> Object:
    if v3:
        return {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    return {"name": name, "in": "query", "type": "string", "uniqueItems": True}


def _operation(rt: kinds.ResourceType, action: str, parameters: tuple[str, ...], v3: bool, ref: str) -> Object:
    response: Object = {"description": "OK"}
    if v3:
        response["content"] = {"application/json": {"schema": {"$ref": ref}}}
    else:
        response["schema"] = {"$ref": ref}
    return {
        "operationId": f"{action}{rt.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "parameters": [_parameter(name, v3) for name in parameters],
        "responses": {"200": response},
    }


def _paths(resources: list[kinds.ResourceType], v3: bool, prefix: str) -> Object:
    paths: Object = {}
    for rt in resources:
        ref = prefix + _schema_name(rt)
        base = "/" + _gv_path(rt.group, rt.version)
        scope = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
        paths[scope] = {
            "get": _operation(rt, "list", (), v3, ref),
            "post": _operation(rt, "post", _WRITE_PARAMETERS, v3, ref),
        }
        paths[scope + "/{name}"] = {
            "get": _operation(rt, "get", (), v3, ref),
            "put": _operation(rt, "put", _WRITE_PARAMETERS, v3, ref),
            "patch": _operation(rt, "patch", _PATCH_PARAMETERS, v3, ref),
            "delete": _operation(rt, "delete", ("dryRun",), v3, ref),
        }
    return paths


def _v3_group_version(types: kinds.ResourceTypes, group: str, version: str) -> Object:
    resources = types.in_group_version(group, version)
    prefix = "#/components/schemas/"
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": discovery.VERSION_INFO["gitVersion"]},
        "paths": _paths(resources, True, prefix),
        "components": {"schemas": _schemas(resources, prefix)},
    }


def _v3_index(types: kinds.ResourceTypes) -> Object:
    paths = {}
    for group, versions in types.group_versions().items():
        for version in versions:
            path = _gv_path(group, version)
            names = sorted(
                f"{r.plural}:{len(json.dumps(r.schema or {}))}" for r in types.in_group_version(group, version)
            )
            digest = hashlib.sha256("|".join(names).encode()).hexdigest()[:32].upper()
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


def _v2(types: kinds.ResourceTypes) -> Object:
    resources = types.all()
    prefix = "#/definitions/"
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": discovery.VERSION_INFO["gitVersion"]},
        "paths": _paths(resources, False, prefix),
        "definitions": _schemas(resources, prefix),
    }


def document(types: kinds.ResourceTypes, parts: list[str]) -> Object | None:
    """The OpenAPI document under /openapi/..., or None when there is none."""
    if parts == ["v2"]:
        return _v2(types)
    if parts == ["v3"]:
        return _v3_index(types)
    if parts[:1] == ["v3"]:
        rest = parts[1:]
        if rest[:1] == ["api"] and len(rest) == 2:
            return _v3_group_version(types, "", rest[1])
        if rest[:1] == ["apis"] and len(rest) == 3 and rest[2] in types.group_versions().get(rest[1], []):
            return _v3_group_version(types, rest[1], rest[2])
    return None
