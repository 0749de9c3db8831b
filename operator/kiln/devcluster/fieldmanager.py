"""Field ownership for server-side apply: `metadata.managedFields`, conflicts, and removal.

A simplification of structured-merge-diff that keeps its contract: every leaf a
manager sets is owned by it (lists are owned whole); an Apply that changes a
leaf another manager owns conflicts unless forced, and a forced one takes the
leaf over; a leaf an applier stops sending is removed unless someone else owns
it; plain updates take ownership of what they change without conflicts.
"""

from __future__ import annotations

import copy
from typing import Any

from kiln.devcluster import errors, objects

Object = dict[str, Any]
Path = tuple[str, ...]
APPLY, UPDATE = "Apply", "Update"
_MISSING = object()
_IGNORED_TOP_LEVEL = ("apiVersion", "kind", "status")
_OWNED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")


def leaf_paths(obj: Object) -> set[Path]:
    """The leaves of an object a manager can own: everything but identity, status and system metadata."""
    paths: set[Path] = set()
    for key, value in obj.items():
        if key in _IGNORED_TOP_LEVEL:
            continue
        if key == "metadata":
            for field in _OWNED_METADATA:
                if field in value:
                    paths |= _leaves(value[field], ("metadata", field))
        else:
            paths |= _leaves(value, (key,))
    return paths


def _leaves(value: Any, prefix: Path) -> set[Path]:
    if isinstance(value, dict) and value:
        return {path for key, child in value.items() for path in _leaves(child, (*prefix, key))}
    return {prefix}


def _get(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _remove(obj: Object, path: Path) -> None:
    parents = [obj]
    for key in path[:-1]:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):  # drop the emptied parents, as apply does
        if parents[depth] == {}:
            parents[depth - 1].pop(path[depth - 1], None)


def to_fields_v1(paths: set[Path]) -> Object:
    tree: Object = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


def from_fields_v1(tree: Object, prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, child in tree.items():
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        paths |= from_fields_v1(child, path) if child else {path}
    return paths


def _entries(obj: Object | None) -> list[Object]:
    return copy.deepcopy((obj or {}).get("metadata", {}).get("managedFields") or [])


def _entry(manager: str, operation: str, api_version: str, paths: set[Path]) -> Object:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": objects.now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }


def _set_entry(entries: list[Object], entry: Object) -> list[Object]:
    kept = [e for e in entries if (e.get("manager"), e.get("operation")) != (entry["manager"], entry["operation"])]
    return [*kept, entry] if entry["fieldsV1"] else kept


def _disown(entries: list[Object], paths: set[Path], keep: tuple[str, str]) -> list[Object]:
    out = []
    for entry in entries:
        if (entry.get("manager"), entry.get("operation")) == keep:
            out.append(entry)
            continue
        owned = from_fields_v1(entry.get("fieldsV1") or {})
        if owned and owned.isdisjoint(paths):
            out.append(entry)  # most writes change no leaf of the other managers': nothing to rebuild
        elif remaining := owned - paths:
            out.append({**entry, "fieldsV1": to_fields_v1(remaining)})
    return out


def check_apply(current: Object, applied: Object, manager: str, force: bool) -> None:
    """Refuse an Apply that changes leaves other managers own, unless forced (409 Conflict)."""
    conflicts = []
    for entry in _entries(current):
        if entry.get("manager") == manager:
            continue
        owned = from_fields_v1(entry.get("fieldsV1") or {})
        for path in sorted(leaf_paths(applied) & owned):
            if _get(current, path) != _get(applied, path):
                conflicts.append(f'conflict with "{entry.get("manager")}": .{".".join(path)}')
    if conflicts and not force:
        count = f"{len(conflicts)} conflict" + ("s" if len(conflicts) > 1 else "")
        name = current["metadata"]["name"]
        raise errors.ApiError(409, "Conflict", f"Apply failed with {count}: {'; '.join(conflicts)}", {"name": name})


def record_apply(previous: Object | None, merged: Object, applied: Object, manager: str) -> Object:
    """The merged object with the applier's ownership recorded and its dropped leaves removed."""
    result = copy.deepcopy(merged)
    entries = _entries(previous)
    applied_paths = leaf_paths(applied)
    mine = (manager, APPLY)
    before = next((e for e in entries if (e.get("manager"), e.get("operation")) == mine), None)
    entries = _disown(entries, applied_paths, keep=mine)
    others = set().union(*(from_fields_v1(e.get("fieldsV1") or {}) for e in entries if e is not before))
    if before is not None:
        for path in from_fields_v1(before.get("fieldsV1") or {}) - applied_paths - others:
            _remove(result, path)
    entry = _entry(manager, APPLY, result["apiVersion"], applied_paths)
    if before is not None and before.get("fieldsV1") == entry["fieldsV1"]:
        entry["time"] = before.get("time", entry["time"])  # the same apply again changes nothing, not even time
    result["metadata"]["managedFields"] = _set_entry(entries, entry)
    return result


def record_update(previous: Object | None, updated: Object, manager: str) -> Object:
    """An ordinary write takes ownership of the leaves it changed, from whoever had them. `updated`
    is the registry's own copy of what is written: its managedFields are set in place."""
    entries = _entries(previous)
    old_leaves = leaf_paths(previous) if previous else set()
    new_leaves = leaf_paths(updated)
    changed = {path for path in new_leaves if previous is None or _get(previous, path) != _get(updated, path)}
    if not changed and previous is not None:
        updated["metadata"]["managedFields"] = entries
        return updated
    mine = (manager, UPDATE)
    entries = _disown(entries, changed, keep=mine)
    current = next((e for e in entries if (e.get("manager"), e.get("operation")) == mine), None)
    owned = from_fields_v1(current.get("fieldsV1") or {}) if current else set()
    still_there = {path for path in owned if _get(updated, path) is not _MISSING} - (old_leaves - new_leaves)
    entry = _entry(manager, UPDATE, updated["apiVersion"], still_there | changed)
    updated["metadata"]["managedFields"] = _set_entry(entries, entry)
    return updated
