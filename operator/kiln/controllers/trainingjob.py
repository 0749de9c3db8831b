"""The TrainingJob controller: observe the job and its children, plan, act.

One reconcile at a time per job (timers, pod events and spec changes all land here). Admission is
serialised across jobs: the gang scheduler reads the cluster and the Admitted status is written
before the next job is looked at, so two jobs can never both be admitted into the same free
capacity. Acting is: create what is missing (an object that exists already is left alone, so a
restarted operator never duplicates a worker), delete what must go, write status (refused if the
job changed meanwhile), then post Events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from kiln.api import resources, trainingjob
from kiln.controllers import metrics as operator_metrics
from kiln.controllers import shared
from kiln.kube import client
from kiln.providers import gang
from kiln.training import admission, workers
from kiln.training import plan as training_plan

TRAINING_JOBS = client.kiln_resource(resources.TRAINING_JOB)
MODEL_VERSIONS = client.kiln_resource(resources.MODEL_VERSION)
POD_GROUPS = {
    trainingjob.GangScheduler.COSCHEDULING: client.COSCHEDULING_POD_GROUPS,
    trainingjob.GangScheduler.VOLCANO: client.VOLCANO_POD_GROUPS,
}
Object = dict[str, Any]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Controller:
    kube: client.Api
    settings: training_plan.Settings = dataclasses.field(default_factory=training_plan.Settings)
    clock: shared.Clock = shared.utcnow
    metrics: operator_metrics.Metrics = dataclasses.field(default_factory=operator_metrics.Metrics)
    _admission: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    _locks: shared.ObjectLocks = dataclasses.field(default_factory=shared.ObjectLocks)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the lock of a deleted job."""
        self._locks.forget(namespace, name)
        self.metrics.training_job_seen(namespace, name, None)

    def reconcile(self, namespace: str, name: str) -> None:
        """Bring one TrainingJob's children and status up to date."""
        with self._locks.hold(namespace, name), self.metrics.reconciling(resources.TRAINING_JOB.kind):
            body = self.kube.get(TRAINING_JOBS, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                self.metrics.training_job_seen(namespace, name, None)
                return
            finished = (body.get("status") or {}).get("phase") in training_plan.FINISHED
            nodes = [] if finished else self.kube.list(client.NODES, None)  # only placement reads them
            seen = self._observe(body, nodes)
            planned = training_plan.plan(seen, self.clock(), self.settings)
            if planned.needs_logs:
                seen = dataclasses.replace(seen, logs=self._logs(namespace, planned.needs_logs))
                planned = training_plan.plan(seen, self.clock(), self.settings)
            if not planned.needs_admission:
                self._act(body, planned)
                return
            with self._admission:
                seen = dataclasses.replace(seen, admission=self._admit(body, nodes))
                self._act(body, training_plan.plan(seen, self.clock(), self.settings))

    # -- observe ------------------------------------------------------------------------------

    def _observe(self, body: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> training_plan.Observed:
        job = workers.Job.from_body(body)
        status = trainingjob.TrainingJobStatus.model_validate(body.get("status") or {})
        pods = self.kube.list(client.PODS, job.namespace, f"{workers.JOB_LABEL}={job.name}")
        owned = [pod for pod in pods if shared.owned_by(pod, job.uid)]
        found = [worker for worker in map(training_plan.Worker.from_pod, owned) if worker is not None]
        if status.phase in training_plan.FINISHED:
            return training_plan.Observed(body=body, workers=found)
        children = frozenset(kind for kind, exists in self._children(job).items() if exists)
        store = workers.model_store_pvc(job)
        output = job.spec.output
        model_version = self.kube.get(MODEL_VERSIONS, job.namespace, output.model_version_name()) if output else None
        return training_plan.Observed(
            body=body,
            workers=found,
            children=children,
            model_store_exists=store is None
            or self.kube.get(client.PERSISTENT_VOLUME_CLAIMS, job.namespace, store["metadata"]["name"]) is not None,
            trainer_account_exists=self.kube.get(client.SERVICE_ACCOUNTS, job.namespace, workers.TRAINER_ACCOUNT)
            is not None,
            cpu_nodes_exist=admission.cpu_nodes_for(job, nodes),
            model_version=model_version,
        )

    def _children(self, job: workers.Job) -> dict[str, bool]:
        found = {"Service": self.kube.get(client.SERVICES, job.namespace, job.name) is not None}
        claim = workers.checkpoint_claim(job)
        if claim:
            found["PersistentVolumeClaim"] = (
                self.kube.get(client.PERSISTENT_VOLUME_CLAIMS, job.namespace, claim) is not None
            )
        pod_groups = POD_GROUPS.get(job.spec.gang_scheduling.scheduler)
        if pod_groups is not None:
            found["PodGroup"] = self.kube.get(pod_groups, job.namespace, job.name) is not None
        return found

    def _logs(self, namespace: str, pod: str) -> str:
        try:
            return self.kube.logs(namespace, pod, workers.TRAINER_CONTAINER, training_plan.LOG_LINES)
        except client.ApiError as error:
            return f"(its logs could not be read: {error})"

    def _admit(self, body: Mapping[str, Any], nodes: Sequence[Object]) -> admission.Admission:
        job = workers.Job.from_body(body)
        scheduler = gang.SCHEDULERS[job.spec.gang_scheduling.scheduler]
        priorities, default_priority = (
            admission.priority_classes(self.kube.list(client.PRIORITY_CLASSES, None))
            if scheduler.needs_cluster
            else ({}, 0)
        )
        candidate = admission.gang_of(job, nodes, priorities, default_priority)
        return scheduler.admit(candidate, lambda: self._cluster(nodes, priorities, default_priority))

    def _cluster(
        self, nodes: Sequence[Object], priorities: Mapping[str, int], default_priority: int
    ) -> admission.Cluster:
        pods = self.kube.list(client.PODS, None)
        jobs = self.kube.list(TRAINING_JOBS, None)
        return admission.cluster_snapshot(nodes, pods, jobs, priorities, default_priority)

    # -- act ----------------------------------------------------------------------------------

    def _act(self, body: Mapping[str, Any], planned: training_plan.Plan) -> None:
        namespace = body["metadata"].get("namespace") or "default"
        self._create(planned.create)
        if planned.register is not None:
            self._create([planned.register], MODEL_VERSIONS)
        for pod in planned.delete_pods:
            self.kube.delete(client.PODS, namespace, pod)
        wire = planned.status.to_wire()
        if body.get("status") != wire and not planned.delete_job:
            body = self.kube.patch_status(TRAINING_JOBS, body, wire)
        job = workers.Job.from_body(body)
        gpus = job.spec.resources.gpus.count * job.spec.workers if job.spec.resources.gpus else 0
        self.metrics.training_job_seen(namespace, job.name, None if planned.delete_job else planned.status.phase, gpus)
        shared.post_events(self.kube, body, planned.events, log)
        if planned.delete_job:
            self._expire(body)

    def _create(self, objects: Sequence[Mapping[str, Any]], resource: client.Resource | None = None) -> None:
        for obj in objects:
            with contextlib.suppress(client.ConflictError):  # there already: never a duplicate
                self.kube.create(resource or client.resource_of(obj), obj)

    def _expire(self, body: Mapping[str, Any]) -> None:
        """ttlSecondsAfterFinished: delete the job and what it owns, except its ModelVersion."""
        job = workers.Job.from_body(body)
        for pod in self.kube.list(client.PODS, job.namespace, f"{workers.JOB_LABEL}={job.name}"):
            self.kube.delete(client.PODS, job.namespace, pod["metadata"]["name"])
        self.kube.delete(client.SERVICES, job.namespace, job.name)
        checkpoint = workers.checkpoint_pvc(job)
        if checkpoint is not None:
            self.kube.delete(client.PERSISTENT_VOLUME_CLAIMS, job.namespace, checkpoint["metadata"]["name"])
        pod_groups = POD_GROUPS.get(job.spec.gang_scheduling.scheduler)
        if pod_groups is not None:
            self.kube.delete(pod_groups, job.namespace, job.name)
        # Orphan: the ModelVersion the job registered is owned by it and must outlive it.
        self.kube.delete(TRAINING_JOBS, job.namespace, job.name, propagation="Orphan")
