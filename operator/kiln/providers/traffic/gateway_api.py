"""The `gatewayAPI` provider: a split as a Gateway API (`gateway.networking.k8s.io/v1`) HTTPRoute.

Without `spec.traffic.gatewayAPI.httpRoute`, Kiln creates and owns the HTTPRoute named after the
ModelDeployment, attached to `parentRefs` with `hostnames`: one rule with a weighted backendRef per
variant Service (weight 0 ones kept, so the route's shape does not change as weights move) and a
`RequestMirror` filter (with `percent`, Gateway API v1.2+) for the mirror; then one rule per other
variant that a request reaches by naming it in the `x-kiln-variant` header, as with kiln-router.

With `httpRoute: NAME` the route is someone else's: Kiln changes only the backendRefs that point at
this ModelDeployment's Services, and its own RequestMirror filter, in the rules that already
reference them. Every other rule, match, filter and backendRef is written back exactly as it was
read (a merge patch replaces `spec.rules` whole, so the whole list is computed from the route read,
and the patch carries its resourceVersion: an edit in between is a 409, and the reconcile retries).

What the backendRefs do not say (which variant and version a Service is, and which variant a
mirror is compared against) is kept in the route's `kiln.dev/traffic` annotation; the weights and
the mirror percent are always read from the rules themselves.

Everything Kiln writes is in the form the API server stores it, with the CRD's defaults filled in
(group and kind of every reference, the `/` PathPrefix match, Exact header matches), so a split
already in force compares equal and writes nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from kiln.api import base as api_base
from kiln.api import modeldeployment
from kiln.delivery import serving, traffic
from kiln.kube import client
from kiln.providers.traffic import base

Object = dict[str, Any]
HTTP_ROUTES = client.HTTP_ROUTES
GATEWAY_GROUP = "gateway.networking.k8s.io"
TRAFFIC_ANNOTATION = f"{api_base.GROUP}/traffic"
"""Which variant and version each of the ModelDeployment's Services in the route is, as JSON."""
VARIANT_HEADER = "x-kiln-variant"
MIRROR = "RequestMirror"


def _everything() -> Object:
    return {"path": {"type": "PathPrefix", "value": "/"}}


def _service_ref(service: str) -> Object:
    return {"group": "", "kind": "Service", "name": service, "port": serving.SERVICE_PORT}


def _backend_ref(service: str, weight: int) -> Object:
    return {**_service_ref(service), "weight": weight}


def _mirror_filter(mirror: traffic.Mirror) -> Object:
    return {"type": MIRROR, "requestMirror": {"backendRef": _service_ref(mirror.service), "percent": mirror.percent}}


def _parent_ref(parent: modeldeployment.ParentRef) -> Object:
    found: Object = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": parent.name}
    if parent.namespace:
        found["namespace"] = parent.namespace
    if parent.section_name:
        found["sectionName"] = parent.section_name
    return found


def _settings(target: base.Target) -> modeldeployment.GatewayAPI:
    return target.spec.traffic.gateway_api or modeldeployment.GatewayAPI.model_validate({})


def _annotation(split: traffic.Split) -> str:
    services = {b.service: {"variant": b.variant, "version": b.version} for b in split.backends}
    document: Object = {"services": services}
    if split.mirror is not None:
        services.setdefault(split.mirror.service, {"variant": split.mirror.variant, "version": split.mirror.version})
        if split.mirror.compare_against:
            document["compareAgainst"] = split.mirror.compare_against
    return json.dumps(document, sort_keys=True)


def _recorded(route: Mapping[str, Any]) -> Object:
    text = ((route.get("metadata") or {}).get("annotations") or {}).get(TRAFFIC_ANNOTATION)
    try:
        document = json.loads(text) if text else {}
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


# -- the route Kiln owns ----------------------------------------------------------------------


