"""The traffic split a plan asks for, whoever carries it out, and what each provider can carry out.

A `Split` names the variants (stable, candidate, preview), the Service of each and its weight, and
an optional mirror. The `router`, `gatewayAPI` and `replicas` providers (`kiln.providers.traffic`)
turn it into a ConfigMap, an HTTPRoute or replica counts; what a provider cannot do is refused by
the API server (the CRD's rules) and again here, never silently dropped.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum

from kiln.api import modeldeployment

Provider = modeldeployment.TrafficProviderName


class Capability(StrEnum):
    WEIGHTS = "weights"
    HEADER_ROUTING = "header routing"
    MIRRORING = "mirroring"
    COMPARISON = "comparing mirrored answers"


CAPABILITIES: dict[Provider, frozenset[Capability]] = {
    Provider.ROUTER: frozenset(Capability),
    Provider.GATEWAY_API: frozenset({Capability.WEIGHTS, Capability.HEADER_ROUTING, Capability.MIRRORING}),
    Provider.REPLICAS: frozenset({Capability.WEIGHTS}),
}
"""What each provider can do: kiln-router everything; an HTTPRoute all but compare the mirrored
answers, which the Gateway discards; replica counts only weigh."""


@dataclasses.dataclass(frozen=True)
class Backend:
    variant: str
    service: str
    version: str
    weight: int


@dataclasses.dataclass(frozen=True)
class Mirror:
    variant: str
    service: str
    version: str
    percent: int
    compare_against: str | None = None
    """The variant whose live answers the mirrored answers are compared with (shadow)."""
    tolerance: float | None = None
    """How far numeric predictions may differ and still agree, when compared."""


@dataclasses.dataclass(frozen=True)
class Split:
    backends: tuple[Backend, ...]
    mirror: Mirror | None = None

    def weight_of(self, variant: str) -> int:
        return sum(backend.weight for backend in self.backends if backend.variant == variant)

    def needs(self) -> frozenset[Capability]:
        needed = {Capability.WEIGHTS}
        if self.mirror is not None and self.mirror.percent:
            needed.add(Capability.MIRRORING)
            if self.mirror.compare_against:
                needed.add(Capability.COMPARISON)
        return frozenset(needed)


def missing(provider: Provider, split: Split) -> frozenset[Capability]:
    """What the split needs that the provider cannot do."""
    return split.needs() - CAPABILITIES[provider]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What the traffic provider saw of a shadow's answers against the live ones, summed over its
    replicas; `error` says why nothing could be read."""

    compared: int = 0
    agreed: int = 0
    disagreed: int = 0
    errors: int = 0
    dropped: int = 0
    latency_ratio: float | None = None
    error: str | None = None
