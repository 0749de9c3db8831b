"""The `replicas` provider: no traffic object; one Service over every serving pod, so the replica
counts are the split.

The plan sets the counts (`kiln.delivery.serving.replica_split`), so `apply` writes nothing; it only
refuses a split that needs more than weights (a mirror). `observe` reads the variant Deployments'
ready pods and answers the weights they achieve, rounded percentages that sum to 100.
"""

from __future__ import annotations

from typing import Any

from kiln.api import modeldeployment, resources
from kiln.delivery import serving, traffic
from kiln.kube import client
from kiln.providers.traffic import base

MODEL_DEPLOYMENTS = client.kiln_resource(resources.MODEL_DEPLOYMENT)


def shares(counts: list[int]) -> list[int]:
    """Percentages of `counts` that sum to 100 (largest remainder); all on the first when all are 0."""
    total = sum(counts)
    if not counts:
        return []
    if total == 0:
        return [100, *([0] * (len(counts) - 1))]
    exact = [100 * count / total for count in counts]
    found = [int(value) for value in exact]
    by_remainder = sorted(range(len(counts)), key=lambda index: (-(exact[index] - found[index]), index))
    for index in by_remainder[: 100 - sum(found)]:
        found[index] += 1
    return found


def _ready(deployment: dict[str, Any] | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)


class Replicas:
    name = modeldeployment.TrafficProviderName.REPLICAS

    def apply(self, kube: client.Api, target: base.Target, split: traffic.Split) -> None:
        lacking = traffic.missing(self.name, split)
        if lacking:
            needs = ", ".join(sorted(lacking))
            raise base.TrafficError(f"traffic provider replicas cannot do {needs}, which this split needs")

    def observe(self, kube: client.Api, target: base.Target) -> traffic.Split | None:
        owner = target.owner
        body = kube.get(MODEL_DEPLOYMENTS, owner.namespace, owner.name)
        status = (body or {}).get("status") or {}
        stable = status.get("stableVersion")
        if not stable:
            return None
        variants = [(serving.STABLE, stable)]
        if status.get("candidateVersion"):
            variants.append((serving.CANDIDATE, status["candidateVersion"]))
        names = [serving.deployment_name(owner.name, version) for _, version in variants]
        ready = [_ready(kube.get(client.DEPLOYMENTS, owner.namespace, name)) for name in names]
        return traffic.Split(
            tuple(
                traffic.Backend(variant, name, version, weight)
                for (variant, version), name, weight in zip(variants, names, shares(ready), strict=True)
            )
        )

    def comparison(self, kube: client.Api, target: base.Target) -> traffic.Comparison:
        return traffic.Comparison(error="traffic provider replicas mirrors nothing, so it has nothing to compare")
