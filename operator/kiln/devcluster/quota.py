"""ResourceQuota arithmetic, as kube-apiserver's quota admission and kube-controller-manager do it.

What an object uses (a pod: `pods`, `count/pods`, `requests.*`, `limits.*` and
the legacy `cpu`/`memory`; anything else: `count/<resource>.<group>`), what a
namespace uses under a quota's hard limits, and whether one more object fits;
a refusal is worded as kube words it (`exceeded quota: gpu, requested:
requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited:
requests.nvidia.com/gpu=4`). Pods in a terminal phase use nothing.

Pure functions over dicts; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from kiln import quantity

Object = dict[str, Any]
Usage = dict[str, Fraction]

TERMINAL_PHASES = ("Succeeded", "Failed")
_LEGACY_COUNTS = ("services", "configmaps", "secrets", "persistentvolumeclaims", "replicationcontrollers",
                  "resourcequotas")  # fmt: skip
_REQUIRED_WHEN_LIMITED = {
    "cpu": ("requests", "cpu"),
    "requests.cpu": ("requests", "cpu"),
    "memory": ("requests", "memory"),
    "requests.memory": ("requests", "memory"),
    "limits.cpu": ("limits", "cpu"),
    "limits.memory": ("limits", "memory"),
}
_BINARY = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))
_DECIMAL = (("E", 10**18), ("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3))


def count_name(plural: str, group: str) -> str:
    return f"count/{plural}.{group}" if group else f"count/{plural}"


def _containers_total(containers: Iterable[Object], kind: str) -> Usage:
    total: Usage = {}
    for container in containers:
        for resource, value in ((container.get("resources") or {}).get(kind) or {}).items():
            total[resource] = total.get(resource, Fraction(0)) + quantity.parse(value)
    return total


def _effective(spec: Object, kind: str) -> Usage:
    """Containers run together, init containers one by one: the larger of their sum and the largest init."""
    total = _containers_total(spec.get("containers") or [], kind)
    for init in spec.get("initContainers") or []:
        for resource, value in _containers_total([init], kind).items():
            total[resource] = max(total.get(resource, Fraction(0)), value)
    for resource, value in (spec.get("overhead") or {}).items():
        total[resource] = total.get(resource, Fraction(0)) + quantity.parse(value)
    return total


def pod_counts(pod: Object) -> bool:
    return (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES


def pod_usage(pod: Object) -> Usage:
    if not pod_counts(pod):
        return {}
    spec = pod.get("spec") or {}
    usage: Usage = {"pods": Fraction(1), count_name("pods", ""): Fraction(1)}
    for resource, value in _effective(spec, "requests").items():
        usage[f"requests.{resource}"] = value
        if resource in ("cpu", "memory", "ephemeral-storage"):
            usage[resource] = value
    for resource, value in _effective(spec, "limits").items():
        usage[f"limits.{resource}"] = value
    return usage


def object_usage(plural: str, group: str, obj: Object) -> Usage:
    """What one object of a resource uses of any quota."""
    if plural == "pods" and not group:
        return pod_usage(obj)
    usage: Usage = {count_name(plural, group): Fraction(1)}
    if not group and plural in _LEGACY_COUNTS:
        usage[plural] = Fraction(1)
    if plural == "persistentvolumeclaims" and not group:
        storage = ((obj.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
        if storage is not None:
            usage["requests.storage"] = quantity.parse(storage)
    return usage


class Usages:
    """What each object of a namespace uses, kept while its resourceVersion stays: a namespace's use
    is added up again for every write a quota counts, and parsing every pod's quantities each time
    would make each write cost as much as the namespace holds."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str, str], dict[str, tuple[str, Usage]]] = {}

    def of(self, plural: str, group: str, namespace: str, objects: Iterable[Object]) -> list[Usage]:
        """The usage of each of `objects`, the namespace's objects of the resource as stored now
        (what is not among them any more is forgotten)."""
        kept = self._kept.get((plural, group, namespace), {})
        current = {}
        for obj in objects:
            metadata = obj["metadata"]
            version = metadata.get("resourceVersion", "")
            known = kept.get(metadata["name"])
            current[metadata["name"]] = (
                known if known is not None and known[0] == version else (version, object_usage(plural, group, obj))
            )
        self._kept[(plural, group, namespace)] = current
        return [usage for _, usage in current.values()]


