"""The Job controller, after kube-controller-manager's.

Runs up to `parallelism` pods until `completions` succeed (each index once,
for Indexed jobs), replaces failed pods after an exponential back-off until
`backoffLimit` failures, stops at `activeDeadlineSeconds`, honours `suspend`,
and deletes a finished Job after `ttlSecondsAfterFinished`. Finished pods are
counted through the `batch.kubernetes.io/job-tracking` finalizer, so a pod
deleted before it is counted still counts.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from kiln.devcluster import controllers, kinds, objects, registry, scheduling, store, workloads
from kiln.devcluster.controllers import JOB, POD, Key

Object = dict[str, Any]

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
MAX_BACKOFF_SECONDS = 360.0


def default_selector(cluster: registry.Registry, rt: kinds.ResourceType, job: Object, old: Object | None) -> None:
    """Admission for Jobs, as the API server does it: the selector and pod labels name the Job's uid."""
    if rt.kind != "Job" or old is not None or job.get("spec", {}).get("manualSelector"):
        return
    metadata = job["metadata"]
    labels = {CONTROLLER_UID: metadata["uid"], JOB_NAME: metadata["name"]}
    spec = job.setdefault("spec", {})
    spec.setdefault("selector", {"matchLabels": {CONTROLLER_UID: metadata["uid"]}})
    template_labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
    for key, value in {**labels, "controller-uid": metadata["uid"], "job-name": metadata["name"]}.items():
        template_labels.setdefault(key, value)


def _pod_failures(pod: Object) -> int:
    """Failures a pod contributes: its failure, or its container restarts under OnFailure."""
    status = pod.get("status") or {}
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or [])
    return (1 if status.get("phase") == "Failed" else 0) + restarts


def _index_of(pod: Object) -> int | None:
    value = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX)
    return int(value) if value is not None and value.isdigit() else None


def _format_indexes(indexes: set[int]) -> str:
    """Completed indexes as the API writes them: `0-3,5,7,8`; only three or more in a row make a range."""
    runs: list[list[int]] = []
    for index in sorted(indexes):
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    parts: list[str] = []
    for run in runs:
        parts.extend([f"{run[0]}-{run[-1]}"] if len(run) >= 3 else map(str, run))
    return ",".join(parts)


def _parse_indexes(text: str | None) -> set[int]:
    indexes: set[int] = set()
    for part in (text or "").split(","):
        if "-" in part:
            low, high = part.split("-")
            indexes.update(range(int(low), int(high) + 1))
        elif part:
            indexes.add(int(part))
    return indexes


