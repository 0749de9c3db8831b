"""LimitRange defaults and bounds for containers, as kube-apiserver's LimitRanger plugin applies them.

A container without a limit gets the LimitRange's `default` (or its `max`), one
without a request its `defaultRequest` (or the default limit); the pod is
annotated with what was set. A container outside `min`/`max` is refused with
kube's wording (`maximum cpu usage per Container is 2, but limit is 3`).

Pure functions over dicts; no I/O.
"""

from __future__ import annotations

from typing import Any

from kiln import quantity

Object = dict[str, Any]

ANNOTATION = "kubernetes.io/limit-ranger"
CONTAINER = "Container"


def _container_items(limit_ranges: list[Object]) -> list[Object]:
    return [
        item
        for limit_range in limit_ranges
        for item in (limit_range.get("spec") or {}).get("limits") or []
        if item.get("type") == CONTAINER
    ]


def _defaults(item: Object) -> tuple[Object, Object]:
    """(default limits, default requests) with the API's own defaulting of a LimitRange."""
    limits = {**(item.get("max") or {}), **(item.get("default") or {})}
    requests = {**limits, **(item.get("defaultRequest") or {})}
    return limits, requests


def _containers(pod: Object) -> list[Object]:
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def apply_defaults(limit_ranges: list[Object], pod: Object) -> bool:
    """Set missing requests and limits on the pod's containers; whether anything was set."""
    notes: list[str] = []
    for item in _container_items(limit_ranges):
        default_limits, default_requests = _defaults(item)
        for container in _containers(pod):
            resources = container.setdefault("resources", {})
            set_requests = _fill(resources.setdefault("requests", {}), default_requests)
            set_limits = _fill(resources.setdefault("limits", {}), default_limits)
            for kind in ("requests", "limits"):
                if not resources[kind]:
                    del resources[kind]
            name = container.get("name", "")
            if set_requests:
                notes.append(f"{', '.join(set_requests)} request for container {name}")
            if set_limits:
                notes.append(f"{', '.join(set_limits)} limit for container {name}")
    if notes:
        annotations = pod.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[ANNOTATION] = "LimitRanger plugin set: " + "; ".join(notes)
    return bool(notes)


def _fill(current: Object, defaults: Object) -> list[str]:
    filled = [resource for resource in sorted(defaults) if resource not in current]
    for resource in filled:
        current[resource] = defaults[resource]
    return filled


def violations(limit_ranges: list[Object], pod: Object) -> list[str]:
    """Every container request under `min` or limit over `max`, worded as kube words them."""
    found = []
    for item in _container_items(limit_ranges):
        for container in _containers(pod):
            resources = container.get("resources") or {}
            requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
            for resource, bound in sorted((item.get("min") or {}).items()):
                asked = requests.get(resource)
                if asked is not None and quantity.parse(asked) < quantity.parse(bound):
                    found.append(f"minimum {resource} usage per {CONTAINER} is {bound}, but request is {asked}")
            for resource, bound in sorted((item.get("max") or {}).items()):
                limit = limits.get(resource)
                if limit is None:
                    found.append(f"maximum {resource} usage per {CONTAINER} is {bound}.  No limit is specified")
                elif quantity.parse(limit) > quantity.parse(bound):
                    found.append(f"maximum {resource} usage per {CONTAINER} is {bound}, but limit is {limit}")
    return found