def owned_route(target: base.Target, split: traffic.Split) -> Object:
    """The HTTPRoute `<md>` Kiln creates for a split when no httpRoute is named."""
    settings = _settings(target)
    owner = target.owner
    weighted: Object = {
        "matches": [_everything()],
        "backendRefs": [_backend_ref(b.service, b.weight) for b in split.backends],
    }
    if split.mirror is not None:
        weighted["filters"] = [_mirror_filter(split.mirror)]
    rules = [weighted]
    named = [(b.variant, b.service) for b in split.backends if b.variant != serving.STABLE]
    if split.mirror is not None:
        named.append((split.mirror.variant, split.mirror.service))
    seen: set[str] = set()
    for variant, service in named:
        if variant in seen:
            continue
        seen.add(variant)
        match = {**_everything(), "headers": [{"type": "Exact", "name": VARIANT_HEADER, "value": variant}]}
        rules.append({"matches": [match], "backendRefs": [_backend_ref(service, 1)]})
    spec: Object = {"parentRefs": [_parent_ref(parent) for parent in settings.parent_refs], "rules": rules}
    if settings.hostnames:
        spec["hostnames"] = list(settings.hostnames)
    metadata = serving.owned_metadata(owner, owner.name)
    metadata["annotations"] = {TRAFFIC_ANNOTATION: _annotation(split)}
    return {"apiVersion": HTTP_ROUTES.api_version, "kind": HTTP_ROUTES.kind, "metadata": metadata, "spec": spec}


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def _apply_owned(kube: client.Api, target: base.Target, split: traffic.Split) -> None:
    owner = target.owner
    wanted = owned_route(target, split)
    current = kube.get(HTTP_ROUTES, owner.namespace, owner.name)
    if current is None:
        kube.create(HTTP_ROUTES, wanted)
        return
    if not _owned_by(current, owner.uid):
        raise base.TrafficError(
            f"HTTPRoute {owner.namespace}/{owner.name} exists and is not owned by ModelDeployment {owner.name}: "
            "name it in spec.traffic.gatewayAPI.httpRoute to let Kiln manage its weights, or delete it"
        )
    metadata, current_metadata = wanted["metadata"], current.get("metadata") or {}
    annotation = (current_metadata.get("annotations") or {}).get(TRAFFIC_ANNOTATION)
    labels = current_metadata.get("labels") or {}
    spec = current.get("spec") or {}
    same_spec = all(spec.get(key) == wanted["spec"].get(key) for key in ("parentRefs", "hostnames", "rules"))
    same_labels = all(labels.get(key) == value for key, value in metadata["labels"].items())
    if same_spec and same_labels and annotation == metadata["annotations"][TRAFFIC_ANNOTATION]:
        return
    patch = {
        "metadata": {
            "resourceVersion": current_metadata.get("resourceVersion"),
            "labels": metadata["labels"],
            "annotations": metadata["annotations"],
        },
        "spec": {**wanted["spec"], "hostnames": wanted["spec"].get("hostnames")},
    }
    kube.patch(HTTP_ROUTES, owner.namespace, owner.name, patch)


# -- a route someone else owns ----------------------------------------------------------------


def _is_service_ref(ref: Mapping[str, Any], namespace: str) -> bool:
    group, kind = str(ref.get("group", "")), str(ref.get("kind", "Service"))
    return group == "" and kind == "Service" and str(ref.get("namespace", namespace)) == namespace


def _ours(target: base.Target, route: Mapping[str, Any], split: traffic.Split | None) -> frozenset[str]:
    """The names of this ModelDeployment's Services a route may refer to."""
    name = target.owner.name
    names = {serving.stable_service(name), serving.canary_service(name), *_recorded(route).get("services", {})}
    if split is not None:
        names.update(b.service for b in split.backends)
        if split.mirror is not None:
            names.add(split.mirror.service)
    return frozenset(names)


def _refers_to(ref: Mapping[str, Any], ours: frozenset[str], namespace: str) -> bool:
    return _is_service_ref(ref, namespace) and str(ref.get("name")) in ours


def _our_mirror(item: Mapping[str, Any], ours: frozenset[str], namespace: str) -> bool:
    if item.get("type") != MIRROR:
        return False
    mirror: Mapping[str, Any] = item.get("requestMirror") or {}
    return _refers_to(mirror.get("backendRef") or {}, ours, namespace)


def _managed(rule: Mapping[str, Any], ours: frozenset[str], namespace: str) -> bool:
    return any(_refers_to(ref, ours, namespace) for ref in rule.get("backendRefs") or [])


def managed_rules(
    rules: Iterable[Mapping[str, Any]], split: traffic.Split, ours: frozenset[str], namespace: str
) -> list[Object]:
    """The route's rules with the split in force: in each rule that refers to one of `ours`, those
    backendRefs give way to the split's (where the first of them was) and Kiln's mirror filter is
    replaced; everything else is copied as it was."""
    found = []
    for read in rules:
        rule: Object = copy.deepcopy(dict(read))
        refs = rule.get("backendRefs") or []
        if not _managed(rule, ours, namespace):
            found.append(rule)
            continue
        first = next(index for index, ref in enumerate(refs) if _refers_to(ref, ours, namespace))
        kept = [ref for ref in refs if not _refers_to(ref, ours, namespace)]
        before = sum(1 for ref in refs[:first] if not _refers_to(ref, ours, namespace))
        placed = [_backend_ref(b.service, b.weight) for b in split.backends]
        rule["backendRefs"] = [*kept[:before], *placed, *kept[before:]]
        filters = [item for item in rule.get("filters") or [] if not _our_mirror(item, ours, namespace)]
        if split.mirror is not None:
            filters.append(_mirror_filter(split.mirror))
        if filters:
            rule["filters"] = filters
        else:
            rule.pop("filters", None)
        found.append(rule)
    return found