class JobController(controllers.Controller):
    name = "job-controller"

    def __init__(self, cluster: registry.Registry, backoff_seconds: float) -> None:
        super().__init__(cluster)
        self.backoff_seconds = backoff_seconds

    def initial_keys(self) -> Iterable[Key]:
        return self.keys_of(JOB)

    def keys_for(self, event: store.Event) -> Iterable[Key]:
        if event.resource == JOB:
            return [controllers.object_key(event)]
        if event.resource == POD:
            owner = controllers.controller_named(event.object, "Job")
            if owner:
                return [(event.object["metadata"].get("namespace", ""), owner)]
        return ()

    async def reconcile(self, key: Key) -> float | None:
        namespace, name = key
        job = self.client.get(JOB, namespace, name)
        if job is None:
            return None
        pods = controllers.owned_by(self.client.list(POD, namespace), job)
        now = datetime.datetime.now(datetime.UTC)
        status = self._count(job, pods)
        if job["metadata"].get("deletionTimestamp"):
            self._release(pods, status)
            return None
        finished = _finished_condition(status)
        again: float | None = None
        if finished is None:
            again = self._drive(job, pods, status, now)
        else:
            self._stop_active(job, pods)
        status["ready"] = len([p for p in pods if workloads.is_active(p) and controllers.is_pod_ready(p)])
        status["active"] = len([p for p in pods if workloads.is_active(p)])
        status["terminating"] = len([p for p in pods if p["metadata"].get("deletionTimestamp")])
        written = self.client.update_status(JOB, job, _compact(status))
        self._release(pods, status)
        if written is not None:
            self._clear_counted(job, status)
        finished = _finished_condition(status)
        if finished is not None:
            return self._expire(job, finished, now)
        return again

    def _count(self, job: Object, pods: list[Object]) -> Object:
        """Fold finished pods still holding the tracking finalizer into the status counters."""
        status = controllers.copied(job.get("status") or {})
        uncounted = status.setdefault("uncountedTerminatedPods", {})
        counted = set(uncounted.get("succeeded") or []) | set(uncounted.get("failed") or [])
        completed = _parse_indexes(status.get("completedIndexes"))
        indexed = job["spec"].get("completionMode") == "Indexed"
        for pod in pods:
            uid = pod["metadata"]["uid"]
            if TRACKING_FINALIZER not in (pod["metadata"].get("finalizers") or []) or uid in counted:
                continue
            phase = (pod.get("status") or {}).get("phase")
            deleted_early = pod["metadata"].get("deletionTimestamp") and phase not in scheduling.TERMINAL_PHASES
            if phase == "Succeeded":
                if indexed and _index_of(pod) is not None:
                    completed.add(_index_of(pod))  # type: ignore[arg-type]
                status["succeeded"] = status.get("succeeded", 0) + 1
                uncounted.setdefault("succeeded", []).append(uid)
            elif phase == "Failed" or deleted_early:
                status["failed"] = status.get("failed", 0) + 1
                uncounted.setdefault("failed", []).append(uid)
        if indexed:
            status["completedIndexes"] = _format_indexes(completed)
        return status

    def _release(self, pods: list[Object], status: Object) -> None:
        """Drop the tracking finalizer from pods the status now counts."""
        uncounted = status.get("uncountedTerminatedPods") or {}
        counted = set(uncounted.get("succeeded") or []) | set(uncounted.get("failed") or [])
        for pod in pods:
            finalizers = pod["metadata"].get("finalizers") or []
            if pod["metadata"]["uid"] in counted and TRACKING_FINALIZER in finalizers:
                remaining = [f for f in finalizers if f != TRACKING_FINALIZER]
                current = self.client.get(POD, pod["metadata"]["namespace"], pod["metadata"]["name"])
                if current is not None:
                    self.client.update(POD, {**current, "metadata": {**current["metadata"], "finalizers": remaining}})

    def _clear_counted(self, job: Object, status: Object) -> None:
        """Forget uids of counted pods once they no longer hold the finalizer."""
        uncounted = status.get("uncountedTerminatedPods") or {}
        namespace = job["metadata"]["namespace"]
        holding = {
            pod["metadata"]["uid"]
            for pod in self.client.list(POD, namespace)
            if TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or [])
        }
        kept = {kind: [uid for uid in uids if uid in holding] for kind, uids in uncounted.items()}
        if kept != uncounted:
            current = self.client.get(JOB, namespace, job["metadata"]["name"])
            if current is not None:
                fresh = controllers.copied(current.get("status") or {})
                fresh["uncountedTerminatedPods"] = {kind: uids for kind, uids in kept.items() if uids}
                self.client.update_status(JOB, current, _compact(fresh))

    def _drive(self, job: Object, pods: list[Object], status: Object, now: datetime.datetime) -> float | None:
        """Start, fail, complete or suspend the job; create the pods it still needs."""
        spec = job["spec"]
        stamp = objects.format_time(now)
        conditions = list(status.get("conditions") or [])
        active = [pod for pod in pods if workloads.is_active(pod)]
        if spec.get("suspend"):
            self._stop_active(job, pods)
            if not _is_true(status, "Suspended"):
                self.client.event(job, "Normal", "Suspended", "Job suspended")
            status["conditions"] = objects.set_condition(
                conditions, "Suspended", "True", "JobSuspended", "Job suspended", stamp, lastProbeTime=stamp
            )
            status.pop("startTime", None)
            return None
        if _is_true(status, "Suspended"):
            conditions = objects.set_condition(
                conditions, "Suspended", "False", "JobResumed", "Job resumed", stamp, lastProbeTime=stamp
            )
            self.client.event(job, "Normal", "Resumed", "Job resumed")
        status.setdefault("startTime", stamp)
        completions = spec.get("completions")
        succeeded = int(status.get("succeeded", 0))
        failures = int(status.get("failed", 0)) + sum(_pod_failures(p) for p in active)
        if failures > int(spec.get("backoffLimit", 6)):
            status["conditions"] = conditions
            message = "Job has reached the specified backoff limit"
            self._fail(job, pods, status, reason="BackoffLimitExceeded", message=message, stamp=stamp)
            return None
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None:
            elapsed = (now - objects.parse_time(status["startTime"])).total_seconds()
            if elapsed >= int(deadline):
                status["conditions"] = conditions
                message = "Job was active longer than specified deadline"
                self._fail(job, pods, status, reason="DeadlineExceeded", message=message, stamp=stamp)
                return None
        done = (
            len(_parse_indexes(status.get("completedIndexes"))) >= int(completions)
            if spec.get("completionMode") == "Indexed" and completions is not None
            else (succeeded >= int(completions) if completions is not None else succeeded > 0 and not active)
        )
        if done:
            status["completionTime"] = stamp
            conditions = objects.set_condition(
                conditions,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                stamp,
                lastProbeTime=stamp,
            )
            status["conditions"] = objects.set_condition(
                conditions,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                stamp,
                lastProbeTime=stamp,
            )
            self.client.event(job, "Normal", "Completed", "Job completed")
            return None
        status["conditions"] = conditions
        wait = self._backoff_remaining(status, pods, now)
        if wait > 0:
            return wait
        self._create_pods(job, active, status)
        return float(deadline) - (now - objects.parse_time(status["startTime"])).total_seconds() if deadline else None

    def _backoff_remaining(self, status: Object, pods: list[Object], now: datetime.datetime) -> float:
        failed = int(status.get("failed", 0))
        if failed == 0:
            return 0.0
        delay = min(self.backoff_seconds * 2 ** (failed - 1), MAX_BACKOFF_SECONDS)
        finished = [
            objects.parse_time(c["state"]["terminated"]["finishedAt"])
            for pod in pods
            if (pod.get("status") or {}).get("phase") == "Failed"
            for c in (pod.get("status") or {}).get("containerStatuses") or []
            if (c.get("state") or {}).get("terminated", {}).get("finishedAt")
        ]
        if not finished:
            return 0.0
        return float(max(delay - (now - max(finished)).total_seconds(), 0.0))

    def _create_pods(self, job: Object, active: list[Object], status: Object) -> None:
        spec = job["spec"]
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        if spec.get("completionMode") == "Indexed" and completions is not None:
            busy = {_index_of(pod) for pod in active}
            done = _parse_indexes(status.get("completedIndexes"))
            todo = [i for i in range(int(completions)) if i not in busy and i not in done]
            for index in todo[: max(parallelism - len(active), 0)]:
                self._create_pod(job, index)
            return
        remaining = int(completions) - int(status.get("succeeded", 0)) if completions is not None else parallelism
        for _ in range(max(min(parallelism, remaining) - len(active), 0)):
            self._create_pod(job, None)

    def _create_pod(self, job: Object, index: int | None) -> None:
        name = job["metadata"]["name"]
        body = workloads.pod_from_template(
            job, job["spec"]["template"], f"{name}-{index}-" if index is not None else f"{name}-"
        )
        body["metadata"]["finalizers"] = [TRACKING_FINALIZER]
        labels = body["metadata"]["labels"]
        if index is not None:
            body["metadata"]["annotations"][COMPLETION_INDEX] = str(index)
            labels[COMPLETION_INDEX] = str(index)
            body["spec"].setdefault("hostname", f"{name}-{index}")
            for container in body["spec"].get("containers") or []:
                env = container.setdefault("env", [])
                env.append(
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}},
                    }
                )
        created = self.client.create(POD, job["metadata"]["namespace"], body)
        self.client.event(job, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")

    def _fail(self, job: Object, pods: list[Object], status: Object, *, reason: str, message: str, stamp: str) -> None:
        self._stop_active(job, pods)
        conditions = objects.set_condition(
            status.get("conditions") or [], "FailureTarget", "True", reason, message, stamp, lastProbeTime=stamp
        )
        status["conditions"] = objects.set_condition(
            conditions, "Failed", "True", reason, message, stamp, lastProbeTime=stamp
        )
        self.client.event(job, "Warning", reason, message)

    def _stop_active(self, job: Object, pods: list[Object]) -> None:
        for pod in pods:
            if workloads.is_active(pod):
                self.client.delete(POD, job["metadata"]["namespace"], pod["metadata"]["name"])

    def _expire(self, job: Object, finished: Object, now: datetime.datetime) -> float | None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return None
        since = objects.parse_time(finished.get("lastTransitionTime") or objects.format_time(now))
        remaining = int(ttl) - (now - since).total_seconds()
        if remaining > 0:
            return remaining
        self.client.delete(
            JOB, job["metadata"]["namespace"], job["metadata"]["name"], {"propagationPolicy": "Foreground"}
        )
        return None


def _is_true(status: Object, kind: str) -> bool:
    found = controllers.condition({"status": status}, kind)
    return bool(found and found.get("status") == "True")


def _finished_condition(status: Object) -> Object | None:
    for entry in status.get("conditions") or []:
        if entry.get("type") in ("Complete", "Failed") and entry.get("status") == "True":
            return dict(entry)
    return None


def _compact(status: Object) -> Object:
    """Zero counters and empty lists are omitted, as the API server's JSON does."""
    compacted = {key: value for key, value in status.items() if value not in (0, None, {}, [], "")}
    if "uncountedTerminatedPods" in status:
        compacted["uncountedTerminatedPods"] = {k: v for k, v in status["uncountedTerminatedPods"].items() if v}
    return compacted
