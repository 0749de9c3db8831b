"""The three patch formats of the Kubernetes API: JSON merge, JSON, and strategic merge."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonpatch

from kiln.devcluster import errors

MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"

SchemaLookup = Callable[[dict[str, Any] | None, str], dict[str, Any] | None]
"""Given a schema node (None when unknown) and a property name, the property's schema."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902; a failed `test` or a bad path is a 422, as kube-apiserver answers."""
    if not isinstance(operations, list):
        raise errors.bad_request("a JSON patch must be a list of operations")
    try:
        result: dict[str, Any] = jsonpatch.apply_patch(target, operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        message = f"the server rejected our request due to an error in our request: {error}"
        raise errors.ApiError(422, "Invalid", message) from None
    return result


def strategic_merge_patch(
    target: dict[str, Any], patch: dict[str, Any], node: dict[str, Any] | None, lookup: SchemaLookup
) -> dict[str, Any]:
    """Strategic merge as kubectl sends it: lists with a patch merge key merge item by item."""
    result = copy.deepcopy(target)
    if patch.get("$patch") == "replace":
        return {key: value for key, value in patch.items() if key != "$patch"}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field, []) if item not in value]
            continue
        child = lookup(node, key)
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = strategic_merge_patch(result[key], value, child, lookup)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, child, lookup)
        else:
            result[key] = _strip_directives(value)
    if isinstance(retain, list):
        result = {key: value for key, value in result.items() if key in retain}
    return result


def _merge_list(target: list[Any], patch: list[Any], node: dict[str, Any] | None, lookup: SchemaLookup) -> list[Any]:
    strategy = (node or {}).get("x-kubernetes-patch-strategy") or ""
    merge_key = (node or {}).get("x-kubernetes-patch-merge-key")
    if "merge" not in strategy.split(","):
        return _strip_directives(patch)  # type: ignore[no-any-return]
    if not merge_key:
        return target + [item for item in patch if item not in target]
    items_node = lookup(node, "[]")
    result = copy.deepcopy(target)
    for item in patch:
        if not isinstance(item, dict):
            continue
        index = next((i for i, old in enumerate(result) if old.get(merge_key) == item.get(merge_key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = strategic_merge_patch(result[index], item, items_node, lookup)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(item) for item in value]
    return value
