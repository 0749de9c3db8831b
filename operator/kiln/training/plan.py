"""The TrainingJob lifecycle as a pure plan: the job, its observed workers, the admission decision
and the time in; the objects to create or delete, the status and the Events out.

Pending → Queued → Admitted → Running → Succeeded | Failed, and Suspended. Every worker of one
attempt carries the attempt number (the restart count) in a label. A failed worker fails the
attempt: all its workers are deleted and, after an exponential back-off, the whole gang starts
again (torch elastic semantics), until backoffLimit restarts are spent. Everything the next
reconcile needs (phase, restarts, the back-off deadline, when queueing began) is in status.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from kiln.api import base, conditions, events, modelversion, trainingjob
from kiln.training import admission, workers
from kiln.training import progress as training_progress

Object = dict[str, Any]
Phase = trainingjob.TrainingJobPhase
FINISHED = frozenset({Phase.SUCCEEDED, Phase.FAILED})
LOG_LINES = 20
_MESSAGE_LIMIT = 4096


@dataclasses.dataclass(frozen=True)
class Settings:
    trainer_image: str = "ghcr.io/kiln-dev/kiln:0.1.0"
    """The image whose `kiln-trainer` runs sklearn jobs."""
    backoff_seconds: float = 10.0
    """The first restart's delay; each further restart doubles it (as the Job controller does)."""
    max_backoff_seconds: float = 360.0


@dataclasses.dataclass(frozen=True)
class Worker:
    """One observed worker pod."""

    name: str
    rank: int
    attempt: int
    phase: str
    """Pending, Running, Succeeded or Failed."""
    deleting: bool = False
    created: datetime.datetime | None = None
    exit_code: int | None = None
    reason: str = ""
    """Why it stopped (the container's terminated reason), or why it is not scheduled."""
    message: str = ""
    """The container's termination message: the result file, or its last log lines."""
    progress: str = ""
    """What the worker reported on its pod as `kiln.dev/progress` (rank 0 does)."""
    preempted: bool = False
    """The pod is annotated `kiln.dev/preempted`: a worker of a preempted attempt, on its way out."""

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> Worker | None:
        metadata = pod["metadata"]
        labels = metadata.get("labels") or {}
        try:
            rank, attempt = int(labels[workers.RANK_LABEL]), int(labels[workers.ATTEMPT_LABEL])
        except (KeyError, ValueError):
            return None  # not a worker Kiln made
        status = pod.get("status") or {}
        terminated: Mapping[str, Any] = {}
        for container in status.get("containerStatuses") or []:
            if container.get("name") == workers.TRAINER_CONTAINER:
                terminated = (container.get("state") or {}).get("terminated") or {}
        scheduled = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {"status": "True"}
        )
        reason = terminated.get("reason") or status.get("reason") or ""
        if scheduled.get("status") == "False":
            reason = scheduled.get("message") or scheduled.get("reason") or "not scheduled"
        created = metadata.get("creationTimestamp")
        return cls(
            name=metadata["name"],
            rank=rank,
            attempt=attempt,
            phase=status.get("phase") or "Pending",
            deleting=bool(metadata.get("deletionTimestamp")),
            created=datetime.datetime.fromisoformat(created) if created else None,
            exit_code=terminated.get("exitCode"),
            reason=reason,
            message=terminated.get("message") or "",
            progress=(metadata.get("annotations") or {}).get(trainingjob.PROGRESS_ANNOTATION, ""),
            preempted=trainingjob.PREEMPTED_ANNOTATION in (metadata.get("annotations") or {}),
        )


