"""Schemas of the built-in kinds, from the Kubernetes OpenAPI that `kubernetes-validate` ships.

They validate built-in objects (a malformed Deployment is refused as a real
server would refuse it) and tell strategic merge patch which lists merge by
which key.
"""

from __future__ import annotations

import collections
import functools
import importlib.resources
import json
from collections.abc import Callable
from typing import Any

import fastjsonschema
import jsonschema
import referencing
import referencing.jsonschema

from kiln.devcluster import schema

KUBERNETES_SCHEMA_VERSION = "v1.32.0"
_DEFINITIONS_URI = "_definitions.json"
COMPILE_AFTER_WRITES = 100


@functools.cache
def definitions() -> dict[str, Any]:
    """Every Kubernetes definition by its OpenAPI name (`io.k8s.api.apps.v1.Deployment`)."""
    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    text = (root / f"{KUBERNETES_SCHEMA_VERSION}-local" / _DEFINITIONS_URI).read_text()
    definitions: dict[str, Any] = json.loads(text)["$defs"]
    return definitions


@functools.cache
def _definition_names() -> dict[tuple[str, str], str]:
    names = {}
    for name, definition in definitions().items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            group, version = gvk.get("group", ""), gvk["version"]
            api_version = f"{group}/{version}" if group else version
            names[(api_version, gvk["kind"])] = name
    return names


def definition_name(api_version: str, kind: str) -> str | None:
    return _definition_names().get((api_version, kind))


def definition(api_version: str, kind: str) -> dict[str, Any] | None:
    """The schema of a built-in kind, with `$ref`s into the shared definitions."""
    name = definition_name(api_version, kind)
    return definitions()[name] if name else None


def resolve(node: dict[str, Any] | None) -> dict[str, Any]:
    """Follow a `$ref` (possibly under allOf) to the schema it names."""
    while node:
        if "$ref" in node:
            node = definitions().get(node["$ref"].rsplit("/", 1)[-1], {})
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            return node
    return {}


@functools.cache
def _registry() -> referencing.Registry[Any]:
    contents = {"$defs": definitions()}
    resource = referencing.Resource.from_contents(contents, default_specification=referencing.jsonschema.DRAFT202012)
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(_DEFINITIONS_URI, resource)
    return registry


@functools.cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    name = _definition_names().get((api_version, kind))
    if name is None:
        return None
    root = {"$ref": f"{_DEFINITIONS_URI}#/$defs/{name}"}
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(root, registry=_registry())
    return validator


@functools.cache
def _quick_check(api_version: str, kind: str) -> Callable[[Any], Any] | None:
    """The kind's schema compiled to Python by fastjsonschema, about ten times quicker than
    jsonschema on the usual write, which is valid. It only says whether an object passes; an object
    it refuses is validated again by jsonschema, whose errors (and verdict) are the ones that count,
    so an odd format or draft difference can cost time but never change an answer. CRDs are left to
    jsonschema: their schema has properties named like keywords (`$ref`)."""
    name = _definition_names().get((api_version, kind))
    if name is None or kind == "CustomResourceDefinition":
        return None
    try:
        check: Callable[[Any], Any] = fastjsonschema.compile({"$defs": definitions(), "$ref": f"#/$defs/{name}"})
    except fastjsonschema.JsonSchemaDefinitionException:
        return None
    return check


_validated: collections.Counter[tuple[str, str]] = collections.Counter()


def _passes_quickly(obj: dict[str, Any]) -> bool:
    """Whether the compiled check passes the object: only for a kind written often enough to be worth
    its compiling (a Pod's takes a third of a second)."""
    gvk = (obj.get("apiVersion", ""), obj.get("kind", ""))
    _validated[gvk] += 1
    check = _quick_check(*gvk) if _validated[gvk] > COMPILE_AFTER_WRITES else None
    if check is None:
        return False
    try:
        check(obj)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate(obj: dict[str, Any]) -> list[schema.FieldError]:
    """Type errors of a built-in object against its Kubernetes schema."""
    validator = _validator(obj.get("apiVersion", ""), obj.get("kind", ""))
    if validator is None or _passes_quickly(obj):
        return []
    found = []
    for error in validator.iter_errors(obj):
        path = _path(error.absolute_path)
        value = error.instance
        if error.validator == "type":
            expected = error.validator_value
            expected_name = expected[0] if isinstance(expected, list) else expected
            detail = f'{path} in body must be of type {expected_name}: "{schema.json_type(value)}"'
            found.append(schema.FieldError(path, schema.TYPE_INVALID, detail, value))
        elif error.validator == "enum":
            options = error.validator_value if isinstance(error.validator_value, list) else []
            supported = ", ".join(json.dumps(option) for option in options if option is not None)
            found.append(schema.FieldError(path, schema.NOT_SUPPORTED, f"supported values: {supported}", value))
        elif error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            found.append(schema.FieldError(f"{path}.{missing}" if path else missing, schema.REQUIRED))
        else:
            found.append(schema.FieldError(path, schema.INVALID, error.message, value))
    return found