def hard(quota: Object) -> Usage:
    return {name: quantity.parse(value) for name, value in ((quota.get("spec") or {}).get("hard") or {}).items()}


def used(quota: Object, usages: Iterable[Usage]) -> Usage:
    """What the usages add up to, for each resource the quota limits."""
    limits = hard(quota)
    total: Usage = dict.fromkeys(limits, Fraction(0))
    for usage in usages:
        for name, value in usage.items():
            if name in total:
                total[name] += value
    return total


def _is_binary(text: Any) -> bool:
    return isinstance(text, str) and text.rstrip().endswith("i")


def format_quantity(value: Fraction, binary: bool = False) -> str:
    """A quantity in kube's canonical form: `4`, `500m`, `2Gi`, `1k`."""
    if value == 0:
        return "0"
    if value.denominator == 1:
        number = int(value)
        for suffix, scale in _BINARY if binary else _DECIMAL:
            if number % scale == 0:
                return f"{number // scale}{suffix}"
        return str(number)
    for suffix, scale in (("m", 10**3), ("u", 10**6), ("n", 10**9)):
        scaled = value * scale
        if scaled.denominator == 1:
            return f"{int(scaled)}{suffix}"
    return f"{int(value * 10**9) + 1}n"  # kube rounds up to the nearest nano


def formatted(quota: Object, values: Usage) -> dict[str, str]:
    """Usage as quantity strings, in the notation (binary or decimal) of the quota's own limits."""
    limits = (quota.get("spec") or {}).get("hard") or {}
    return {name: format_quantity(value, _is_binary(limits.get(name))) for name, value in values.items()}


def _pretty(quota: Object, values: Usage) -> str:
    shown = formatted(quota, values)
    return ",".join(f"{name}={shown[name]}" for name in sorted(shown))


def exceeded(quota: Object, current: Usage, requested: Usage) -> str | None:
    """Why one more object with `requested` usage does not fit under the quota, or None if it does."""
    limits = hard(quota)
    asked = {name: value for name, value in requested.items() if name in limits}
    over = sorted(name for name, value in asked.items() if current.get(name, Fraction(0)) + value > limits[name])
    if not over:
        return None
    name = quota["metadata"]["name"]
    return (
        f"exceeded quota: {name}, requested: {_pretty(quota, {r: asked[r] for r in over})}, "
        f"used: {_pretty(quota, {r: current.get(r, Fraction(0)) for r in over})}, "
        f"limited: {_pretty(quota, {r: limits[r] for r in over})}"
    )


def unspecified(quota: Object, pod: Object) -> str | None:
    """A quota on cpu or memory needs every container to say how much it asks for."""
    missing: dict[str, list[str]] = {}
    spec = pod.get("spec") or {}
    for limited in hard(quota):
        if limited not in _REQUIRED_WHEN_LIMITED:
            continue
        kind, resource = _REQUIRED_WHEN_LIMITED[limited]
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            if resource not in ((container.get("resources") or {}).get(kind) or {}):
                missing.setdefault(f"{kind}.{resource}", []).append(container.get("name", ""))
    if not missing:
        return None
    parts = "; ".join(f"{name} for: {','.join(sorted(set(names)))}" for name, names in sorted(missing.items()))
    return f"failed quota: {quota['metadata']['name']}: must specify {parts}"


def status(quota: Object, current: Usage) -> Object:
    """The status kube-controller-manager writes: the hard limits and what is used of each."""
    spec_hard = dict((quota.get("spec") or {}).get("hard") or {})
    return {"hard": spec_hard, "used": formatted(quota, current)}