@dataclasses.dataclass(frozen=True)
class Observed:
    body: Mapping[str, Any]
    """The TrainingJob as read."""
    workers: Sequence[Worker] = ()
    model_store_exists: bool = True
    trainer_account_exists: bool = True
    cpu_nodes_exist: bool = False
    admission: admission.Admission | None = None
    """The gang scheduler's answer; None when it was not asked."""
    model_version: Mapping[str, Any] | None = None
    """The ModelVersion the output names, if it exists."""
    logs: str | None = None
    """The last log lines of the worker that failed the job, once fetched."""
    preempted_by: str | None = None
    """The job (`namespace/name`) that builtin admission preempts this one for."""
    shrink_for: tuple[str, int] | None = None
    """The job (namespace/name) builtin admission shrinks this elastic one for, and the workers it keeps."""
    grow_to: int | None = None
    """The workers builtin admission reserved room for an elastic job to grow to."""
    quota_refused: str | None = None
    """The API server's refusal of a worker for a ResourceQuota, when admission granted the gang
    before the quota reached it (a quota created with the job): the gang goes back to the queue."""


@dataclasses.dataclass
class Plan:
    status: trainingjob.TrainingJobStatus
    create: list[Object] = dataclasses.field(default_factory=list)
    """Objects to create; ones that exist already are left as they are."""
    delete_pods: list[str] = dataclasses.field(default_factory=list)
    annotate_pods: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    """Annotations to set on these pods before any pod is deleted: a preempted worker's sign that its
    SIGTERM means checkpoint and resume later."""
    events: list[events.Event] = dataclasses.field(default_factory=list)
    register: Object | None = None
    """A ModelVersion to create from the job's result."""
    delete_job: bool = False
    """The job's time to live is over: delete it, keeping its ModelVersion."""
    needs_admission: bool = False
    """Ask the gang scheduler, then plan again."""
    needs_logs: str | None = None
    """Read this worker's last log lines, then plan again."""
    wake_at: datetime.datetime | None = None
    """When time alone next changes the job (a back-off ends, a deadline, timeout or time to live
    runs out): reconcile it then. None when only an event can."""


def backoff(restarts: int, settings: Settings) -> float:
    """The delay before restart number `restarts` (1, 2, ...): doubling, capped."""
    return float(min(settings.backoff_seconds * 2 ** max(restarts - 1, 0), settings.max_backoff_seconds))


