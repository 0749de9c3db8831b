"""kiln-router's Prometheus metrics, which rollout analysis reads per variant.

- `kiln_router_requests_total{variant,version,code}`: proxied requests by the status the client got
  (the upstream's, or 502/504 when it could not answer).
- `kiln_router_request_duration_seconds{variant,version}`: time from the request's arrival to its
  answer, upstream included; buckets from 50µs to 10s.
- `kiln_router_upstream_errors_total{variant,version,kind}`: upstreams that gave no answer, by
  kind: `connect` (refused, unreachable), `timeout`, `protocol` (disconnected, malformed answer).
- `kiln_router_mirrored_requests_total{variant,version,outcome}`: copies sent to the mirror
  variant: `answered`, `failed`, or `dropped` when too many copies were already in flight.
- `kiln_router_shadow_comparisons_total{variant,version,outcome}`: mirrored requests of a `compare`
  configuration, labelled by the mirrored (shadow) variant: `agree`, `disagree`, `error` (the
  shadow gave no 200 inference answer, timed out or failed) or `dropped` (not sent: too many copies
  in flight).
- `kiln_router_shadow_latency_seconds{variant,version,role}`: for compared requests, the upstream
  latency of the `live` answer and of the `shadow` one, labelled by the shadow variant; the
  request histogram's buckets.
- `kiln_router_config_reloads_total{outcome}`: configurations `applied` or `rejected`.
- `kiln_router_weight{variant}`: the current weight of each variant.

Each variant's children are made when a configuration names it, so a query reads 0 rather than
nothing before the first request, and requests touch only pre-bound children.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from kiln.runtime import http_metrics

ERROR_KINDS: Final = ("connect", "timeout", "protocol")
MIRROR_OUTCOMES: Final = ("answered", "failed", "dropped")
RELOAD_OUTCOMES: Final = ("applied", "rejected")
SHADOW_OUTCOMES: Final = ("agree", "disagree", "error", "dropped")
SHADOW_ROLES: Final = ("live", "shadow")


class VariantRecorder(http_metrics.RequestRecorder):
    """The pre-bound metric children of one variant at one version."""

    __slots__ = ("errors", "mirrored")

    def __init__(self, metrics: RouterMetrics, variant: str, version: str) -> None:
        # The codes an error-rate query divides, there from the start.
        super().__init__(metrics, variant, version, (200, 500, 502, 504))
        self.errors = {kind: metrics.upstream_errors.labels(variant, version, kind) for kind in ERROR_KINDS}
        self.mirrored = {outcome: metrics.mirrored.labels(variant, version, outcome) for outcome in MIRROR_OUTCOMES}


class ShadowRecorder:
    """The pre-bound comparison children of one shadow variant at one version."""

    __slots__ = ("latency", "outcomes")

    def __init__(self, metrics: RouterMetrics, variant: str, version: str) -> None:
        self.outcomes = {
            outcome: metrics.shadow_comparisons.labels(variant, version, outcome) for outcome in SHADOW_OUTCOMES
        }
        self.latency = {role: metrics.shadow_latency.labels(variant, version, role) for role in SHADOW_ROLES}


class RouterMetrics(http_metrics.RequestMetrics):
    """The router's registry and its metrics."""

    def __init__(self) -> None:
        super().__init__(
            "kiln_router",
            "variant",
            "Proxied requests by variant, version and the HTTP status code the client got.",
            "Proxied request latency, from the request's arrival at the router to its answer.",
        )
        self.upstream_errors = Counter(
            "kiln_router_upstream_errors",
            "Requests the variant's upstream gave no answer to, by kind (connect, timeout, protocol).",
            ["variant", "version", "kind"],
            registry=self.registry,
        )
        self.mirrored = Counter(
            "kiln_router_mirrored_requests",
            "Copies of requests sent to the mirror variant, by outcome (answered, failed, dropped).",
            ["variant", "version", "outcome"],
            registry=self.registry,
        )
        self.shadow_comparisons = Counter(
            "kiln_router_shadow_comparisons",
            "Mirrored requests compared with the live answer, by shadow variant, version and outcome "
            "(agree, disagree, error, dropped).",
            ["variant", "version", "outcome"],
            registry=self.registry,
        )
        self.shadow_latency = Histogram(
            "kiln_router_shadow_latency_seconds",
            "Upstream latency of compared requests, by shadow variant, version and role (live, shadow).",
            ["variant", "version", "role"],
            buckets=http_metrics.LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter(
            "kiln_router_config_reloads",
            "Configurations offered to the router, by outcome (applied, rejected).",
            ["outcome"],
            registry=self.registry,
        )
        self.weight = Gauge(
            "kiln_router_weight",
            "The share of traffic, in percent, each variant gets.",
            ["variant"],
            registry=self.registry,
        )
        for outcome in RELOAD_OUTCOMES:
            self.reloads.labels(outcome)
        self._recorders: dict[tuple[str, str], VariantRecorder] = {}
        self._shadows: dict[tuple[str, str], ShadowRecorder] = {}
        self._weighted: set[str] = set()

    def recorder(self, variant: str, version: str) -> VariantRecorder:
        """The variant's children, made once and kept across reloads (counters never go back)."""
        key = (variant, version)
        found = self._recorders.get(key)
        if found is None:
            found = self._recorders[key] = VariantRecorder(self, variant, version)
        return found

    def shadow_recorder(self, variant: str, version: str) -> ShadowRecorder:
        """The shadow variant's comparison children, made once and kept across reloads."""
        key = (variant, version)
        found = self._shadows.get(key)
        if found is None:
            found = self._shadows[key] = ShadowRecorder(self, variant, version)
        return found

    def set_weights(self, weights: Mapping[str, int]) -> None:
        """Show the new weights; a variant no longer configured loses its series, not a stale value."""
        for gone in self._weighted - weights.keys():
            self.weight.remove(gone)
        for variant, weight in weights.items():
            self.weight.labels(variant).set(weight)
        self._weighted = set(weights)
