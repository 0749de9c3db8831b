"""The TrainingJob controller: observe the job and its children, plan, act.

One reconcile at a time per job (wake-ups, pod events and spec changes all land here). What builtin
admission reads is kept in memory (`kiln.training.inventory`), fed by watch events of pods, nodes,
priority classes and TrainingJobs after one list at the start, so an admission never lists the
cluster. Decisions are serialised across jobs and reserve capacity at once, so two jobs can never
both be admitted into the same free capacity; gangs a decision admits on the way, or that fit once
capacity frees, are woken. A job is woken again only when time alone would change it (its plan's
`wake_at`), or at once when it was just admitted: its gang is made on that turn, which waits behind
the wake-ups for events, so a burst is admitted before gangs are made. Acting is: create what is
missing (an object that exists already is left alone, so a restarted operator never duplicates a
worker), delete what must go, write status (refused if the job changed meanwhile), then post Events.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pydantic

from kiln.api import resources, trainingjob
from kiln.controllers import metrics as operator_metrics
from kiln.controllers import peering, shared
from kiln.kube import client, informer
from kiln.providers import gang
from kiln.training import admission, inventory, workers
from kiln.training import plan as training_plan

TRAINING_JOBS = client.kiln_resource(resources.TRAINING_JOB)
INVENTORY_SOURCES = (
    (inventory.PRIORITY_CLASS, client.PRIORITY_CLASSES),
    (inventory.NODE, client.NODES),
    (inventory.RESOURCE_QUOTA, client.RESOURCE_QUOTAS),
    (inventory.POD, client.PODS),
    (inventory.TRAINING_JOB, TRAINING_JOBS),
)
"""Each kind the inventory counts, and where it is read: priorities and nodes before what they rank and hold."""
MODEL_VERSIONS = client.kiln_resource(resources.MODEL_VERSION)
POD_GROUPS = {
    trainingjob.GangScheduler.COSCHEDULING: client.COSCHEDULING_POD_GROUPS,
    trainingjob.GangScheduler.VOLCANO: client.VOLCANO_POD_GROUPS,
}
Object = dict[str, Any]

log = logging.getLogger(__name__)
Key = tuple[str, str]
Inventory = inventory.Inventory
RETRY_SECONDS = 5.0
WAKE_WORKERS = 16
"""Reconciles that wake-ups run at once: API round trips overlap, the GIL does the rest."""
_IDLE_CHECK_SECONDS = 0.5
_NOW = datetime.datetime.min.replace(tzinfo=datetime.UTC)
"""When an event's wake-up is due: before any time."""
EVENTS_BEFORE_A_DEADLINE = 64
QUOTA_REFUSAL = "exceeded quota"
"""How kube-apiserver's ResourceQuota admission words a refusal (`pods "x" is forbidden: exceeded quota: ...`)."""


class QuotaRefusedError(client.ApiError):
    """A ResourceQuota refused a worker pod."""