class _Planner:
    def __init__(self, seen: Observed, now: datetime.datetime, settings: Settings) -> None:
        self.seen = seen
        self.now = now
        self.settings = settings
        self.job = workers.Job.from_body(seen.body)
        self.spec = self.job.spec
        self.generation = seen.body["metadata"].get("generation")
        self.previous = trainingjob.TrainingJobStatus.model_validate(seen.body.get("status") or {})
        self.status = self.previous.model_copy(deep=True)
        self.plan = Plan(self.status)
        self.reason = ""
        self.transitions: list[tuple[Phase, str, str]] = []
        """Each (phase, reason, message) this reconcile moved through: one reconcile may pass through
        several phases (a job whose status write was refused finds its pods running when admitted
        again), and each one is an Event."""

    # -- transitions --------------------------------------------------------------------------

    def to(self, phase: Phase, reason: str, message: str) -> None:
        self.status.phase = phase
        self.status.message = message[:_MESSAGE_LIMIT]
        self.reason = reason
        self.transitions.append((phase, reason, self.status.message))

    def expired(self, expiry: datetime.datetime) -> bool:
        """Whether the moment has come; if not, the job wakes then."""
        if self.now >= expiry:
            return True
        self.plan.wake_at = min(self.plan.wake_at or expiry, expiry)
        return False

    def fail(self, reason: str, message: str) -> None:
        self.to(Phase.FAILED, reason, message)
        self.status.completion_time = self.now
        self.status.next_restart_time = None
        self.plan.wake_at = None  # the deadlines of a running job no longer apply
        self.finished()

    def delete_active(self) -> None:
        self.plan.delete_pods += [
            worker.name
            for worker in self.seen.workers
            if not worker.deleting
            and worker.phase not in ("Succeeded", "Failed")
            and worker.name not in self.plan.delete_pods
        ]

    # -- the plan -----------------------------------------------------------------------------

    def run(self) -> Plan:
        phase = self.status.phase
        if phase in FINISHED:
            self.finished()
        elif self.spec.suspend:
            self.suspend()
        elif self.seen.preempted_by and phase in admission.HOLDS_ADMISSION:
            self.preempted(self.seen.preempted_by)
        elif self.seen.quota_refused and phase in admission.HOLDS_ADMISSION:
            self.refused_by_quota(self.seen.quota_refused)
        elif self.seen.shrink_for and phase in admission.HOLDS_ADMISSION and self.seen.shrink_for[1] < self.world:
            self.shrink(*self.seen.shrink_for)
        elif self.seen.grow_to and phase is Phase.RUNNING and self.seen.grow_to > self.world:
            self.grow(self.seen.grow_to)
        else:
            if phase is Phase.SUSPENDED:
                self.to(Phase.PENDING, "Resumed", "resumed; waiting for admission again")
                self.status.start_time = None
            self.active()
        self.finish_status()
        return self.plan

    def finished(self) -> None:
        self.delete_active()
        ttl = self.spec.ttl_seconds_after_finished
        if ttl is None or self.status.completion_time is None:
            return
        expiry = self.status.completion_time + datetime.timedelta(seconds=ttl)
        self.plan.delete_job = self.expired(expiry)

    def suspend(self) -> None:
        self.plan.delete_pods += [worker.name for worker in self.seen.workers if not worker.deleting]
        if self.status.phase is not Phase.SUSPENDED:
            self.to(Phase.SUSPENDED, "Suspended", "spec.suspend is true: the workers are deleted, the state is kept")
        self.status.next_restart_time = None
        self.status.queued_time = None
        self.count({})

    @property
    def world(self) -> int:
        """The workers of the current attempt: what admission sized the gang to."""
        return self.status.world_size or self.spec.workers

    @property
    def attempt(self) -> int:
        """Every gang start after the first is a new attempt: a restart after a failure, or growth."""
        return self.status.restarts + self.status.resizes

    def grow(self, size: int) -> None:
        """Restart the gang from its checkpoint with more workers (torch elastic re-forms its world
        the same way)."""
        self.resize(size, f"growing from {self.world} to {size} workers as capacity freed")

    def shrink(self, by: str, size: int) -> None:
        """Restart the gang from its checkpoint with fewer workers, so a job of higher priority fits
        beside it: a partial preemption, the workers told so (they checkpoint), the admission kept."""
        self.tell_preempted(by)
        self.resize(size, f"shrinking from {self.world} to {size} workers to make room for {by}")

    def tell_preempted(self, by: str) -> list[str]:
        """Annotate every worker not yet on its way out as preempted by `by` (on the SIGTERM that
        follows, it checkpoints) and count the preemption; the workers told."""
        stopping = [worker.name for worker in self.seen.workers if not worker.deleting]
        self.plan.annotate_pods.update({name: {trainingjob.PREEMPTED_ANNOTATION: by} for name in stopping})
        self.status.preemptions += 1
        self.status.preempted_by = by
        return stopping

    def resize(self, size: int, why: str) -> None:
        self.plan.delete_pods += [worker.name for worker in self.seen.workers if not worker.deleting]
        self.status.resizes += 1
        self.status.world_size = size
        self.status.last_resize_time = self.now
        self.to(Phase.ADMITTED, "Resizing", f"{why}: the gang restarts from its checkpoint with WORLD_SIZE {size}")
        self.count({})

    def preempted(self, by: str) -> None:
        """Tell every worker it is preempted (the annotation), stop it (SIGTERM and the grace period:
        time to write a checkpoint) and queue again; the restart count is kept, since nothing failed."""
        self.plan.delete_pods += self.tell_preempted(by)
        self.status.next_restart_time = None
        self.status.queued_time = self.now
        self.to(
            Phase.QUEUED,
            "Preempted",
            f"preempted by {by}: the workers were told to checkpoint and stop; queued to resume from the"
            " checkpoint when admitted again",
        )
        self.count({})

    def refused_by_quota(self, refusal: str) -> None:
        """Queue the gang again, whole: the workers made before the refusal are deleted, and the
        queue waits for the quota, which admission knows of now."""
        self.delete_active()
        self.status.queued_time = self.now
        self.to(Phase.QUEUED, "QuotaExceeded", f"quota: a worker was refused: {refusal}")
        self.count({})

    def active(self) -> None:
        if self.status.phase in (Phase.PENDING, Phase.QUEUED):
            if not self.preempted_still_there() and self.queue():
                self.admitted()
            return
        self.ensure_children()
        if self.deadline_passed():
            deadline = self.spec.active_deadline_seconds
            self.fail("DeadlineExceeded", f"the job ran longer than activeDeadlineSeconds ({deadline}s)")
            return
        self.run_attempt()

    def deadline_passed(self) -> bool:
        """Whether activeDeadlineSeconds have passed since the job started running; if not, it
        wakes when they will have."""
        deadline = self.spec.active_deadline_seconds
        if deadline is None or self.status.start_time is None:
            return False
        return self.expired(self.status.start_time + datetime.timedelta(seconds=deadline))

    def preempted_still_there(self) -> bool:
        """Whether workers told they were preempted still exist: they hold their capacity until they
        are gone (their deletion wakes the job), so the job asks for admission only then."""
        stopping = [worker for worker in self.seen.workers if worker.preempted]
        self.plan.delete_pods += [w.name for w in stopping if not w.deleting and w.name not in self.plan.delete_pods]
        return bool(stopping)

    def queue(self) -> bool:
        """Wait for admission; True once the gang is admitted."""
        answer = self.seen.admission
        if answer is None:
            self.plan.needs_admission = True
            return False
        if answer.admitted:
            self.status.world_size = answer.workers or self.spec.workers
            self.to(
                Phase.ADMITTED,
                "Admitted",
                f"admitted by the {self.spec.gang_scheduling.scheduler} gang scheduler: {answer.reason}",
            )
            self.status.queued_time = None
            return True
        if answer.preempting and answer.reason != self.previous.message:  # once, though its write may fail
            self.plan.events.append(events.Event("Normal", "Preempting", answer.reason))
        queued = self.status.queued_time or self.now
        self.status.queued_time = queued
        timeout = self.spec.gang_scheduling.timeout_seconds
        expiry = queued + datetime.timedelta(seconds=timeout)
        if self.expired(expiry):
            self.fail("GangTimeout", f"not admitted within gangScheduling.timeoutSeconds ({timeout}s): {answer.reason}")
            return False
        self.to(Phase.QUEUED, "Queued", answer.reason)
        return False

    def admitted(self) -> None:
        """The decision is written on its own and the gang is made on the job's next turn, which
        comes after the decisions waiting (the controller serves wake-ups for events before those
        whose time came): a burst of jobs is admitted as fast as their status writes go, not as fast
        as their gangs are made. The workers about to be made are counted now, as the Job controller
        counts those it has just made, so making them needs no status write of its own."""
        self.count({})
        self.status.workers.active = self.world
        self.plan.wake_at = self.now

    def ensure_children(self) -> None:
        job, seen = self.job, self.seen
        if not seen.workers:
            # A gang starting: its own children are made before its workers. They are not looked up
            # first: a create that finds one there already (a restart) is a conflict the controller
            # ignores, one request either way.
            owned = [workers.headless_service(job), workers.checkpoint_pvc(job), workers.pod_group(job)]
            self.plan.create += [obj for obj in owned if obj is not None]
        store = workers.model_store_pvc(job)
        if store is not None and not seen.model_store_exists:
            self.plan.create.append(store)
        if workers.needs_trainer_account(job) and not seen.trainer_account_exists:
            self.plan.create += workers.trainer_account(job.namespace)

    def run_attempt(self) -> None:
        attempt = self.attempt
        current = {w.rank: w for w in self.seen.workers if w.attempt == attempt and not w.deleting}
        # Workers of an older attempt, or on their way out: new ones reuse their names, so they wait.
        leaving = [w for w in self.seen.workers if w.attempt != attempt or w.deleting]
        self.plan.delete_pods += [w.name for w in leaving if not w.deleting]
        self.count(current)
        self.report_progress(current)  # first: rank 0's last report may come with its success
        failed = sorted((w for w in current.values() if w.phase == "Failed"), key=lambda w: w.rank)
        if failed:
            self.worker_failed(failed[0], current)
            return
        # As torch elastic: the job succeeds when every worker exited 0; rank 0 reports the result.
        if len(current) == self.world and all(w.phase == "Succeeded" for w in current.values()):
            self.succeeded(current[0])
            return
        restart_at = self.status.next_restart_time
        if restart_at is not None and not self.expired(restart_at):
            return
        self.status.next_restart_time = None
        missing = [rank for rank in range(self.world) if rank not in current]
        started = [w for w in current.values() if w.phase != "Pending"]
        if missing and started:
            names = ", ".join(workers.worker_name(self.job.name, rank) for rank in missing)
            self.restart_or_fail(f"worker(s) {names} disappeared while the gang ran", None, current)
            return
        if missing and not leaving:
            where = workers.placement(self.spec, self.seen.cpu_nodes_exist)
            image = self.settings.trainer_image
            # Before the pods: a pod whose service account does not exist yet is refused.
            self.plan.create += workers.worker_access(self.job)
            self.plan.create += [
                workers.worker_pod(self.job, rank, attempt, where, image, world_size=self.world) for rank in missing
            ]
            # As the Job controller counts the pods it just made: the status written now is the one
            # that stands until a worker runs, with no second write only to count them.
            self.status.workers.active += len(missing)
        self.progress(current)

    def report_progress(self, current: Mapping[int, Worker]) -> None:
        """Fold what rank 0 reports into status.progress; a report that does not parse is ignored
        (the job trains on; the last good report stands)."""
        rank0 = current.get(0)
        if rank0 is None or not rank0.progress:
            return
        try:
            report = trainingjob.ProgressReport.model_validate_json(rank0.progress)
        except pydantic.ValidationError:
            return
        self.status.progress = training_progress.fold(self.status.progress, report, self.now)

    def progress(self, current: Mapping[int, Worker]) -> None:
        size = self.world
        running = [w for w in current.values() if w.phase in ("Running", "Succeeded")]
        if len(running) == size:
            if self.status.phase is not Phase.RUNNING:
                self.to(Phase.RUNNING, "Running", f"all {size} workers are running (attempt {self.status.restarts})")
            if self.status.start_time is None:
                self.status.start_time = self.now
                self.deadline_passed()  # not yet: it only sets the wake-up, as no other event may come
            self.cool_down()
            return
        unscheduled = [w for w in current.values() if w.phase == "Pending" and w.reason]
        timeout = self.spec.gang_scheduling.timeout_seconds
        created = [w.created for w in current.values() if w.created is not None]
        if len(current) == size and unscheduled and created:
            expiry = min(created) + datetime.timedelta(seconds=timeout)
            if self.expired(expiry):
                self.fail(
                    "GangTimeout",
                    f"{len(unscheduled)} of {size} workers were not scheduled within gangScheduling.timeoutSeconds"
                    f" ({timeout}s): {unscheduled[0].reason}",
                )
                return
        if self.status.phase is not Phase.ADMITTED:
            self.to(Phase.ADMITTED, "Starting", f"{len(running)} of {size} workers running")
        # A transition keeps its own message (this reconcile's, or the last one's until a worker
        # runs or is refused a node: "admitted by ..." says more than "0 of 4 workers running").
        elif not self.reason and (running or unscheduled):
            self.status.message = f"{len(running)} of {size} workers running" + (
                f"; {unscheduled[0].name}: {unscheduled[0].reason}" if unscheduled else ""
            )

    def cool_down(self) -> None:
        """A running elastic job below its maximum may grow once its cooldown is over: wake then."""
        after = may_grow_after(self.status, self.spec)
        if after is not None:
            self.expired(after)

    def worker_failed(self, worker: Worker, current: Mapping[int, Worker]) -> None:
        how = f"exit code {worker.exit_code}" if worker.exit_code is not None else "no exit code"
        cause = f"{worker.name} failed ({how}{', ' + worker.reason if worker.reason else ''})"
        if worker.exit_code == trainingjob.DATASET_REJECTED_EXIT_CODE:
            self.dataset_rejected(worker)
            return
        self.restart_or_fail(cause, worker, current)

    def dataset_rejected(self, worker: Worker) -> None:
        """The trainer refused its data before fitting; the same data fails the same way, so the job
        fails now, with the trainer's last log line, which names every broken expectation."""
        if self.seen.logs is None and not worker.message:
            self.plan.needs_logs = worker.name
            return
        lines = [line for line in (worker.message or self.seen.logs or "").splitlines() if line.strip()]
        said = lines[-1].strip() if lines else "no reason in its log"
        self.fail("DatasetRejected", f"{worker.name} refused its dataset (exit code {worker.exit_code}): {said}")

    def restart_or_fail(self, cause: str, worker: Worker | None, current: Mapping[int, Worker]) -> None:
        limit = self.spec.backoff_limit
        if self.status.restarts >= limit:
            if worker is not None and self.seen.logs is None and not worker.message:
                self.plan.needs_logs = worker.name
                return
            logs = ((self.seen.logs or worker.message) if worker else "").strip()
            tail = "\n".join(logs.splitlines()[-LOG_LINES:])
            message = f"{cause}; backoffLimit ({limit}) restarts are spent"
            self.fail(
                "BackoffLimitExceeded",
                f"{message}. Last log lines of {worker.name}:\n{tail}" if worker and tail else message,
            )
            return
        self.status.restarts += 1
        delay = backoff(self.status.restarts, self.settings)
        self.status.next_restart_time = self.now + datetime.timedelta(seconds=delay)
        self.expired(self.status.next_restart_time)  # not yet: it sets the wake-up for the restart
        self.plan.delete_pods += [w.name for w in current.values() if w.name not in self.plan.delete_pods]
        self.to(
            Phase.ADMITTED,
            "Restarting",
            f"{cause}; restarting the whole gang in {delay:g}s (restart {self.status.restarts} of {limit})",
        )

    def succeeded(self, rank0: Worker) -> None:
        result = self.result_of(rank0)
        if isinstance(result, str):
            self.fail("InvalidResult", result)
            return
        if result is not None:
            self.status.metrics = dict(result.metrics)
        output = self.spec.output
        if output is not None:
            name = output.model_version_name()
            registered = self.seen.model_version
            owners = [ref.get("uid") for ref in (registered or {}).get("metadata", {}).get("ownerReferences") or []]
            if registered is not None and self.job.uid not in owners:
                self.fail("VersionTaken", f"ModelVersion {name} exists already and was not registered by this job")
                return
            if registered is None:
                if result is None or result.artifact is None:
                    self.fail(
                        "NoArtifact",
                        f"{rank0.name} succeeded but reported no artifact in {workers.RESULT_FILE}, so ModelVersion"
                        f" {name} cannot be registered",
                    )
                    return
                self.plan.register = model_version(self.job, output, result)
            self.status.model_version = name
        self.to(
            Phase.SUCCEEDED,
            "Succeeded",
            f"{rank0.name} succeeded"
            + (f"; registered ModelVersion {self.status.model_version}" if self.status.model_version else ""),
        )
        self.status.completion_time = self.now
        if self.status.progress is not None:
            self.status.progress = training_progress.finished(self.status.progress)
        self.plan.wake_at = None
        self.finished()

    def result_of(self, rank0: Worker) -> trainingjob.TrainingResult | str | None:
        """The result rank 0 reported, None without one, or why it does not parse."""
        if not rank0.message.strip():
            return None
        try:
            return trainingjob.TrainingResult.model_validate_json(rank0.message)
        except pydantic.ValidationError as error:
            return f"{rank0.name} wrote a result that is not a TrainingResult: {error.errors()[0]['msg']}"

    def count(self, current: Mapping[int, Worker]) -> None:
        counts = self.status.workers
        elastic = self.spec.elastic
        counts.desired = 0 if self.spec.suspend else (elastic.max_workers if elastic else self.spec.workers)
        counts.active = sum(1 for w in current.values() if w.phase in ("Pending", "Running"))
        counts.ready = sum(1 for w in current.values() if w.phase == "Running")
        counts.succeeded = sum(1 for w in current.values() if w.phase == "Succeeded")
        counts.failed = sum(1 for w in current.values() if w.phase == "Failed")

    # -- status -------------------------------------------------------------------------------

    def finish_status(self) -> None:
        status, previous = self.status, self.previous
        status.observed_generation = self.generation
        shown = previous.phase
        for phase, reason, message in self.transitions:
            if phase is shown and reason != "Restarting":
                continue
            failed = phase is Phase.FAILED or reason == "Restarting"
            self.plan.events.append(events.Event("Warning" if failed else "Normal", reason, message))
            shown = phase
        self.set_conditions()

    def set_conditions(self) -> None:
        status, phase = self.status, self.status.phase
        ready = conditions.find(status.conditions, "Ready")
        reason = self.reason or (ready.reason if ready else phase.value)
        truth = {
            "Admitted": phase in admission.HOLDS_ADMISSION or phase is Phase.SUCCEEDED,
            "Running": phase is Phase.RUNNING,
            "Succeeded": phase is Phase.SUCCEEDED,
            "Failed": phase is Phase.FAILED,
            "Suspended": phase is Phase.SUSPENDED,
            "Ready": phase is Phase.SUCCEEDED,
        }
        for condition_type, holds in truth.items():
            status.conditions = conditions.set_condition(
                status.conditions,
                condition_type,
                status=base.ConditionStatus.TRUE if holds else base.ConditionStatus.FALSE,
                reason=reason,
                message=status.message or "",
                now=self.now,
                observed_generation=self.generation,
            )


