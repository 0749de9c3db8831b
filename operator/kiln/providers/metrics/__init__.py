"""The MetricProvider seam: run one rendered analysis query against the outside system.

`kiln.delivery.analysis` renders a metric's query and judges what comes back; a provider only
runs the query and returns an Answer (a value, empty, or an error in words a user understands),
never raising for the network, HTTP or a body it cannot read. Implementations: `prometheus`
(the HTTP API) and `web` (any JSON endpoint), in modules of their own; `fake` for tests.

Call it as `metrics.provider_for(query.provider).query(query)`. An unknown provider name is a
ValueError, never a quiet fallback to Prometheus.
"""

from __future__ import annotations

from collections.abc import Mapping

from kiln.api import modeldeployment
from kiln.providers.metrics import prometheus, web
from kiln.providers.metrics.base import Answer, MetricProvider, Query

__all__ = ["PROVIDERS", "Answer", "MetricProvider", "Query", "provider_for"]

PROVIDERS: Mapping[str, MetricProvider] = {
    modeldeployment.MetricProviderName.PROMETHEUS: prometheus.Prometheus(),
    modeldeployment.MetricProviderName.WEB: web.Web(),
}


def provider_for(name: str, providers: Mapping[str, MetricProvider] = PROVIDERS) -> MetricProvider:
    """The provider called `name` in `providers` (tests pass fakes); ValueError naming the known
    providers when there is none."""
    try:
        return providers[name]
    except KeyError:
        known = ", ".join(sorted(providers))
        raise ValueError(f"unknown metric provider {name!r}: known providers are {known}") from None
