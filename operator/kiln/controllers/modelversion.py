"""The ModelVersion controller: observe the version and its model's other versions, plan, act.

A reconcile reads the namespace's ModelVersions once (the version itself among them, so it acts on
the newest copy), asks `kiln.registry.plan` what to do, and when the plan wants the artifact read,
records the Validating phase first, reads the artifact (bounded by a timeout, on a worker thread,
so a hung store cannot hang the operator) and plans again. Acting is: write status (refused if the
object changed meanwhile), then ask superseded Production versions to step down, then post Events,
so a retried reconcile never posts an Event twice for one change.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from kiln import artifacts
from kiln.api import modelversion, resources
from kiln.controllers import metrics as operator_metrics
from kiln.controllers import shared
from kiln.kube import client
from kiln.registry import observed as registry_observed
from kiln.registry import plan as registry_plan

MODEL_VERSIONS = client.kiln_resource(resources.MODEL_VERSION)
DEFAULT_ARTIFACT_TIMEOUT = 60.0
VERIFY_BYTES_PER_SECOND = 32 << 20
"""The slowest a store is expected to stream: an artifact whose writer recorded its size gets the
time to be read at this rate on top of the timeout, so a 100 GB artifact is verified, not timed out."""

log = logging.getLogger(__name__)

Outcome = registry_observed.ArtifactOutcome


def read_timeout(artifact: modelversion.Artifact, timeout: float) -> float:
    """How long reading the artifact may take: `timeout`, plus its recorded size at VERIFY_BYTES_PER_SECOND."""
    return timeout + (artifact.size_bytes or 0) / VERIFY_BYTES_PER_SECOND


def check_artifact(
    artifact: modelversion.Artifact, namespace: str | None, settings: artifacts.Settings, timeout: float
) -> registry_observed.ArtifactCheck:
    """Read the artifact and compare its digest; every failure is an outcome, never an exception."""
    timeout = read_timeout(artifact, timeout)
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiln-artifact")
    future = worker.submit(artifacts.verify, artifact.uri, artifact.sha256, settings, namespace)
    try:
        size = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        message = f"{artifact.uri}: reading took longer than {timeout:g}s; the digest was not checked"
        return registry_observed.ArtifactCheck(Outcome.UNREACHABLE, message)
    except artifacts.DigestMismatchError as error:
        return registry_observed.ArtifactCheck(Outcome.MISMATCH, str(error))
    except artifacts.ArtifactNotFoundError as error:
        return registry_observed.ArtifactCheck(Outcome.NOT_FOUND, str(error))
    except artifacts.UnsafeURIError as error:
        return registry_observed.ArtifactCheck(Outcome.UNSAFE, str(error))
    except (artifacts.UnsupportedURIError, artifacts.StoreUnavailableError, OSError) as error:
        return registry_observed.ArtifactCheck(Outcome.UNREACHABLE, f"{error}; the digest was not checked")
    finally:
        worker.shutdown(wait=False)  # a read still hanging keeps its thread, not the reconcile
    verified = f"{artifact.uri} has sha256 {artifact.sha256} ({size} bytes)"
    return registry_observed.ArtifactCheck(Outcome.VERIFIED, verified)


@dataclasses.dataclass(frozen=True)
class Controller:
    kube: client.Api
    artifact_settings: artifacts.Settings
    artifact_timeout: float = DEFAULT_ARTIFACT_TIMEOUT
    clock: shared.Clock = shared.utcnow
    metrics: operator_metrics.Metrics = dataclasses.field(default_factory=operator_metrics.Metrics)

    def reconcile(self, namespace: str, name: str) -> None:
        """Bring one ModelVersion's status, and its model's Production stage, up to date."""
        with self.metrics.reconciling(resources.MODEL_VERSION.kind):
            self._reconcile(namespace, name)

    def _reconcile(self, namespace: str, name: str) -> None:
        versions = self.kube.list(MODEL_VERSIONS, namespace)
        body = next((version for version in versions if version["metadata"]["name"] == name), None)
        if body is None:
            return  # deleted since the event: nothing to do
        seen = registry_observed.observe(body, versions)
        planned = registry_plan.plan(seen, self.clock())
        if planned.check_artifact:
            body = self._record(body, planned.status)
            check = check_artifact(seen.spec.artifact, namespace, self.artifact_settings, self.artifact_timeout)
            seen = registry_observed.observe(body, versions, check)
            planned = registry_plan.plan(seen, self.clock())
        self._act(body, planned)

    def _record(self, body: Mapping[str, Any], status: modelversion.ModelVersionStatus) -> dict[str, Any]:
        wire = status.to_wire()
        if body.get("status") == wire:
            return dict(body)
        return self.kube.patch_status(MODEL_VERSIONS, body, wire)

    def _act(self, body: Mapping[str, Any], planned: registry_plan.Plan) -> None:
        body = self._record(body, planned.status)
        namespace = body["metadata"].get("namespace")
        for supersede in planned.supersede:
            request = supersede.request.model_dump_json(by_alias=True, exclude_none=True)
            patch = {
                "metadata": {"annotations": {modelversion.STAGE_REQUEST_ANNOTATION: request}},
                "spec": {"stage": supersede.request.stage.value},
            }
            try:
                self.kube.patch(MODEL_VERSIONS, namespace, supersede.name, patch)
            except client.NotFoundError:
                continue  # deleted meanwhile: it serves nothing any more
        shared.post_events(self.kube, body, planned.events, log)
