"""The TrafficRouter protocol: carry a plan's traffic split out, read back what is in force, and
say how a shadow's answers compare."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from kiln.api import modeldeployment
from kiln.delivery import serving, traffic
from kiln.kube import client


@dataclasses.dataclass(frozen=True)
class Target:
    """The ModelDeployment whose traffic is split, and its provider settings."""

    owner: serving.Owner
    spec: modeldeployment.ModelDeploymentSpec


class TrafficError(Exception):
    """The provider cannot put the split in force for a reason a person must fix (an HTTPRoute named
    in spec.traffic.gatewayAPI.httpRoute that does not exist, say); `message` says which and how."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TrafficRouter(Protocol):
    name: modeldeployment.TrafficProviderName

    def apply(self, kube: client.Api, target: Target, split: traffic.Split) -> None:
        """Make `split` the one in force; a split already in force writes nothing."""
        ...

    def observe(self, kube: client.Api, target: Target) -> traffic.Split | None:
        """The split in force, or None when none has been applied."""
        ...

    def comparison(self, kube: client.Api, target: Target) -> traffic.Comparison:
        """How the mirrored variant's answers compare with the live ones so far (shadow); a
        Comparison with `error` when the provider cannot tell."""
        ...
