"""An in-memory TrafficRouter for tests: it keeps the split each deployment was given."""

from __future__ import annotations

import dataclasses

from kiln.api import modeldeployment
from kiln.delivery import traffic
from kiln.kube import client
from kiln.providers.traffic import base


@dataclasses.dataclass
class FakeTrafficRouter:
    name: modeldeployment.TrafficProviderName = modeldeployment.TrafficProviderName.ROUTER
    splits: dict[tuple[str, str], traffic.Split] = dataclasses.field(default_factory=dict)
    applied: list[tuple[str, str, traffic.Split]] = dataclasses.field(default_factory=list)
    """Every split that changed what was in force, oldest first."""
    compared: traffic.Comparison = dataclasses.field(default_factory=traffic.Comparison)
    """What `comparison` answers; tests set it."""

    def apply(self, kube: client.Api, target: base.Target, split: traffic.Split) -> None:
        key = (target.owner.namespace, target.owner.name)
        if self.splits.get(key) != split:
            self.splits[key] = split
            self.applied.append((*key, split))

    def observe(self, kube: client.Api, target: base.Target) -> traffic.Split | None:
        return self.splits.get((target.owner.namespace, target.owner.name))

    def comparison(self, kube: client.Api, target: base.Target) -> traffic.Comparison:
        return self.compared