class Wakeups:
    """When each job is to be reconciled again: now for an event (a new job, a worker that changed,
    a job admitted on another's turn), in the order they came, and at a job's own deadlines, earliest
    first. Wake-ups for events come before those whose time has come, so under a burst the decisions
    (admitting a new job) go before the work they lead to (making an admitted gang, due at once), but
    never more than EVENTS_BEFORE_A_DEADLINE of them in a row while a deadline is due, so a steady
    stream of events cannot hold the rest back for ever. A wake-up never cancels an earlier one (an
    extra reconcile is harmless; a lost one leaves a job waiting), and fires once."""

    def __init__(self) -> None:
        self._due: dict[Key, datetime.datetime] = {}
        self._events: list[tuple[datetime.datetime, int, Key]] = []
        self._deadlines: list[tuple[datetime.datetime, int, Key]] = []
        self._order = itertools.count()
        self._events_in_a_row = 0
        self._changed = threading.Condition()

    def at(self, key: Key, when: datetime.datetime | None) -> None:
        if when is None:
            return
        with self._changed:
            if key in self._due and self._due[key] <= when:
                return
            self._due[key] = when
            heapq.heappush(self._events if when == _NOW else self._deadlines, (when, next(self._order), key))
            self._changed.notify()

    def now(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self.at(key, _NOW)

    def _first(self, heap: list[tuple[datetime.datetime, int, Key]]) -> tuple[datetime.datetime, int, Key] | None:
        """The heap's first wake-up still wanted (one superseded by an earlier one is dropped)."""
        while heap and self._due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def due(self, now: datetime.datetime, limit: int | None = None) -> list[Key]:
        """Take the jobs whose time has come (at most `limit` of them)."""
        taken: list[Key] = []
        with self._changed:
            while limit is None or len(taken) < limit:
                event, deadline = self._first(self._events), self._first(self._deadlines)
                deadline_due = deadline is not None and deadline[0] <= now
                if event is not None and (not deadline_due or self._events_in_a_row < EVENTS_BEFORE_A_DEADLINE):
                    self._events_in_a_row += 1
                    key = heapq.heappop(self._events)[2]
                elif deadline_due:
                    self._events_in_a_row = 0
                    key = heapq.heappop(self._deadlines)[2]
                else:
                    break
                del self._due[key]
                taken.append(key)
        return taken

    def pending(self) -> dict[Key, datetime.datetime]:
        with self._changed:
            return dict(self._due)

    def wait(self, now: datetime.datetime, stop: threading.Event, longest: float) -> None:
        """Sleep until the next wake-up is due, one is added, `stop` is set, or `longest` seconds pass."""
        with self._changed:
            if stop.is_set():
                return
            first = self._first(self._events) or self._first(self._deadlines)
            seconds = (first[0] - now).total_seconds() if first else longest
            if seconds > 0:
                self._changed.wait(min(seconds, longest))

    def interrupt(self) -> None:
        with self._changed:
            self._changed.notify_all()


def _newer(one: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether `one` is a later version of the object than `other` (resourceVersions are etcd's
    revisions, numbers, wherever Kiln runs; any other compares as not newer)."""
    try:
        return int(one["metadata"]["resourceVersion"]) > int(other["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False


@dataclasses.dataclass
class Controller:
    kube: client.Api
    settings: training_plan.Settings = dataclasses.field(default_factory=training_plan.Settings)
    clock: shared.Clock = shared.utcnow
    metrics: operator_metrics.Metrics = dataclasses.field(default_factory=operator_metrics.Metrics)
    wakeups: Wakeups = dataclasses.field(default_factory=Wakeups)
    inventory: inventory.Inventory = dataclasses.field(default_factory=inventory.Inventory)
    acting: Callable[[], bool] = peering.always
    """Whether this replica may reconcile now (`kiln.controllers.peering`): kopf pauses the watches
    of a replica on standby, but not the wake-ups, which ask this first."""
    _admission: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    """Guards the inventory: decisions and the events that feed it, one at a time."""
    _synced: bool = False
    _bodies: dict[Key, Object] = dataclasses.field(default_factory=dict)
    """Each job as last watched or written, read instead of a GET; a write it makes that is refused
    (the job changed meanwhile) drops it, so the next reconcile reads the job from the API server."""
    _written: dict[Key, str] = dataclasses.field(default_factory=dict)
    """The resourceVersion of the controller's last status write of a job, until its watch event
    comes: a watch delivers one object's events in order, so events before it are older."""
    _locks: shared.ObjectLocks = dataclasses.field(default_factory=shared.ObjectLocks)
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    _runner: threading.Thread | None = None
    _took_over: bool = False
    _replay: list[tuple[str, bool, Mapping[str, Any]]] | None = None
    """While a take-over lists the cluster, the events that came meanwhile, for its new inventory."""
    _refusals: dict[Key, str] = dataclasses.field(default_factory=dict)
    """A quota's refusal of a job's worker, for its next reconcile to queue the gang again."""

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept of a deleted job: its lock and its body."""
        self._locks.forget(namespace, name)
        self._remember(namespace, name, None)
        self.metrics.training_job_seen(namespace, name, None)

    def reconcile(self, namespace: str, name: str) -> None:
        """Bring one TrainingJob's children and status up to date."""
        with self._locks.hold(namespace, name), self.metrics.reconciling(resources.TRAINING_JOB.kind):
            body = self._bodies.get((namespace, name)) or self.kube.get(TRAINING_JOBS, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                self.metrics.training_job_seen(namespace, name, None)
                return
            self.sync()
            finished = (body.get("status") or {}).get("phase") in training_plan.FINISHED
            nodes = [] if finished else self._nodes()  # only placement reads them
            preempted_by, shrink_for = self._making_room((namespace, name))
            seen = dataclasses.replace(
                self._observe(body, nodes),
                preempted_by=preempted_by,
                shrink_for=shrink_for,
                grow_to=self._grow(body),
                quota_refused=self._refusals.pop((namespace, name), None),
            )
            planned = training_plan.plan(seen, self.clock(), self.settings)
            if planned.needs_logs:
                seen = dataclasses.replace(seen, logs=self._logs(namespace, planned.needs_logs))
                planned = training_plan.plan(seen, self.clock(), self.settings)
            if planned.needs_admission:
                seen = dataclasses.replace(seen, admission=self._admit(body))
                planned = training_plan.plan(seen, self.clock(), self.settings)
            self._act(body, planned)
            self.wakeups.at((namespace, name), planned.wake_at)

    # -- the inventory ------------------------------------------------------------------------

    def sync(self) -> None:
        """Fill the inventory once, from one list of each kind, as an informer starts; watch events
        keep it current from then on (an event older than what the list showed is ignored)."""
        if self._synced:
            return
        with self._admission:
            if not self._synced:
                for key, body in self._list_into(self.inventory).items():
                    self._bodies.setdefault(key, body)
                self.inventory.admit_waiting()
                self.wakeups.now(self.inventory.take_woken())
                self._synced = True

    def pod_informers(self, kube: informer.Source, namespaces: Sequence[str] = ()) -> list[informer.Informer]:
        """What keeps the inventory's pods current once it is filled (the operator's kopf handlers feed
        it the other kinds)."""
        return informer.informers(kube, [(client.PODS, functools.partial(self.watched, inventory.POD))], namespaces)

    def _list_into(self, target: Inventory) -> dict[Key, Object]:
        """List every kind into `target`; the TrainingJobs listed."""
        jobs = {}
        for kind, resource in INVENTORY_SOURCES:
            for body in self.kube.list(resource, None):
                target.watched(kind, False, body)
                if kind == inventory.TRAINING_JOB:
                    jobs[(body["metadata"].get("namespace") or "default", body["metadata"]["name"])] = body
        return jobs

    def take_over(self) -> None:
        """Start acting from what the cluster holds now. A replica that stood by (or stops standing
        by) had its watches paused, so a deletion meanwhile was never seen: its inventory is listed
        afresh, and swapped in with the events that came while it was listed; the jobs it kept that
        are gone are forgotten, the others kept as listed unless an event brought them newer; and every
        job is reconciled once, which sets its wake-ups again. The lists run outside the lock, so
        kopf's event handlers, which take it, never wait for them."""
        known = set(self._bodies)
        with self._admission:
            self._replay = []
        fresh = inventory.Inventory()
        try:
            listed = self._list_into(fresh)
        except BaseException:
            with self._admission:
                self._replay = None
            raise
        with self._admission:
            for kind, gone, body in self._replay or []:
                fresh.watched(kind, gone, body)
            self._replay = None
            self.inventory = fresh
            self._synced = True
            fresh.admit_waiting()
            woken = fresh.take_woken()
        for key in known - listed.keys():
            self.forget(*key)
        for key, body in listed.items():
            kept = self._bodies.get(key)
            if kept is None or not _newer(kept, body):
                self._remember(*key, body)
        self.wakeups.now([*woken, *listed])

    def watched(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of a pod, node, priority class, ResourceQuota or TrainingJob (`kind` as in
        `inventory.KINDS`). A worker's event wakes its job; if capacity freed, the gangs that fit
        now are admitted and woken."""
        namespace = body["metadata"].get("namespace") or "default"
        if kind == inventory.TRAINING_JOB:
            self._job_watched(namespace, event_type, body)
        job_name = (body["metadata"].get("labels") or {}).get(workers.JOB_LABEL) if kind == inventory.POD else None
        job = (namespace, str(job_name)) if job_name else None
        worker_changed = job is not None and self._worker_changed(job, event_type, body)
        woken = self._feed(kind, event_type, body)
        if job is not None and worker_changed:
            woken.append(job)
        self.wakeups.now(woken)

    def _remember(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        self._written.pop((namespace, name), None)
        if body is None:
            self._bodies.pop((namespace, name), None)
        else:
            self._bodies[(namespace, name)] = dict(body)

    def _remember_written(self, namespace: str, body: Mapping[str, Any]) -> None:
        key = (namespace, body["metadata"]["name"])
        self._remember(*key, body)
        self._written[key] = body["metadata"]["resourceVersion"]

    def _job_watched(self, namespace: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Keep the watched job unless it is older than the controller's own last write, and wake it
        if it is new to the controller or changed as only others change it (a new spec, its
        deletion): the controller's own status writes wake nothing."""
        metadata = body["metadata"]
        key = (namespace, metadata["name"])
        if event_type == "DELETED":
            self.forget(*key)
            return
        known = self._bodies.get(key)
        changed = known is None or any(
            metadata.get(field) != known["metadata"].get(field) for field in ("uid", "generation", "deletionTimestamp")
        )
        written = self._written.get(key)
        if changed or written is None or metadata.get("resourceVersion") == written:
            self._remember(*key, body)
        if changed:
            self.wakeups.now([key])

    def _worker_changed(self, job: Key, event_type: str | None, pod: Mapping[str, Any]) -> bool:
        """Whether the event changes the worker as its job's plan sees it: most pod updates (binding,
        the kubelet's bookkeeping) do not, and waking the job for them would only cost a reconcile."""
        if event_type == "DELETED":
            return True
        with self._admission:
            before = self.inventory.worker_pod(job, pod["metadata"]["name"])
        return before is None or training_plan.Worker.from_pod(before) != training_plan.Worker.from_pod(pod)

    def _feed(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> list[Key]:
        """Take the event into the inventory; the jobs admitted because capacity freed."""
        with self._admission:
            if self._replay is not None:
                self._replay.append((kind, event_type == "DELETED", body))
            before = self.inventory.epoch
            self.inventory.watched(kind, event_type == "DELETED", body)
            # Before the first list, the inventory may know the jobs but not yet the pods that fill
            # the nodes: nothing is admitted from it until then.
            if self._synced and self.inventory.epoch != before:
                self.inventory.admit_waiting()
            return self.inventory.take_woken()

    def _nodes(self) -> list[Mapping[str, Any]]:
        with self._admission:
            return list(self.inventory.nodes.values())

    # -- observe ------------------------------------------------------------------------------

    def _observe(self, body: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> training_plan.Observed:
        job = workers.Job.from_body(body)
        status = trainingjob.TrainingJobStatus.model_validate(body.get("status") or {})
        with self._admission:
            pods = self.inventory.worker_pods((job.namespace, job.name))
        owned = [pod for pod in pods if shared.owned_by(pod, job.uid)]
        found = [worker for worker in map(training_plan.Worker.from_pod, owned) if worker is not None]
        if status.phase in training_plan.FINISHED:
            return training_plan.Observed(body=body, workers=found)
        store = workers.model_store_pvc(job)
        output = job.spec.output
        model_version = self.kube.get(MODEL_VERSIONS, job.namespace, output.model_version_name()) if output else None
        return training_plan.Observed(
            body=body,
            workers=found,
            model_store_exists=store is None
            or self.kube.get(client.PERSISTENT_VOLUME_CLAIMS, job.namespace, store["metadata"]["name"]) is not None,
            trainer_account_exists=not workers.needs_trainer_account(job)
            or self.kube.get(client.SERVICE_ACCOUNTS, job.namespace, workers.TRAINER_ACCOUNT) is not None,
            cpu_nodes_exist=admission.cpu_nodes_for(job, nodes),
            model_version=model_version,
        )

    def _logs(self, namespace: str, pod: str) -> str:
        try:
            return self.kube.logs(namespace, pod, workers.TRAINER_CONTAINER, training_plan.LOG_LINES)
        except client.ApiError as error:
            return f"(its logs could not be read: {error})"

    def _admit(self, body: Mapping[str, Any]) -> admission.Admission:
        job = workers.Job.from_body(body)
        scheduler = gang.SCHEDULERS[job.spec.gang_scheduling.scheduler]
        with self._admission:
            answer = scheduler.admit(self.inventory.gang_of(job), lambda: self.inventory)
            woken = self.inventory.take_woken()
        self.wakeups.now([*woken, *answer.preempt, *(victim for victim, _ in answer.shrink)])
        return answer

    def _making_room(self, key: Key) -> tuple[str | None, tuple[str, int] | None]:
        """What builtin admission asks of the job for another: to stop (the job it is preempted by),
        or to shrink (that job, and the workers it keeps)."""
        with self._admission:
            room = self.inventory.making_room(key)
        if room is None:
            return None, None
        (namespace, name), keep = room
        return (f"{namespace}/{name}", None) if keep is None else (None, (f"{namespace}/{name}", keep))

    def _grow(self, body: Mapping[str, Any]) -> int | None:
        """Room reserved for a running elastic job to grow into, once its cooldown is over."""
        job = workers.Job.from_body(body)
        status = trainingjob.TrainingJobStatus.model_validate(body.get("status") or {})
        after = training_plan.may_grow_after(status, job.spec)
        if after is None or self.clock() < after:
            return None
        with self._admission:
            return self.inventory.grow((job.namespace, job.name))

    # -- wake-ups -----------------------------------------------------------------------------

    def start(self) -> None:
        """Run wake-ups in a thread of their own until `stop`."""
        self._stop.clear()
        self._runner = threading.Thread(target=self._run_wakeups, name="training-wakeups", daemon=True)
        self._runner.start()

    def stop(self) -> None:
        self._stop.set()
        self.wakeups.interrupt()
        if self._runner is not None:
            self._runner.join()

    def _run_wakeups(self) -> None:
        """Hand each due job to a reconcile worker, taking it from the wake-ups only once a worker is
        free: taken early, jobs would wait in the pool's queue in the order they were taken, not in
        the wake-ups' own (events first). On standby (`acting`), nothing is taken."""
        idle = threading.Semaphore(WAKE_WORKERS)
        with concurrent.futures.ThreadPoolExecutor(WAKE_WORKERS, thread_name_prefix="training-wake") as pool:
            while not self._stop.is_set():
                if not idle.acquire(timeout=_IDLE_CHECK_SECONDS):
                    continue  # every worker busy: look at `stop` again
                # Whether it may act is asked every second or so, work due or not, so that a pause
                # is seen even when nothing is due during it (it must take over after one).
                self.wakeups.wait(self.clock(), self._stop, peering.POLL_SECONDS)
                taken = self.wakeups.due(self.clock(), limit=1) if self._may_act(idle) else []
                if not taken:
                    idle.release()
                    continue
                pool.submit(self.wake, *taken[0]).add_done_callback(lambda _: idle.release())

    def _may_act(self, idle: threading.Semaphore) -> bool:
        """Whether this replica acts now; the moment it starts to (at start, or after standing by),
        it takes over, once the reconciles still running from before are done (the runner holds one
        of the `idle` workers, and waits for the rest). On standby it looks again after a while; a
        take-over that fails is tried again then."""
        try:
            acting = self.acting()
            if acting and not self._took_over:
                for _ in range(WAKE_WORKERS - 1):
                    idle.acquire()
                try:
                    self.take_over()
                finally:
                    for _ in range(WAKE_WORKERS - 1):
                        idle.release()
        except client.ApiError as error:
            log.warning("TrainingJob wake-ups stand by: %s", error)
            acting = False
        except Exception:
            log.exception("TrainingJob wake-ups stand by")
            acting = False
        self._took_over = acting
        if not acting:
            self._stop.wait(peering.POLL_SECONDS)
        return acting

    def wake(self, namespace: str, name: str) -> None:
        """Reconcile a job whose time came; one that fails is tried again shortly."""
        try:
            self.reconcile(namespace, name)
        except client.ConflictError:
            self._remember(namespace, name, None)
            self.wakeups.now([(namespace, name)])  # it changed while planned: plan again on what it is now
        except QuotaRefusedError as refused:
            self._refused(namespace, name, refused)
        except client.NotFoundError as error:
            if self._gone(namespace, name):
                self.forget(namespace, name)  # deleted while planned; its watch event may still be on its way
            else:
                self._retry(namespace, name, error)
        except (client.ApiError, pydantic.ValidationError) as error:
            self._retry(namespace, name, error)
        except Exception:
            # A fault of Kiln's own: told in full, and tried again as any other, since no event may
            # come to wake the job again (kopf retries a failed handler the same way).
            log.exception("TrainingJob %s/%s; trying again in %gs", namespace, name, RETRY_SECONDS)
            self._later(namespace, name)

    def _refused(self, namespace: str, name: str, refusal: QuotaRefusedError) -> None:
        """Admission granted the gang before a quota's watch event came (a quota created with the
        job): it learns the namespace's quotas now, and the job's next reconcile queues the gang again."""
        try:
            limits = self.kube.list(client.RESOURCE_QUOTAS, namespace)
        except client.ApiError as error:
            self._retry(namespace, name, error)  # its pod is made again then; refused again, it is queued
            return
        for limit in limits:
            self.wakeups.now(self._feed(inventory.RESOURCE_QUOTA, None, limit))
        self._refusals[(namespace, name)] = refusal.message
        self.wakeups.now([(namespace, name)])

    def _retry(self, namespace: str, name: str, error: Exception) -> None:
        log.warning("TrainingJob %s/%s: %s; trying again in %gs", namespace, name, error, RETRY_SECONDS)
        self._later(namespace, name)

    def _later(self, namespace: str, name: str) -> None:
        self.wakeups.at((namespace, name), self.clock() + datetime.timedelta(seconds=RETRY_SECONDS))

    def _gone(self, namespace: str, name: str) -> bool:
        try:
            return self.kube.get(TRAINING_JOBS, namespace, name) is None
        except client.ApiError:
            return False

    # -- act ----------------------------------------------------------------------------------

    def _act(self, body: Mapping[str, Any], planned: training_plan.Plan) -> None:
        namespace = body["metadata"].get("namespace") or "default"
        self._create(planned.create)
        if planned.register is not None:
            self._create([planned.register], MODEL_VERSIONS)
        for pod, marks in planned.annotate_pods.items():
            with contextlib.suppress(client.NotFoundError):  # gone already: nothing left to tell it
                self.kube.patch(client.PODS, namespace, pod, {"metadata": {"annotations": marks}})
        for pod in planned.delete_pods:
            self.kube.delete(client.PODS, namespace, pod)
        wire = planned.status.to_wire()
        if body.get("status") != wire and not planned.delete_job:
            body = self.kube.patch_status(TRAINING_JOBS, body, wire)
            self._remember_written(namespace, body)
            # Into the inventory before its watch event comes: the new phase may free capacity.
            self.wakeups.now(self._feed(inventory.TRAINING_JOB, None, body))
        job = workers.Job.from_body(body)
        gpus = job.spec.resources.gpus.count * job.spec.workers if job.spec.resources.gpus else 0
        self.metrics.training_job_seen(namespace, job.name, None if planned.delete_job else planned.status.phase, gpus)
        shared.post_events(self.kube, body, planned.events, log)
        if planned.delete_job:
            self._expire(body)

    def _create(self, objects: Sequence[Mapping[str, Any]], resource: client.Resource | None = None) -> None:
        for obj in objects:
            with contextlib.suppress(client.ConflictError):  # there already: never a duplicate
                try:
                    created = self.kube.create(resource or client.resource_of(obj), obj)
                except client.ApiError as error:
                    if error.status == 403 and QUOTA_REFUSAL in error.message and obj.get("kind") == "Pod":
                        raise QuotaRefusedError(error.status, error.reason, error.message) from None
                    raise
                if created.get("kind") == "Pod":
                    # Known at once, before its watch event: the next reconcile never misses a worker
                    # it made (a gang missing one looks like a worker that disappeared).
                    self.wakeups.now(self._feed(inventory.POD, None, created))

    def _expire(self, body: Mapping[str, Any]) -> None:
        """ttlSecondsAfterFinished: delete the job and what it owns, except its ModelVersion."""
        job = workers.Job.from_body(body)
        for pod in self.kube.list(client.PODS, job.namespace, f"{workers.JOB_LABEL}={job.name}"):
            self.kube.delete(client.PODS, job.namespace, pod["metadata"]["name"])
        self.kube.delete(client.SERVICES, job.namespace, job.name)
        for access in workers.worker_access(job):  # the workers' own ServiceAccount, Role and RoleBinding
            self.kube.delete(client.resource_of(access), job.namespace, access["metadata"]["name"])
        checkpoint = workers.checkpoint_pvc(job)
        if checkpoint is not None:
            self.kube.delete(client.PERSISTENT_VOLUME_CLAIMS, job.namespace, checkpoint["metadata"]["name"])
        pod_groups = POD_GROUPS.get(job.spec.gang_scheduling.scheduler)
        if pod_groups is not None:
            self.kube.delete(pod_groups, job.namespace, job.name)
        # Orphan: the ModelVersion the job registered is owned by it and must outlive it.
        self.kube.delete(TRAINING_JOBS, job.namespace, job.name, propagation="Orphan")
