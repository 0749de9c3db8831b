"""What each Kubeflow Pipelines component does, as plain functions over `kiln.kube`.

Each step creates or patches one Kiln object and waits, by bounded polling, until the operator
says how it ended: a TrainingJob Succeeded or Failed, a ModelVersion Validated or Rejected, a
ModelDeployment Healthy on the new version or RolledBack. An ending that is not the hoped-for one
raises `StepFailedError` with the object's own status message, which fails the pipeline task and names
the reason in its log. The components (`kiln.kfp.components`) only call these, so a step is
tested and run without KFP.
"""

from __future__ import annotations

import contextlib
import pathlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kiln.api import base, modelversion, resources, trainingjob
from kiln.kube import client
from kiln.runtime.trainer import datasets, expectations, registration

TRAINING_JOBS = client.kiln_resource(resources.TRAINING_JOB)
MODEL_VERSIONS = client.kiln_resource(resources.MODEL_VERSION)
MODEL_DEPLOYMENTS = client.kiln_resource(resources.MODEL_DEPLOYMENT)
DEFAULT_TIMEOUT_SECONDS = 1800.0
POLL_SECONDS = 2.0


class StepFailedError(Exception):
    """The object ended otherwise than the step needs; the message says how, in the operator's words."""


@dataclass
class Waiter:
    """Bounded polling: `until(read)` reads again every `poll` seconds until it gives a value, and
    fails naming `what` once `timeout` seconds have passed."""

    timeout: float = DEFAULT_TIMEOUT_SECONDS
    poll: float = POLL_SECONDS
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = field(default=time.sleep)

    def until(self, read: Callable[[], Any], what: str) -> Any:
        deadline = self.clock() + self.timeout
        while True:
            found = read()
            if found is not None:
                return found
            if self.clock() >= deadline:
                raise StepFailedError(f"{what} did not happen within {self.timeout:g}s")
            self.sleep(self.poll)


def _status(kube: client.Api, resource: client.Resource, namespace: str, name: str) -> dict[str, Any]:
    found = kube.get(resource, namespace, name)
    if found is None:
        raise StepFailedError(f"{resource.kind} {namespace}/{name} does not exist")
    return dict(found.get("status") or {})


def from_struct(value: Any) -> Any:
    """A KFP `dict` parameter as the API wants it. KFP carries dicts as protobuf Structs, whose only
    number is a double, so `randomSeed: 7` arrives as 7.0; whole numbers become ints again (a float
    field takes an int, an int field refuses a float)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: from_struct(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_struct(item) for item in value]
    return value


def validate_dataset(namespace: str, spec: Mapping[str, Any], dataset_path: str = "") -> int:
    """Check the dataset of a TrainingJob `spec` against its expectations, as kiln-trainer will
    before fitting; the number of rows. StepFailedError names every broken one."""
    trainer = trainingjob.TrainingJobSpec.model_validate(from_struct(spec)).sklearn
    if trainer is None:
        raise StepFailedError("the TrainingJob has no sklearn trainer, so no dataset to validate")
    check = expectations.checker(trainer.dataset, namespace, registration.KubeModelVersions)
    try:
        data = datasets.load(trainer, pathlib.Path(dataset_path) if dataset_path else None, check)
    except expectations.DatasetRejected as rejected:
        raise StepFailedError(str(rejected)) from None
    return int(data.features.shape[0])


def submit_training_job(kube: client.Api, namespace: str, name: str, spec: Mapping[str, Any], waiter: Waiter) -> str:
    """Create TrainingJob `name` (or find the one a previous attempt created) and wait until it
    ends; the name of the ModelVersion it registered, empty when it registers none."""
    spec = from_struct(spec)
    trainingjob.TrainingJobSpec.model_validate(spec)
    body = {"apiVersion": base.API_VERSION, "kind": "TrainingJob", "metadata": {"name": name, "namespace": namespace}}
    # A retried task waits on the job its first attempt created.
    with contextlib.suppress(client.ConflictError):
        kube.create(TRAINING_JOBS, {**body, "spec": dict(spec)})

    def ended() -> dict[str, Any] | None:
        status = _status(kube, TRAINING_JOBS, namespace, name)
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = waiter.until(ended, f"trainingjob {namespace}/{name} finishing")
    if status["phase"] == "Failed":
        raise StepFailedError(f"trainingjob {namespace}/{name} failed: {status.get('message', '')}")
    return str(status.get("modelVersion") or "")


def gate_model_version(kube: client.Api, namespace: str, name: str, waiter: Waiter) -> str:
    """Wait until ModelVersion `name` passes or fails its gates; its version when Validated."""

    def judged() -> dict[str, Any] | None:
        status = _status(kube, MODEL_VERSIONS, namespace, name)
        return status if status.get("phase") in ("Validated", "Rejected") else None

    status = waiter.until(judged, f"modelversion {namespace}/{name} being judged by its gates")
    if status["phase"] == "Rejected":
        raise StepFailedError(f"modelversion {namespace}/{name} was rejected: {status.get('message', '')}")
    found = kube.get(MODEL_VERSIONS, namespace, name) or {}
    return modelversion.ModelVersion.model_validate(found).spec.version


ENDED_OTHERWISE = frozenset({"RolledBack", "Aborted", "Refused", "Discarded", "Superseded"})
"""Rollout outcomes (status.history) that leave a version not serving."""


def roll_out(
    kube: client.Api, namespace: str, name: str, version: str, waiter: Waiter, *, fail_on_rollback: bool = True
) -> str:
    """Set ModelDeployment `name` to `version` and wait until it is Healthy on it, or its rollout
    ended otherwise (rolled back, refused, aborted, superseded); `Healthy` or that outcome, which
    raises StepFailedError when `fail_on_rollback`."""
    patched = kube.patch(MODEL_DEPLOYMENTS, namespace, name, {"spec": {"version": version}})
    generation = int(patched.get("metadata", {}).get("generation") or 0)

    def ended() -> str | None:
        status = _status(kube, MODEL_DEPLOYMENTS, namespace, name)
        if int(status.get("observedGeneration") or 0) < generation:
            return None
        if status.get("phase") == "Healthy" and status.get("stableVersion") == version:
            return "Healthy"
        last = (status.get("history") or [{}])[-1]
        if last.get("version") == version and last.get("outcome") in ENDED_OTHERWISE:
            if fail_on_rollback:
                why = status.get("message") or last.get("reason") or ""
                raise StepFailedError(
                    f"modeldeployment {namespace}/{name} did not ship {version}: {last['outcome']}: {why}"
                )
            return str(last["outcome"])
        return None

    outcome: str = waiter.until(ended, f"modeldeployment {namespace}/{name} rolling out {version}")
    return outcome
