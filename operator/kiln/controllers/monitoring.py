"""Monitoring of a steady ModelDeployment: observe its stable version's baseline, the model's
versions and its retraining TrainingJobs, plan (`kiln.monitoring.plan`), act.

The ModelDeployment controller calls `reconcile` after its own reconcile has written status, under
the same per-deployment lock, with the body that write returned. Measurements go through the same
metric providers and worker threads as rollout analysis (the caller's `measure`). Acting is:
create the TrainingJobs a trigger started (one that exists already was started by an earlier
reconcile whose status write was lost, and is left as it is), write status (refused if the
deployment changed meanwhile), then post Events.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pydantic

from kiln.api import modeldeployment, modelversion, resources, trainingjob
from kiln.controllers import metrics as operator_metrics
from kiln.controllers import shared
from kiln.delivery import analysis
from kiln.kube import client
from kiln.monitoring import measure as monitoring_measure
from kiln.monitoring import plan as monitoring_plan

MODEL_DEPLOYMENTS = client.kiln_resource(resources.MODEL_DEPLOYMENT)
MODEL_VERSIONS = client.kiln_resource(resources.MODEL_VERSION)
TRAINING_JOBS = client.kiln_resource(resources.TRAINING_JOB)
_FINISHED = {trainingjob.TrainingJobPhase.SUCCEEDED.value, trainingjob.TrainingJobPhase.FAILED.value}
Measure = Callable[[Sequence[analysis.MeasurementRequest]], dict[str, analysis.Answer]]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Monitor:
    kube: client.Api
    measure: Measure
    metrics: operator_metrics.Metrics
    default_prometheus: str | None = None

    def reconcile(self, body: Mapping[str, Any], now: datetime.datetime) -> None:
        """Watch one ModelDeployment whose status was just written, if it asks for monitoring and is steady."""
        deployment = modeldeployment.ModelDeployment.model_validate(body)
        status = deployment.status or modeldeployment.ModelDeploymentStatus()
        if deployment.spec.monitoring is None or not monitoring_plan.steady(status):
            return
        seen = self._observe(body, deployment, status)
        planned = monitoring_plan.plan(seen, now)
        if planned.measure:
            seen = dataclasses.replace(seen, answers=self._answers(planned.measure))
            planned = monitoring_plan.plan(seen, now)
        self._act(body, planned)

    def _observe(
        self,
        body: Mapping[str, Any],
        deployment: modeldeployment.ModelDeployment,
        status: modeldeployment.ModelDeploymentStatus,
    ) -> monitoring_plan.Observed:
        metadata = deployment.metadata
        namespace, name = metadata.namespace or "default", metadata.name or ""
        model = deployment.spec.model
        versions = [
            v for v in self.kube.list(MODEL_VERSIONS, namespace) if (v.get("spec") or {}).get("modelName") == model
        ]
        stable = next((v for v in versions if v["spec"].get("version") == status.stable_version), None)
        jobs = self.kube.list(TRAINING_JOBS, namespace, f"{modeldeployment.RETRAINING_FOR_LABEL}={name}")
        return monitoring_plan.Observed(
            namespace=namespace,
            name=name,
            generation=metadata.generation,
            annotations=metadata.annotations,
            spec=deployment.spec,
            status=status,
            baseline=_baseline_of(stable),
            versions=tuple(str(v["spec"]["version"]) for v in versions),
            jobs=tuple(_job_of(job) for job in jobs),
            default_prometheus=self.default_prometheus,
        )

    def _answers(self, queries: Sequence[monitoring_measure.Query]) -> dict[str, monitoring_measure.Answer]:
        requests = [
            analysis.MeasurementRequest(
                key=query.key,
                provider=modeldeployment.MetricProviderName.PROMETHEUS,
                expression=query.expression,
                address=query.address,
                error=query.error,
            )
            for query in queries
        ]
        answers = self.measure(requests)
        return {key: monitoring_measure.Answer(answer.value, answer.error) for key, answer in answers.items()}

    def _act(self, body: Mapping[str, Any], planned: monitoring_plan.Plan) -> None:
        for job in planned.create:
            try:
                self.kube.create(TRAINING_JOBS, job)
            except client.ConflictError:
                log.info("TrainingJob %s exists already; an earlier reconcile started it", job["metadata"]["name"])
        wire = planned.status.to_wire()
        metadata = body["metadata"]
        if body.get("status") != wire:
            old = body.get("status")
            body = self.kube.patch_status(MODEL_DEPLOYMENTS, body, wire)
            self.metrics.monitoring_status_written(old, wire)
        self.metrics.drift_seen(metadata.get("namespace") or "default", metadata["name"], wire)
        shared.post_events(self.kube, body, planned.events, log)


def _baseline_of(version: Mapping[str, Any] | None) -> modelversion.Baseline | None:
    if version is None:
        return None
    try:
        return modelversion.ModelVersion.model_validate(version).spec.baseline
    except pydantic.ValidationError:
        return None  # the registry says what is wrong with it; without a baseline drift is not judged


def _job_of(job: Mapping[str, Any]) -> monitoring_plan.Job:
    output = (job.get("spec") or {}).get("output") or {}
    phase = (job.get("status") or {}).get("phase")
    return monitoring_plan.Job(job["metadata"]["name"], output.get("version"), phase in _FINISHED)
