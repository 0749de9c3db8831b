"""The CronJob controller, after kube-controller-manager's (cronjob_controllerv2).

At each time `spec.schedule` names (in `spec.timeZone`, or the dev cluster's own zone, as
kube-controller-manager uses its own), one Job from `spec.jobTemplate`, named
`<cronjob>-<scheduled minute since the epoch>` so a restarted controller never runs a time twice.
Only the latest missed time runs, and only within `startingDeadlineSeconds`; `concurrencyPolicy`
Allow, Forbid (skip while one runs) or Replace (delete the running one first); `suspend`; finished
Jobs kept to `successfulJobsHistoryLimit` and `failedJobsHistoryLimit`.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Callable, Iterable
from typing import Any

import croniter

from kiln.devcluster import controllers, errors, kinds, objects, registry, schema, store
from kiln.devcluster.controllers import JOB, Key

Object = dict[str, Any]

CRON_JOB = "cronjobs.batch"
SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"


def validate(cluster: registry.Registry, rt: kinds.ResourceType, cron_job: Object, old: Object | None) -> None:
    """Admission for CronJobs: a schedule and time zone the controller can follow, or 422."""
    if rt.kind != "CronJob" or rt.group != "batch":
        return
    spec = cron_job.get("spec") or {}
    problems: list[schema.FieldError] = []
    schedule = spec.get("schedule")
    if isinstance(schedule, str) and "TZ=" in schedule:
        detail = "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
        problems.append(schema.FieldError("spec.schedule", schema.INVALID, detail, schedule))
    elif isinstance(schedule, str) and not croniter.croniter.is_valid(schedule):
        problems.append(schema.FieldError("spec.schedule", schema.INVALID, "unparseable cron expression", schedule))
    zone = spec.get("timeZone")
    if zone is not None and _zone(zone) is None:
        problems.append(schema.FieldError("spec.timeZone", schema.INVALID, "unknown time zone", zone))
    if problems:
        raise errors.invalid("CronJob", "batch", cron_job["metadata"].get("name", ""), problems)


def _zone(name: str) -> datetime.tzinfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def _zone_of(cron_job: Object) -> datetime.tzinfo:
    zone = cron_job["spec"].get("timeZone")
    return (_zone(zone) if zone else None) or datetime.datetime.now().astimezone().tzinfo or datetime.UTC


def _finished(job: Object) -> str | None:
    """'Complete' or 'Failed' once the Job has finished."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def _reference(job: Object) -> Object:
    metadata = job["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": metadata["name"],
        "namespace": metadata["namespace"],
        "uid": metadata["uid"],
        "resourceVersion": metadata.get("resourceVersion"),
    }