def model_version(job: workers.Job, output: trainingjob.Output, result: trainingjob.TrainingResult) -> Object:
    """The ModelVersion a user's container reported in its result, owned by the job."""
    assert result.artifact is not None
    lineage = (result.lineage or modelversion.Lineage()).model_copy(update={"training_job": job.name})
    spec = modelversion.ModelVersionSpec(
        model_name=output.model_name,
        version=output.version,
        artifact=result.artifact,
        framework=result.framework,
        framework_version=result.framework_version,
        metrics=dict(result.metrics),
        signature=result.signature,
        lineage=lineage,
        gates=list(output.gates),
        required_approvals=output.required_approvals,
    )
    return {
        "apiVersion": base.API_VERSION,
        "kind": "ModelVersion",
        "metadata": {
            "name": output.model_version_name(),
            "namespace": job.namespace,
            "labels": {**workers.child_labels(job), workers.MODEL_LABEL: output.model_name},
            "ownerReferences": [workers.owner_reference(job)],
        },
        "spec": spec.to_wire(),
    }


def may_grow_after(
    status: trainingjob.TrainingJobStatus, spec: trainingjob.TrainingJobSpec
) -> datetime.datetime | None:
    """When a running elastic job below its maximum may grow (elastic.scaleUpCooldown after
    it started or last grew); None when it may not grow."""
    elastic = spec.elastic
    since = status.last_resize_time or status.start_time
    if elastic is None or status.phase is not Phase.RUNNING or since is None:
        return None
    if (status.world_size or spec.workers) >= elastic.max_workers:
        return None
    return since + elastic.cooldown


def plan(seen: Observed, now: datetime.datetime, settings: Settings = Settings()) -> Plan:
    """What to do about one TrainingJob now."""
    return _Planner(seen, now, settings).run()
