"""The `router` provider: kiln-router's weights and mirror, in the ConfigMap it watches.

The router reads the ConfigMap through the Kubernetes API the moment it changes, so a weight
written here is in force within milliseconds; that is what lets an abort move all traffic at once.
"""

from __future__ import annotations

import json
from typing import Any

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
            found["mirror"]["compare"] = {"against": mirror.compare_against}
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
        against = (mirror_doc.get("compare") or {}).get("against")
        mirror = traffic.Mirror(
            mirrored, _service(spec["url"]), spec.get("version", ""), mirror_doc["percent"], against
        )
    return traffic.Split(backends, mirror)


def _service(url: str) -> str:
    return url.removeprefix("http://").split(".", 1)[0]


class Router:
    name = modeldeployment.TrafficProviderName.ROUTER

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