class CronJobController(controllers.Controller):
    name = "cronjob-controller"

    def __init__(
        self,
        cluster: registry.Registry,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        super().__init__(cluster)
        self.clock = clock

    def initial_keys(self) -> Iterable[Key]:
        return self.keys_of(CRON_JOB)

    def keys_for(self, event: store.Event) -> Iterable[Key]:
        if event.resource == CRON_JOB:
            return [controllers.object_key(event)]
        if event.resource == JOB:
            owner = controllers.controller_named(event.object, "CronJob")
            if owner:
                return [(event.object["metadata"].get("namespace", ""), owner)]
        return ()

    async def reconcile(self, key: Key) -> float | None:
        namespace, name = key
        cron_job = self.client.get(CRON_JOB, namespace, name)
        if cron_job is None or cron_job["metadata"].get("deletionTimestamp"):
            return None
        spec = cron_job["spec"]
        now = self.clock()
        jobs = controllers.owned_by(self.client.list(JOB, namespace), cron_job)
        status = controllers.copied(cron_job.get("status") or {})
        self._see_finished(cron_job, jobs, status)
        running = [job for job in jobs if _finished(job) is None and not job["metadata"].get("deletionTimestamp")]
        due = self._latest_due(cron_job, status, now)
        if due is not None and not spec.get("suspend"):
            started = self._start(cron_job, running, due, now)
            if started is not None:
                running = [*[job for job in running if spec.get("concurrencyPolicy") != "Replace"], started]
                status["lastScheduleTime"] = objects.format_time(due)
        status["active"] = [_reference(job) for job in running]
        self._trim_history(spec, jobs)
        self.client.update_status(CRON_JOB, cron_job, {k: v for k, v in status.items() if v not in (None, [])})
        upcoming = croniter.croniter(spec["schedule"], now.astimezone(_zone_of(cron_job)))
        return max((upcoming.get_next(datetime.datetime) - now).total_seconds(), 0.05)

    @staticmethod
    def _latest_due(cron_job: Object, status: Object, now: datetime.datetime) -> datetime.datetime | None:
        """The latest scheduled time not yet run: of all the times missed (an operator down for
        days), only the last runs, as kube-controller-manager does."""
        zone = _zone_of(cron_job)
        latest: datetime.datetime = croniter.croniter(cron_job["spec"]["schedule"], now.astimezone(zone)).get_prev(
            datetime.datetime
        )
        since = objects.parse_time(status.get("lastScheduleTime") or cron_job["metadata"]["creationTimestamp"])
        return latest.astimezone(datetime.UTC) if latest > since else None

    def _start(
        self, cron_job: Object, running: list[Object], due: datetime.datetime, now: datetime.datetime
    ) -> Object | None:
        spec, name = cron_job["spec"], cron_job["metadata"]["name"]
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and (now - due).total_seconds() > int(deadline):
            missed = f"Missed scheduled time to start a job: {objects.format_time(due)}"
            self.client.event(cron_job, "Warning", "MissSchedule", missed)
            return None
        policy = spec.get("concurrencyPolicy") or "Allow"
        if running and policy == "Forbid":
            why = "Not starting job because prior execution is running and concurrency policy is Forbid"
            self.client.event(cron_job, "Normal", "JobAlreadyActive", why)
            return None
        if policy == "Replace":
            for job in running:
                metadata = job["metadata"]
                self.client.delete(JOB, metadata["namespace"], metadata["name"], {"propagationPolicy": "Background"})
                self.client.event(cron_job, "Normal", "SuccessfulDelete", f"Deleted job {metadata['name']}")
        template = spec.get("jobTemplate") or {}
        template_metadata = template.get("metadata") or {}
        job_name = f"{name}-{int(due.timestamp()) // 60}"
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name,
                "namespace": cron_job["metadata"]["namespace"],
                "labels": dict(template_metadata.get("labels") or {}),
                "annotations": {
                    **(template_metadata.get("annotations") or {}),
                    SCHEDULED_TIMESTAMP: objects.format_time(due),
                },
                "ownerReferences": [controllers.owner_reference(cron_job)],
            },
            "spec": controllers.copied(template.get("spec") or {}),
        }
        try:
            created = self.client.create(JOB, cron_job["metadata"]["namespace"], body)
        except errors.ApiError as error:
            if error.code != 409:
                self.client.event(cron_job, "Warning", "FailedCreate", f"Error creating job: {error}")
                raise
            return self.client.get(JOB, cron_job["metadata"]["namespace"], job_name)
        self.client.event(cron_job, "Normal", "SuccessfulCreate", f"Created job {job_name}")
        return created

    def _see_finished(self, cron_job: Object, jobs: list[Object], status: Object) -> None:
        was_active = {ref.get("uid") for ref in status.get("active") or []}
        for job in jobs:
            outcome = _finished(job)
            if outcome is None or job["metadata"]["uid"] not in was_active:
                continue
            message = f"Saw completed job: {job['metadata']['name']}, condition: {outcome}"
            self.client.event(cron_job, "Normal", "SawCompletedJob", message)
            completed = (job.get("status") or {}).get("completionTime")
            if outcome == "Complete" and completed:
                status["lastSuccessfulTime"] = completed

    def _trim_history(self, spec: Object, jobs: list[Object]) -> None:
        for outcome, limit in (
            ("Complete", spec.get("successfulJobsHistoryLimit", 3)),
            ("Failed", spec.get("failedJobsHistoryLimit", 1)),
        ):
            finished = sorted(
                (job for job in jobs if _finished(job) == outcome and not job["metadata"].get("deletionTimestamp")),
                key=lambda job: job["metadata"]["creationTimestamp"],
            )
            for job in finished[: max(len(finished) - int(limit), 0)]:
                metadata = job["metadata"]
                self.client.delete(JOB, metadata["namespace"], metadata["name"], {"propagationPolicy": "Background"})
