"""The ModelVersion the trainer registers, and the API it registers it through.

`ModelVersions` is the one seam to the Kubernetes API: `KubeModelVersions` talks to a cluster with
the pod's service account (`kiln.runtime.incluster`), and `InMemoryModelVersions` is its fake for
tests. Registering is idempotent: when the ModelVersion already exists (a restarted pod) with the
same artifact digest the work is done; with another digest the trainer fails, naming both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from kiln.api import base, modelversion, trainingjob
from kiln.runtime import incluster
from kiln.runtime.trainer import errors

PLURAL = "modelversions"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kiln"}
ATTEMPTS = 5
FIRST_DELAY_SECONDS = 0.5


class AlreadyExistsError(Exception):
    """The API server answered 409: an object of that name exists."""


class ModelVersions(Protocol):
    """Create and read ModelVersions in a namespace."""

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """The created object; AlreadyExistsError when the name is taken."""
        ...

    def get(self, namespace: str, name: str) -> dict[str, Any]: ...


class InMemoryModelVersions:
    """A fake API: ModelVersions in a dict, keyed by (namespace, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (namespace, body["metadata"]["name"])
        if key in self.objects:
            raise AlreadyExistsError(key[1])
        self.objects[key] = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
        return self.objects[key]

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.objects[(namespace, name)]


class KubeModelVersions:
    """ModelVersions through the `kubernetes` client; transient failures (5xx, 429, a dropped
    connection) are retried a few times with back-off."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._api = client.CustomObjectsApi(incluster.api_client())
        self._sleep = sleep

    def _call(self, what: str, call: Callable[[], Any]) -> dict[str, Any]:
        delay = FIRST_DELAY_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            try:
                found: dict[str, Any] = call()
                return found
            except ApiException as error:
                if error.status == 409:
                    raise AlreadyExistsError(what) from None
                if attempt == ATTEMPTS or not (error.status == 429 or error.status >= 500):
                    raise errors.TrainerError(
                        f"{what}: the API server answered {error.status} {error.reason}: {_message(error)}"
                    ) from None
            except HTTPError as error:
                if attempt == ATTEMPTS:
                    raise errors.TrainerError(f"{what}: the API server cannot be reached: {error}") from None
            self._sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call(
            f"creating modelversion {namespace}/{name}",
            lambda: self._api.create_namespaced_custom_object(base.GROUP, base.VERSION, namespace, PLURAL, body),
        )

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(
            f"reading modelversion {namespace}/{name}",
            lambda: self._api.get_namespaced_custom_object(base.GROUP, base.VERSION, namespace, PLURAL, name),
        )


def _message(error: Any) -> str:
    try:
        return str(json.loads(error.body).get("message", error.body))
    except (TypeError, ValueError, AttributeError):
        return str(error.body)


def build(
    output: trainingjob.Output,
    *,
    namespace: str,
    training_job: str,
    training_job_uid: str,
    spec: modelversion.ModelVersionSpec,
) -> modelversion.ModelVersion:
    """The ModelVersion for the output, owned by its TrainingJob."""
    owner = {
        "apiVersion": base.API_VERSION,
        "kind": "TrainingJob",
        "name": training_job,
        "uid": training_job_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    metadata = base.ObjectMeta.model_validate(
        {
            "name": output.model_version_name(),
            "namespace": namespace,
            "labels": {**MANAGED_BY, "kiln.dev/model": output.model_name, "kiln.dev/trainingjob": training_job},
            "ownerReferences": [owner],
        }
    )
    return modelversion.ModelVersion(metadata=metadata, spec=spec)


def register(api: ModelVersions, version: modelversion.ModelVersion) -> bool:
    """Create the ModelVersion; True when created, False when an identical one was there already."""
    namespace, name = version.metadata.namespace or "", version.metadata.name or ""
    try:
        api.create(namespace, version.to_wire())
    except AlreadyExistsError:
        existing = api.get(namespace, name)
        spec = existing.get("spec") or {}
        digest = (spec.get("artifact") or {}).get("sha256")
        if digest == version.spec.artifact.sha256:
            return False
        trained_by = (spec.get("lineage") or {}).get("trainingJob") or "another job"
        raise errors.TrainerError(
            f"modelversion {namespace}/{name} already exists with artifact sha256 {digest} (from {trained_by}), "
            f"not this run's {version.spec.artifact.sha256}; register under a new output.version"
        ) from None
    return True
