"""The TrafficRouter seam: who splits a ModelDeployment's traffic between its versions.

`router` (kiln-router's ConfigMap), `gatewayAPI` (an HTTPRoute's backendRefs and RequestMirror)
and `replicas` (replica counts behind one Service), with one explicit registry; an in-memory fake
for tests. What each provider can do is declared in `kiln.delivery.traffic.CAPABILITIES`, and the
API server refuses a spec that needs more.
"""

from __future__ import annotations

from collections.abc import Mapping

from kiln.api import modeldeployment
from kiln.providers.traffic import gateway_api, replicas, router
from kiln.providers.traffic.base import Target, TrafficError, TrafficRouter

__all__ = ["PROVIDERS", "Target", "TrafficError", "TrafficRouter", "provider_for"]

PROVIDERS: Mapping[modeldeployment.TrafficProviderName, TrafficRouter] = {
    modeldeployment.TrafficProviderName.ROUTER: router.Router(),
    modeldeployment.TrafficProviderName.GATEWAY_API: gateway_api.GatewayAPI(),
    modeldeployment.TrafficProviderName.REPLICAS: replicas.Replicas(),
}


def provider_for(
    name: modeldeployment.TrafficProviderName,
    providers: Mapping[modeldeployment.TrafficProviderName, TrafficRouter] = PROVIDERS,
) -> TrafficRouter:
    """The provider called `name`; ValueError naming the known ones when there is none."""
    try:
        return providers[name]
    except KeyError:
        known = ", ".join(sorted(str(provider) for provider in providers))
        raise ValueError(f"unknown traffic provider {name!r}: known providers are {known}") from None
