"""The `router` provider: kiln-router's weights and mirror, in the ConfigMap it watches.

The router reads the ConfigMap through the Kubernetes API the moment it changes, so a weight
written here is in force within milliseconds; that is what lets an abort move all traffic at once.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from kiln.api import modeldeployment
from kiln.delivery import serving, traffic
from kiln.kube import client
from kiln.providers.traffic import base


def document(owner: serving.Owner, split: traffic.Split) -> dict[str, Any]:
    """kiln-router's configuration (see kiln.runtime.router.config) for a split."""

    def url(service: str) -> str:
        return f"http://{service}.{owner.namespace}.svc:{serving.SERVICE_PORT}"

    variants = {b.variant: {"url": url(b.service), "version": b.version} for b in split.backends}
    found: dict[str, Any] = {"variants": variants, "weights": {b.variant: b.weight for b in split.backends}}
    mirror = split.mirror
    if mirror is not None:
        variants[mirror.variant] = {"url": url(mirror.service), "version": mirror.version}
        found["weights"].setdefault(mirror.variant, 0)
        found["mirror"] = {"variant": mirror.variant, "percent": mirror.percent}
        if mirror.compare_against:
            compare: dict[str, Any] = {"against": mirror.compare_against}
            if mirror.tolerance is not None:
                compare["tolerance"] = mirror.tolerance
            found["mirror"]["compare"] = compare
    return found


def _split_of(document: dict[str, Any]) -> traffic.Split:
    variants, weights = document.get("variants", {}), document.get("weights", {})
    mirror_doc = document.get("mirror") or {}
    mirrored = mirror_doc.get("variant")
    backends = tuple(
        traffic.Backend(name, _service(spec["url"]), spec.get("version", ""), int(weights.get(name, 0)))
        for name, spec in variants.items()
        if name != mirrored
    )
    mirror = None
    if mirrored:
        spec = variants[mirrored]
        compare = mirror_doc.get("compare") or {}
        mirror = traffic.Mirror(
            mirrored,
            _service(spec["url"]),
            spec.get("version", ""),
            mirror_doc["percent"],
            compare.get("against"),
            compare.get("tolerance"),
        )
    return traffic.Split(backends, mirror)


def _service(url: str) -> str:
    return url.removeprefix("http://").split(".", 1)[0]


COMPARISON_TIMEOUT_SECONDS = 2.0


def _summed(answers: list[dict[str, Any]]) -> traffic.Comparison:
    """One comparison from each router replica's own counts; the latency ratio weighted by the
    requests each compared."""
    compared = sum(int(answer.get("compared") or 0) for answer in answers)
    weighted = [
        (float(answer["latencyRatio"]), int(answer.get("compared") or 0))
        for answer in answers
        if answer.get("latencyRatio") is not None
    ]
    total = sum(weight for _, weight in weighted)
    return traffic.Comparison(
        compared=compared,
        agreed=sum(int(answer.get("agree") or 0) for answer in answers),
        disagreed=sum(int(answer.get("disagree") or 0) for answer in answers),
        errors=sum(int(answer.get("errors") or 0) for answer in answers),
        dropped=sum(int(answer.get("dropped") or 0) for answer in answers),
        latency_ratio=sum(ratio * weight for ratio, weight in weighted) / total if total else None,
    )


class Router:
    name = modeldeployment.TrafficProviderName.ROUTER

    def __init__(self, http: httpx.Client | None = None) -> None:
        self._http = http or httpx.Client(timeout=COMPARISON_TIMEOUT_SECONDS)

    def apply(self, kube: client.Api, target: base.Target, split: traffic.Split) -> None:
        config_map = serving.router_config(target.owner, document(target.owner, split))
        current = kube.get(client.CONFIG_MAPS, target.owner.namespace, serving.router_name(target.owner.name))
        if current is not None and current.get("data") == config_map["data"]:
            return
        kube.create_or_patch(client.CONFIG_MAPS, config_map)

    def observe(self, kube: client.Api, target: base.Target) -> traffic.Split | None:
        current = kube.get(client.CONFIG_MAPS, target.owner.namespace, serving.router_name(target.owner.name))
        text = ((current or {}).get("data") or {}).get(serving.ROUTER_CONFIG_KEY)
        if not text:
            return None
        try:
            return _split_of(json.loads(text))
        except (ValueError, KeyError, TypeError):
            return None

    def comparison(self, kube: client.Api, target: base.Target) -> traffic.Comparison:
        """The shadow comparison every ready kiln-router pod keeps (`/router/shadow`), summed."""
        selector = f"{serving.DEPLOYMENT_LABEL}={target.owner.name},{serving.COMPONENT_LABEL}={serving.ROUTER}"
        pods = kube.list(client.PODS, target.owner.namespace, selector)
        addresses = [pod["status"]["podIP"] for pod in pods if (pod.get("status") or {}).get("podIP")]
        if not addresses:
            return traffic.Comparison(error="no kiln-router pod is running to compare answers")
        answers = []
        for address in addresses:
            try:
                response = self._http.get(f"http://{address}:{serving.ROUTER_PORT}/router/shadow")
                response.raise_for_status()
                answers.append(response.json())
            except (httpx.HTTPError, ValueError) as error:
                return traffic.Comparison(
                    error=f"kiln-router at {address} did not say how the shadow compares: {error}"
                )
        return _summed(answers)