def _apply_existing(kube: client.Api, target: base.Target, split: traffic.Split, name: str) -> None:
    namespace = target.owner.namespace
    route = kube.get(HTTP_ROUTES, namespace, name)
    if route is None:
        raise base.TrafficError(
            f"HTTPRoute {namespace}/{name}, named in spec.traffic.gatewayAPI.httpRoute, does not exist"
        )
    ours = _ours(target, route, split)
    rules = (route.get("spec") or {}).get("rules") or []
    if not any(_managed(rule, ours, namespace) for rule in rules):
        services = ", ".join(sorted(ours))
        raise base.TrafficError(
            f"HTTPRoute {namespace}/{name}, named in spec.traffic.gatewayAPI.httpRoute, has no rule with a "
            f"backendRef to a Service of ModelDeployment {target.owner.name} ({services}): add one"
        )
    wanted = managed_rules(rules, split, ours, namespace)
    annotation = _annotation(split)
    metadata = route.get("metadata") or {}
    if wanted == rules and (metadata.get("annotations") or {}).get(TRAFFIC_ANNOTATION) == annotation:
        return
    patch = {
        "metadata": {
            "resourceVersion": metadata.get("resourceVersion"),
            "annotations": {TRAFFIC_ANNOTATION: annotation},
        },
        "spec": {"rules": wanted},
    }
    kube.patch(HTTP_ROUTES, namespace, name, patch)


# -- reading a route back ---------------------------------------------------------------------


def _percent(mirror: Mapping[str, Any]) -> int:
    if "percent" in mirror:
        return int(mirror["percent"])
    fraction = mirror.get("fraction")
    if fraction:
        return round(100 * int(fraction.get("numerator", 0)) / int(fraction.get("denominator", 100) or 100))
    return 100


def split_of(route: Mapping[str, Any], ours: frozenset[str], namespace: str) -> traffic.Split | None:
    """The split in force in a route: the weights and mirror of the first rule that refers to `ours`;
    None before Kiln has applied one."""
    recorded = _recorded(route)
    if not recorded:
        return None  # Kiln has put no split in force here yet
    services = recorded.get("services") or {}

    def identity(service: str) -> tuple[str, str]:
        known = services.get(service) or {}
        return str(known.get("variant", service)), str(known.get("version", ""))

    for rule in (route.get("spec") or {}).get("rules") or []:
        if not _managed(rule, ours, namespace):
            continue
        backends = []
        for ref in rule.get("backendRefs") or []:
            if _refers_to(ref, ours, namespace):
                variant, version = identity(ref["name"])
                backends.append(traffic.Backend(variant, ref["name"], version, int(ref.get("weight", 1))))
        mirror = None
        for item in rule.get("filters") or []:
            if _our_mirror(item, ours, namespace):
                body = item["requestMirror"]
                service = body["backendRef"]["name"]
                variant, version = identity(service)
                mirror = traffic.Mirror(variant, service, version, _percent(body), recorded.get("compareAgainst"))
        return traffic.Split(tuple(backends), mirror)
    return None


class GatewayAPI:
    name = modeldeployment.TrafficProviderName.GATEWAY_API

    def apply(self, kube: client.Api, target: base.Target, split: traffic.Split) -> None:
        existing = _settings(target).http_route
        if existing:
            _apply_existing(kube, target, split, existing)
        else:
            _apply_owned(kube, target, split)

    def observe(self, kube: client.Api, target: base.Target) -> traffic.Split | None:
        namespace = target.owner.namespace
        name = _settings(target).http_route or target.owner.name
        route = kube.get(HTTP_ROUTES, namespace, name)
        if route is None:
            return None
        if not _settings(target).http_route and not _owned_by(route, target.owner.uid):
            return None
        return split_of(route, _ours(target, route, None), namespace)

    def comparison(self, kube: client.Api, target: base.Target) -> traffic.Comparison:
        return traffic.Comparison(
            error="a Gateway discards the mirrored answers, so traffic provider gatewayAPI cannot compare them"
        )
