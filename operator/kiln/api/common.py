"""Types shared by more than one Kiln resource: compute resources, env, tolerations, gates."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from kiln.api import base

GPU_RESOURCE = "nvidia.com/gpu"


class GPUs(base.KilnModel):
    """GPUs for each pod, requested as the `nvidia.com/gpu` extended resource."""

    count: StrictInt = Field(ge=1, le=64)
    """How many GPUs each pod gets (requests and limits of `nvidia.com/gpu`)."""
    product: str | None = Field(default=None, max_length=128)
    """The GPU model, matched against the node label `nvidia.com/gpu.product`
    (for example `NVIDIA-A100-SXM4-80GB`); any GPU when unset."""


class ComputeResources(base.KilnModel):
    """CPU, memory and GPUs for each pod."""

    cpu: base.Quantity | None = None
    """CPU requested by each pod, as a quantity (`500m`, `2`)."""
    memory: base.Quantity | None = None
    """Memory requested by each pod, as a quantity (`512Mi`, `16Gi`); also its limit."""
    cpu_limit: base.Quantity | None = None
    """A CPU limit; none by default, so pods may burst."""
    gpus: GPUs | None = None
    """GPUs for each pod; none when unset."""

    def requests_and_limits(self) -> tuple[dict[str, str | int], dict[str, str | int]]:
        """A container's resource requests and limits: memory is limited at what is asked, CPU
        only when cpuLimit says so (pods may burst), GPUs are requested and limited alike."""
        requests: dict[str, str | int] = {}
        limits: dict[str, str | int] = {}
        if self.cpu is not None:
            requests["cpu"] = self.cpu
        if self.cpu_limit is not None:
            limits["cpu"] = self.cpu_limit
        if self.memory is not None:
            requests["memory"] = limits["memory"] = self.memory
        if self.gpus is not None:
            # The device plugin assigns the devices and sets CUDA_VISIBLE_DEVICES; Kiln only asks.
            requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = self.gpus.count
        return requests, limits


class EnvVar(base.KilnModel):
    """An environment variable for a container."""

    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """The variable's name."""
    value: str | None = Field(default=None, max_length=32768)
    """A literal value."""
    value_from: dict[str, Any] | None = None
    """A source for the value, as in a Kubernetes container's env (secretKeyRef, configMapKeyRef,
    fieldRef, resourceFieldRef)."""

    cel_rules = (
        base.Rule(
            "!(has(self.value) && has(self.valueFrom))",
            "value and valueFrom are mutually exclusive",
        ),
    )


class Toleration(base.KilnModel):
    """A Kubernetes toleration, copied onto the pods Kiln creates."""

    key: str | None = Field(default=None, max_length=316)
    """The taint key it tolerates; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists matches any value; Equal needs the value to match."""
    value: str | None = Field(default=None, max_length=256)
    """The taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to match; every effect when unset."""
    toleration_seconds: StrictInt | None = None
    """For NoExecute, how long the pod stays bound after the taint appears."""

    cel_rules = (
        base.Rule(
            "has(self.key) || self.operator == 'Exists'",
            "key is required unless operator is Exists",
            field_path=".key",
            reason="FieldValueRequired",
        ),
        base.Rule(
            "self.operator != 'Exists' || !has(self.value)",
            "value must be empty when operator is Exists",
            field_path=".value",
        ),
    )


class Gate(base.KilnModel):
    """A quality gate on one metric of a ModelVersion.

    `min` and `max` are absolute thresholds; `noWorseThanProductionBy` compares
    with the version of the same model currently in stage Production (the
    champion): the candidate may trail it by at most that much. A gate passes
    when every bound it sets holds.
    """

    metric: str = Field(min_length=1, max_length=128)
    """The metric's name, as in the ModelVersion's spec.metrics (`accuracy`, `latency_p99_ms`)."""
    min: StrictFloat | None = None
    """The metric must be at least this."""
    max: StrictFloat | None = None
    """The metric must be at most this."""
    no_worse_than_production_by: StrictFloat | None = Field(default=None, ge=0)
    """Champion/challenger: the metric may be worse than the Production version's by at most this
    (in the metric's own units). Passes when the model has no Production version yet."""
    higher_is_better: StrictBool = True
    """Which way is better for noWorseThanProductionBy: true for accuracy, false for latency or loss."""

    cel_rules = (
        base.Rule(
            "has(self.min) || has(self.max) || has(self.noWorseThanProductionBy)",
            "a gate needs at least one of min, max or noWorseThanProductionBy",
        ),
        base.Rule(
            "!has(self.min) || !has(self.max) || self.min <= self.max",
            "min must not be greater than max",
            field_path=".min",
        ),
    )


RESTRICTED_UID = 65532
"""The user and group Kiln's pods run as: the runtime images' non-root user."""


def restricted_pod_security() -> dict[str, Any]:
    """A pod securityContext that meets the Pod Security "restricted" profile, for every pod Kiln
    creates; fsGroup makes mounted volumes writable by the non-root user."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RESTRICTED_UID,
        "runAsGroup": RESTRICTED_UID,
        "fsGroup": RESTRICTED_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security() -> dict[str, Any]:
    """A container securityContext that meets the Pod Security "restricted" profile: programs
    write only to the volumes their pod mounts."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
