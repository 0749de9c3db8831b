"""What a dev cluster is made of: node pools, which images run as local processes, and timings.

From flags (`kiln cluster start --nodes 3 --gpus-per-node 4 --gpu-product
NVIDIA-H100-80GB-HBM3`) or a YAML file (`--config`) for mixed pools:

```yaml
nodePools:
  - name: cpu
    count: 2
    cpu: "16"
    memory: 64Gi
  - name: gpu
    count: 2
    cpu: "96"
    memory: 1Ti
    gpus: 8
    gpuProduct: NVIDIA-H100-80GB-HBM3
    taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
localImages: [registry.example.com/team/trainer]
simulatedJobDuration: 2
crashLoopBackOff: {initialSeconds: 1, maxSeconds: 60}
authorization: RBAC   # or AlwaysAllow
faults:               # API fault injection, off by default (see kiln.devcluster.faults)
  rules: [{verbs: ["*"], resources: ["*"], status: 503, rate: 0.1, retryAfterSeconds: 1}]
```
"""

from __future__ import annotations

import pathlib
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from kiln import quantity
from kiln.devcluster import faults


class _Config(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Taint(_Config):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodePool(_Config):
    """`count` identical nodes named `<name>-1` … `<name>-<count>`."""

    name: str = Field("node", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    count: int = Field(1, ge=0, le=1000)
    cpu: str = "8"
    memory: str = "32Gi"
    pods: int = Field(110, ge=1)
    gpus: int = Field(0, ge=0)
    gpu_product: str = ""
    instance_type: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    taints: tuple[Taint, ...] = ()

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str) -> str:
        quantity.parse(value)
        return value


class CrashLoopBackOff(_Config):
    """Restart delays of crashing containers: doubling from the initial value up to the maximum.
    The defaults are those of Kubernetes' reduced back-off (KEP-4603), which suit development."""

    initial_seconds: float = Field(1.0, gt=0)
    max_seconds: float = Field(60.0, gt=0)


def _faults(value: object) -> faults.FaultConfig:
    try:
        return faults.parse(value)
    except faults.FaultError as error:
        raise PydanticCustomError("faults", str(error)) from None


Faults = Annotated[faults.FaultConfig, PlainValidator(_faults), PlainSerializer(lambda config: config.dump())]


class ClusterConfig(_Config):
    node_pools: tuple[NodePool, ...] = (NodePool(),)
    local_images: tuple[str, ...] = ()
    """Images whose containers run as local processes (their command and args), like Python commands do."""
    simulated_job_duration: float = Field(1.0, ge=0)
    """Seconds a simulated (non-local) pod of a Job runs before it succeeds."""
    crash_loop_back_off: CrashLoopBackOff = CrashLoopBackOff()
    prometheus: bool = False
    """Start a real Prometheus that scrapes annotated pods every second."""
    authorization: Literal["AlwaysAllow", "RBAC"] = "RBAC"
    """How requests are authorized: by the cluster's Roles and bindings, as kube-apiserver's RBAC
    mode does (the kubeconfig's admin is in system:masters), or every request allowed."""
    faults: Faults = faults.FaultConfig()
    """API fault injection for reliability tests of clients; no rules, none injected."""


class ConfigError(ValueError):
    pass


def load(path: pathlib.Path | None, overrides: dict[str, Any] | None = None) -> ClusterConfig:
    """A config from a YAML file and flag overrides; a bad field raises ConfigError naming it."""
    document: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a dev cluster config must be a mapping")
        document = {key: value for key, value in loaded.items() if key not in ("apiVersion", "kind")}
    document.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return ClusterConfig.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}" for issue in error.errors()
        )
        raise ConfigError(f"invalid dev cluster config: {problems}") from None


def pool_from_flags(
    *, nodes: int, cpu: str, memory: str, gpus: int, gpu_product: str, gpu_taint: bool
) -> dict[str, Any]:
    taints = [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}] if gpu_taint and gpus else []
    return {"count": nodes, "cpu": cpu, "memory": memory, "gpus": gpus, "gpuProduct": gpu_product, "taints": taints}


def gpu_memory_mib(product: str) -> int | None:
    """GPU memory from a product name such as NVIDIA-H100-80GB-HBM3, as GPU feature discovery labels it."""
    match = re.search(r"(\d+)GB", product)
    return int(match.group(1)) * 1024 if match else None
