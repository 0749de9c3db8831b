"""What builtin admission knows of the cluster, kept up to date from watch events rather than listed
for every decision, and the admission queue that decides from it.

The inventory holds node capacity, what bound pods use, the builtin jobs that hold or wait for
admission, the priority classes, and a reservation for every admitted gang whose workers are not all
bound yet (just admitted, or restarting). Free capacity per node is maintained as events arrive, so
a decision costs what placing one gang costs, not what the cluster holds.

The queue is ordered by priority, then age. A decision walks the queue ahead of the candidate and
admits every gang there that fits (`take_woken` says which, so their reconciles run now), then the
candidate: a later job never takes capacity an earlier one could use, and each gang is placed once.
A gang that does not fit holds nothing (two half-placed gangs can never block each other) and is
not tried again until capacity frees. Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from kiln import quantity
from kiln.api import trainingjob
from kiln.training import admission, workers

Object = dict[str, Any]
Key = tuple[str, str]
Resources = admission.Resources
Phase = trainingjob.TrainingJobPhase
POD, NODE, PRIORITY_CLASS, TRAINING_JOB, RESOURCE_QUOTA = (
    "pod",
    "node",
    "priorityclass",
    "trainingjob",
    "resourcequota",
)
KINDS = (POD, NODE, PRIORITY_CLASS, TRAINING_JOB, RESOURCE_QUOTA)
"""The kinds whose watch events the inventory takes."""


def _key(body: Mapping[str, Any]) -> Key:
    metadata = body["metadata"]
    return metadata.get("namespace") or "", metadata["name"]


def _version(body: Mapping[str, Any]) -> int | None:
    """The resourceVersion as a number, where it is one (etcd's revisions are), to order events."""
    value = (body.get("metadata") or {}).get("resourceVersion")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclasses.dataclass
class _PodUse:
    node: str | None
    """Where it is bound; None while it waits for the scheduler."""
    requests: Resources
    job: Key | None
    deleting: bool = False
    """On its way out: it holds its node until it stops, but is no longer one of its gang's workers."""


@dataclasses.dataclass
class _Quota:
    hard: Resources
    used: Resources


@dataclasses.dataclass
class _Entry:
    gang: admission.Gang
    phase: Phase
    suspended: bool
    job: workers.Job | None
    """The job the gang came from, to build it again when nodes or priorities change."""
    world: int | None = None
    """How many workers the gang holds admission for, when elastic admission sized it."""

    @property
    def size(self) -> int:
        return self.world or self.gang.size


class Inventory:
    def __init__(self) -> None:
        self.nodes: dict[str, Object] = {}
        self.allocatable: dict[str, Resources] = {}
        self.free: dict[str, Resources] = {}
        """Allocatable, minus what bound unfinished pods request, minus reservations."""
        self.capacity = admission.Capacity(self.nodes, self.allocatable, self.free)
        self.priorities: dict[str, int] = {}
        self.default_priority = 0
        self._classes: dict[str, Object] = {}
        self._used: dict[str, Resources] = {}
        self._held: dict[str, Resources] = {}
        self._pods: dict[Key, _PodUse] = {}
        """Every pod not yet finished."""
        self._bound: dict[Key, int] = {}
        self._workers: dict[Key, dict[str, Object]] = {}
        """Every pod labelled with a job, finished or not, as last seen: what its reconcile observes."""
        self._existing: dict[Key, int] = {}
        """Unfinished worker pods of each job, bound or not: what its namespace's quota counts."""
        self._quotas: dict[str, dict[str, _Quota]] = {}
        self._namespace_used: dict[str, Resources] = {}
        """What the namespace's unfinished pods request, in quota names: the quota's status.used as
        it will be, since the quota controller writes status after the pods change."""
        self._pending: dict[str, Resources] = {}
        """What the workers of admitted gangs not created yet will take of their namespace's quota."""
        self._pended: dict[Key, int] = {}
        self._jobs: dict[Key, _Entry] = {}
        self._reserved: dict[Key, dict[str, int]] = {}
        self._preempting: dict[Key, Key] = {}
        self._shrinking: dict[Key, int] = {}
        """Elastic gangs of `_preempting` that make room by restarting with fewer workers: how many
        they keep."""
        self._stopping: dict[Key, int] = {}
        """Each job's workers on their way out that still hold their node."""
        """Running gangs told to stop, with the gang they make room for, until they are seen stopped."""
        self._granted: dict[Key, str] = {}
        """Gangs admitted here whose Admitted status has not been seen yet, with the reason."""
        self._queue: list[tuple[tuple[int, str, str, str], Key]] = []
        self._tried: dict[Key, int] = {}
        """The capacity epoch at which each waiting gang last failed to fit."""
        self._epoch = 0
        """Counts the times capacity freed; a gang that did not fit is tried again only after."""
        self._versions: dict[tuple[str, Key], int] = {}
        self._woken: list[Key] = []
        self._stale_gangs = False
        self._elastic: set[Key] = set()
        """The elastic gangs among `_jobs`: the only ones that may grow."""

    # -- events --------------------------------------------------------------------------------

    def watched(self, kind: str, gone: bool, body: Mapping[str, Any]) -> None:
        """An object of one of `KINDS` as listed or watched, or its deletion."""
        seen_or_gone = {
            POD: (self.pod_seen, self.pod_gone),
            NODE: (self.node_seen, self.node_gone),
            PRIORITY_CLASS: (self.priority_class_seen, self.priority_class_gone),
            TRAINING_JOB: (self.job_seen, self.job_gone),
            RESOURCE_QUOTA: (self.quota_seen, self.quota_gone),
        }[kind]
        seen_or_gone[gone](body)

    def _fresh(self, kind: str, body: Mapping[str, Any]) -> bool:
        """Whether the event is newer than what is known of the object; a deletion leaves its version
        behind, so an older event arriving late cannot bring the object back."""
        version = _version(body)
        known = self._versions.get((kind, _key(body)))
        if version is not None and known is not None and version < known:
            return False
        if version is not None:
            self._versions[(kind, _key(body))] = version
        return True

    def node_seen(self, body: Mapping[str, Any]) -> None:
        if not self._fresh("node", body):
            return
        name = body["metadata"]["name"]
        allocatable = (body.get("status") or {}).get("allocatable") or {}
        before = self.free.get(name, {})
        self.nodes[name] = dict(body)
        self.allocatable[name] = {key: quantity.parse(value) for key, value in allocatable.items()}
        self._recount(name)
        self.capacity.nodes_changed()
        if any(value > before.get(key, Fraction(0)) for key, value in self.free[name].items()) or not before:
            self._freed()
        self._stale_gangs = True

    def node_gone(self, body: Mapping[str, Any]) -> None:
        if not self._fresh("node", body):
            return
        name = body["metadata"]["name"]
        for table in (self.nodes, self.allocatable, self.free):
            table.pop(name, None)
        self.capacity.nodes_changed()
        self._stale_gangs = True

    def _recount(self, node: str) -> None:
        free = dict(self.allocatable.get(node, {}))
        for table in (self._used, self._held):
            for name, value in table.get(node, {}).items():
                free[name] = free.get(name, Fraction(0)) - value
        self.free[node] = free

    def _add(self, table: dict[str, Resources], node: str, requests: Mapping[str, Fraction], times: int) -> None:
        _add_to(table, node, requests, times)
        if node in self.allocatable:
            self.capacity.take(node, requests, times)

    def priority_class_seen(self, body: Mapping[str, Any]) -> None:
        if self._fresh("priorityclass", body):
            self._classes[body["metadata"]["name"]] = dict(body)
            self._reprioritise()

    def priority_class_gone(self, body: Mapping[str, Any]) -> None:
        if self._fresh("priorityclass", body):
            self._classes.pop(body["metadata"]["name"], None)
            self._reprioritise()

    def _reprioritise(self) -> None:
        self.priorities, self.default_priority = admission.priority_classes(self._classes.values())
        self._stale_gangs = True

    def pod_seen(self, body: Mapping[str, Any]) -> None:
        if not self._fresh("pod", body):
            return
        key = _key(body)
        job_name = (body["metadata"].get("labels") or {}).get(workers.JOB_LABEL)
        job = (key[0], job_name) if job_name else None
        if job is not None:
            self._workers.setdefault(job, {})[key[1]] = dict(body)
        node = (body.get("spec") or {}).get("nodeName") or None
        live = (body.get("status") or {}).get("phase") not in admission.FINISHED_POD_PHASES
        deleting = bool(body["metadata"].get("deletionTimestamp"))
        known = self._pods.get(key)
        if known is not None and live and (known.node, known.deleting) == (node, deleting):
            return  # only binding, finishing or going changes what a pod holds
        if known is not None:
            self._unuse(key, freed=not live)
        if live:
            self._use(key, _PodUse(node, admission.pod_requests(body), job, deleting))
        if job is not None:
            self._stopped(job)

    def _use(self, key: Key, use: _PodUse) -> None:
        self._pods[key] = use
        _add_to(self._namespace_used, key[0], quota_usage(use.requests), 1)
        if use.node is not None:
            self._add(self._used, use.node, use.requests, 1)
        if use.job is None:
            return
        if use.deleting:
            self._stopping[use.job] = self._stopping.get(use.job, 0) + 1
            return
        self._existing[use.job] = self._existing.get(use.job, 0) + 1
        if use.node is not None:
            self._bound[use.job] = self._bound.get(use.job, 0) + 1
        self._rebalance(use.job, bound_on=use.node)

    def pod_gone(self, body: Mapping[str, Any]) -> None:
        if not self._fresh("pod", body):
            return
        namespace, name = _key(body)
        job_name = (body["metadata"].get("labels") or {}).get(workers.JOB_LABEL)
        if job_name and (namespace, job_name) in self._workers:
            pods = self._workers[(namespace, job_name)]
            pods.pop(name, None)
            if not pods:
                del self._workers[(namespace, job_name)]
        if (namespace, name) in self._pods:
            self._unuse((namespace, name))
        if job_name:
            self._stopped((namespace, job_name))

    def _unuse(self, key: Key, freed: bool = True) -> None:
        use = self._pods.pop(key)
        _add_to(self._namespace_used, key[0], quota_usage(use.requests), -1)
        if use.node is not None:
            self._add(self._used, use.node, use.requests, -1)
        if freed:
            self._freed()
        if use.job is not None:
            if use.deleting:
                self._stopping[use.job] -= 1
            else:
                self._existing[use.job] -= 1
                if use.node is not None:
                    self._bound[use.job] -= 1
            self._rebalance(use.job)

    def quota_seen(self, body: Mapping[str, Any]) -> None:
        """A ResourceQuota: its hard limits, and what its status says is used."""
        if not self._fresh("resourcequota", body):
            return
        namespace, name = _key(body)
        hard = {k: quantity.parse(v) for k, v in ((body.get("spec") or {}).get("hard") or {}).items()}
        used = {k: quantity.parse(v) for k, v in ((body.get("status") or {}).get("used") or {}).items()}
        before = self._quotas.get(namespace, {}).get(name)
        self._quotas.setdefault(namespace, {})[name] = _Quota(hard, used)
        if (
            before is None
            or any(v > before.hard.get(k, v) for k, v in hard.items())
            or any(v < before.used.get(k, v) for k, v in used.items())
        ):
            self._freed()

    def quota_gone(self, body: Mapping[str, Any]) -> None:
        if self._fresh("resourcequota", body):
            namespace, name = _key(body)
            self._quotas.get(namespace, {}).pop(name, None)
            self._freed()

    def job_seen(self, body: Mapping[str, Any]) -> None:
        """A TrainingJob as watched; jobs other schedulers place, and jobs that do not parse, are
        theirs to count (their own reconcile reports them)."""
        if not self._fresh("trainingjob", body):
            return
        try:
            job = workers.Job.from_body(body)
        except ValueError:
            self._forget(_key(body))
            return
        if job.spec.gang_scheduling.scheduler is not trainingjob.GangScheduler.BUILTIN:
            self._forget(_key(body))
            return
        status = body.get("status") or {}
        phase = Phase(status.get("phase") or Phase.PENDING.value)
        world = status.get("worldSize") if phase in admission.HOLDS_ADMISSION else None
        self.gang_seen(self.gang_of(job), phase, suspended=job.spec.suspend, job=job, world=world)

    def job_gone(self, body: Mapping[str, Any]) -> None:
        if self._fresh("trainingjob", body):
            self._forget(_key(body))

    def gang_seen(
        self,
        gang: admission.Gang,
        phase: Phase,
        *,
        suspended: bool = False,
        job: workers.Job | None = None,
        world: int | None = None,
    ) -> None:
        """A builtin job's gang in its observed phase (holding admission for `world` workers, when
        elastic admission sized it)."""
        key = gang.key
        known = self._jobs.get(key)
        if phase not in admission.QUEUED:
            self._granted.pop(key, None)  # its own status speaks for it now
        elif key in self._granted and known is not None:
            world = known.world  # granted, its status not written yet: the size it was granted
        if phase in admission.HOLDS_ADMISSION and known is not None and known.phase not in admission.HOLDS_ADMISSION:
            self._preempting.pop(key, None)  # admitted again
            self._shrinking.pop(key, None)
        self._dequeue(key)
        self._put(key, _Entry(gang, phase, suspended, job, world))
        self._stopped(key)
        if self._waiting(key):
            bisect.insort(self._queue, (admission.queue_order(gang), key))
        self._rebalance(key)
        # Capacity that freed before the gang ran woke nothing for it: it may grow into it now.
        if phase is Phase.RUNNING and (known is None or known.phase is not Phase.RUNNING) and self._may_grow(key):
            self._woken.append(key)

    def making_room(self, key: Key) -> tuple[Key, int | None] | None:
        """The job a gang holding admission is to make room for, and how many workers it keeps when
        it shrinks (None: it stops), until its status says it did."""
        by, entry, keep = self._preempting.get(key), self._jobs.get(key), self._shrinking.get(key)
        if by is None or entry is None or not self._holding(key) or (keep is not None and entry.size <= keep):
            return None
        return by, keep

    def _stopped(self, key: Key) -> None:
        """A preempted gang counts as making room for its preemptor until the last of its workers
        that must go is gone (all of them, or those a shrunk gang gives up): until then the
        preemptor waits for it, and picks no other victim."""
        if key not in self._preempting:
            return
        entry = self._jobs.get(key)
        kept = self._shrinking.get(key)
        if kept is None and self._holding(key):
            return  # its status does not say it stopped yet
        if kept is not None and entry is not None and entry.size > kept:
            return  # its status does not say it shrank yet
        staying = entry.size if kept is not None and entry is not None and self._holding(key) else 0
        if not self._stopping.get(key) and self._existing.get(key, 0) <= staying:
            del self._preempting[key]
            self._shrinking.pop(key, None)

    def _forget(self, key: Key) -> None:
        self._dequeue(key)
        self._granted.pop(key, None)
        self._preempting.pop(key, None)
        self._shrinking.pop(key, None)
        self._tried.pop(key, None)
        self._rebalance(key, gone=True)
        self._jobs.pop(key, None)
        self._elastic.discard(key)

    def _put(self, key: Key, entry: _Entry) -> None:
        self._jobs[key] = entry
        if entry.gang.smallest < entry.gang.size:
            self._elastic.add(key)
        else:
            self._elastic.discard(key)

    def _dequeue(self, key: Key) -> None:
        entry = self._jobs.get(key)
        if entry is None:
            return
        position = bisect.bisect_left(self._queue, (admission.queue_order(entry.gang), key))
        if position < len(self._queue) and self._queue[position][1] == key:
            del self._queue[position]

    # -- reservations ----------------------------------------------------------------------------

    def _holding(self, key: Key) -> bool:
        entry = self._jobs.get(key)
        return key in self._granted or (entry is not None and entry.phase in admission.HOLDS_ADMISSION)

    def _waiting(self, key: Key) -> bool:
        entry = self._jobs[key]
        return entry.phase in admission.QUEUED and not entry.suspended and not self._holding(key)

    def _rebalance(self, key: Key, bound_on: str | None = None, gone: bool = False) -> None:
        """Keep the gang's reservation at its unbound workers while it holds admission, none after;
        a worker that binds takes its place from the reservation, preferably on its own node."""
        entry = self._jobs.get(key)
        target = self._unbound(key) if entry and self._holding(key) and not gone else 0
        reserved = self._reserved.setdefault(key, {})
        count = sum(reserved.values())
        while count > target:
            node = bound_on if bound_on and reserved.get(bound_on) else next(iter(reserved))
            self._book(key, node, -1)
            if node != bound_on:
                self._freed()
                if bound_on is not None:
                    self._cover(bound_on, node)
            bound_on = None
            count -= 1
        if count < target and entry is not None:
            self._reserve(entry.gang, target - count)
        if not self._reserved[key]:
            del self._reserved[key]
        unborn = max(entry.size - self._existing.get(key, 0), 0) if entry and self._holding(key) and not gone else 0
        if entry is not None and unborn != self._pended.get(key, 0):
            _add_to(self._pending, key[0], quota_usage(entry.gang.requests), unborn - self._pended.get(key, 0))
            self._pended[key] = unborn

    def _cover(self, bound_on: str, released: str) -> None:
        """A worker bound where its gang held no reservation (`bound_on`), and the reservation it
        held elsewhere (`released`) went back: when that worker took room another gang holds there,
        that gang's reservation moves to the room released, where the scheduler will bind its worker.
        Left where it was, the room would count as free twice, and a gang more would be admitted
        than the nodes hold."""
        if all(value >= 0 for value in self.free.get(bound_on, {}).values()):
            return
        for other, reserved in self._reserved.items():
            gang = self._jobs[other].gang
            movable = reserved.get(bound_on) and admission.matches(self.nodes[released], gang.where)
            if movable and self.capacity.fits(released, gang.requests):
                self._book(other, bound_on, -1)
                self._book(other, released, 1)
                return

    def _unbound(self, key: Key) -> int:
        return max(self._jobs[key].size - self._bound.get(key, 0), 0)

    def _reserve(self, gang: admission.Gang, count: int) -> bool:
        """Reserve `count` more workers of the gang, all or none."""
        placed = self.capacity.place(gang, count)
        if placed is None:
            return False
        for node, times in placed.items():
            self.capacity.give(node, gang.requests, times)  # booked again below, as held
            self._book(gang.key, node, times)
        return True

    def _book(self, key: Key, node: str, times: int) -> None:
        reserved = self._reserved.setdefault(key, {})
        reserved[node] = reserved.get(node, 0) + times
        if not reserved[node]:
            del reserved[node]
        self._add(self._held, node, self._jobs[key].gang.requests, times)

    def _freed(self) -> None:
        self._epoch += 1

    # -- admission -----------------------------------------------------------------------------

    def gang_of(self, job: workers.Job) -> admission.Gang:
        """The job's gang as the current nodes and priority classes make it."""
        return admission.gang_of(job, list(self.nodes.values()), self.priorities, self.default_priority)

    def _refresh_gangs(self) -> None:
        """Nodes or priority classes changed: where gangs may run and their order may have too."""
        if not self._stale_gangs:
            return
        self._stale_gangs = False
        for key, entry in list(self._jobs.items()):
            if entry.job is not None:
                self._dequeue(key)
                entry.gang = self.gang_of(entry.job)
                if self._waiting(key):
                    bisect.insort(self._queue, (admission.queue_order(entry.gang), key))

    def _grant(self, gang: admission.Gang) -> str | None:
        """Admit the gang if its namespace's quotas allow it and its unbound workers can all be
        reserved (an elastic gang with as many as fit, down to its minimum); why not, otherwise (a
        quota's reason, or "" for capacity)."""
        entry = self._jobs.get(gang.key)
        if entry is None or entry.gang != gang:  # a candidate the watch has not shown yet, or changed
            self._dequeue(gang.key)
            entry = dataclasses.replace(entry, gang=gang) if entry else _Entry(gang, Phase.PENDING, False, None)
            self._put(gang.key, entry)
        held = sum(self._reserved.get(gang.key, {}).values())
        over: str | None = None
        for size in range(gang.size, gang.smallest - 1, -1):
            over = self._over_quota(gang, size)
            if over is not None:
                continue
            entry.world = size if size != gang.size else None
            if self._reserve(gang, self._unbound(gang.key) - held):
                self._granted[gang.key] = _fits(gang, size)
                self._rebalance(gang.key)
                self._dequeue(gang.key)
                self._tried.pop(gang.key, None)
                return None
        entry.world = None
        return over or ""  # the smallest size's quota, or capacity

    def grow(self, key: Key) -> int | None:
        """Reserve room for an elastic gang holding admission to grow toward its maximum: its new
        size, or None when not one more worker fits."""
        entry = self._jobs.get(key)
        if entry is None or not self._holding(key) or entry.size >= entry.gang.size:
            return None
        for size in range(entry.gang.size, entry.size, -1):
            if self._over_quota(entry.gang, size) is None and self._reserve(entry.gang, size - entry.size):
                entry.world = size if size != entry.gang.size else None
                self._rebalance(key)
                return size
        return None

    def _growable(self) -> list[Key]:
        """Elastic gangs holding admission below their maximum that one more worker would fit."""
        return [key for key in sorted(self._elastic) if self._may_grow(key)]

    def _may_grow(self, key: Key) -> bool:
        entry = self._jobs[key]
        if entry.phase is not Phase.RUNNING or entry.size >= entry.gang.size or not self._holding(key):
            return False
        trial = admission.Capacity(self.nodes, self.allocatable, {n: dict(f) for n, f in self.free.items()})
        return trial.place(entry.gang, 1) is not None

    def _over_quota(self, gang: admission.Gang, size: int) -> str | None:
        """The first quota of the namespace the whole gang would exceed, worded for people. What a
        namespace uses is the larger of the quota's status and its pods as watched (each may lag the
        other), plus the workers of gangs admitted but not created yet."""
        namespace = gang.namespace
        # What the gang already counts as pending (admitted, not created) is in `pending` below.
        unborn = max(size - self._existing.get(gang.key, 0) - self._pended.get(gang.key, 0), 0)
        need = {name: value * unborn for name, value in quota_usage(gang.requests).items()}
        pods = self._namespace_used.get(namespace, {})
        pending = self._pending.get(namespace, {})
        for limits in self._quotas.get(namespace, {}).values():
            for name, limit in limits.hard.items():
                if not need.get(name):
                    continue
                in_use = max(limits.used.get(name, Fraction(0)), pods.get(name, Fraction(0)))
                left = limit - in_use - pending.get(name, Fraction(0))
                if need[name] > left:
                    left_text = _amount(name, max(left, Fraction(0)), unit=False)
                    return (
                        f"quota: the job needs {_amount(name, need[name])}, {left_text}"
                        f" of {_amount(name, limit, unit=False)} left in namespace {namespace}"
                    )
        return None

    def decide(self, candidate: admission.Gang) -> admission.Admission:
        """Admit the candidate if its whole gang fits after the gangs holding admission and those
        ahead of it in the queue (which are admitted on the way when they fit)."""
        self._refresh_gangs()
        key = candidate.key
        if key in self._granted or self._holding(key):
            size = self._jobs[key].size if key in self._jobs else candidate.size
            return admission.Admission(True, self._granted.get(key) or _fits(candidate, size), workers=size)
        blocked = self._admit_queue(until=admission.queue_order(candidate), skip=key)
        refused = self._grant(candidate)
        if refused is None:
            size = self._jobs[key].size
            return admission.Admission(True, self._granted[key], workers=size)
        self._tried[key] = self._epoch
        if refused:
            return admission.Admission(False, refused)
        victims = self._preemption(candidate)
        if victims is not None:
            return victims
        note = f"; {blocked} job(s) ahead in the queue" if blocked else ""
        return admission.Admission(False, f"waiting for capacity: {self.capacity.shortfall(candidate)}{note}")

    def _preemption(self, candidate: admission.Gang) -> admission.Admission | None:
        """The fewest running gangs of lower priority whose stopping lets the candidate fit (never one
        of equal or higher priority, nor one that opted out), counting those already stopping for it;
        None when preemption cannot make room."""
        going = [key for key, by in self._preempting.items() if by == candidate.key]
        eligible = sorted(
            (
                key
                for key, entry in self._jobs.items()
                if self._holding(key)
                and key not in self._preempting
                and entry.gang.preemptible
                and entry.gang.priority < candidate.priority
            ),
            # The least important first, and of those the youngest: it has the least work to lose.
            key=lambda key: (self._jobs[key].gang.priority, _descending(self._jobs[key].gang.queued_at), key),
        )
        if not going and not eligible:
            return None
        usage = self._usage_by_job({*going, *eligible})
        if going and self._fits_without(candidate, going, usage):
            return self._preempting_reason(candidate, going, ())
        shrunk = self._shrinkage(candidate, going, eligible, usage)
        if shrunk is not None:
            victim, keep = shrunk
            self._preempting[victim] = candidate.key
            self._shrinking[victim] = keep
            return self._preempting_reason(candidate, going, (victim,))
        if not self._fits_without(candidate, going + eligible, usage):
            return None
        single = next((key for key in eligible if self._fits_without(candidate, [*going, key], usage)), None)
        chosen = [single] if single is not None else []
        for key in eligible if single is None else ():
            chosen.append(key)
            if self._fits_without(candidate, going + chosen, usage):
                break
        for key in list(reversed(chosen))[1:]:  # drop any the later ones made unnecessary
            if self._fits_without(candidate, going + [k for k in chosen if k != key], usage):
                chosen.remove(key)
        for key in chosen:
            self._preempting[key] = candidate.key
        return self._preempting_reason(candidate, going, tuple(chosen))

    def _shrinkage(
        self,
        candidate: admission.Gang,
        going: list[Key],
        eligible: list[Key],
        usage: Mapping[Key, list[tuple[str, Resources, int]]],
    ) -> tuple[Key, int] | None:
        """An elastic gang above its minimum that, restarted with fewer workers, leaves the candidate
        room, so no gang has to stop: the one giving up the fewest workers (the least important
        first), and how many it keeps."""
        best: tuple[Key, int] | None = None
        for key in eligible:
            entry = self._jobs[key]
            for keep in range(entry.size - 1, entry.gang.smallest - 1, -1):
                if best is not None and entry.size - keep >= self._jobs[best[0]].size - best[1]:
                    break
                if self._fits_without(candidate, [*going, key], usage, keeping={key: keep}):
                    best = (key, keep)
                    break
        return best

    def _preempting_reason(
        self, candidate: admission.Gang, going: list[Key], chosen: tuple[Key, ...]
    ) -> admission.Admission:
        names = ", ".join(self._victim_named(key) for key in [*going, *chosen])
        return admission.Admission(
            False,
            f"preempting {names} (lower priority than {candidate.priority}) to make room: waiting for"
            " their workers to checkpoint and stop",
            preempt=tuple(key for key in chosen if key not in self._shrinking),
            shrink=tuple((key, self._shrinking[key]) for key in chosen if key in self._shrinking),
            preempting=(*going, *chosen),
        )

    def _victim_named(self, key: Key) -> str:
        keep = self._shrinking.get(key)
        return f"{key[0]}/{key[1]}" + (f" down to {keep} workers" if keep is not None else "")

    def _usage_by_job(self, keys: set[Key]) -> dict[Key, list[tuple[str, Resources, int]]]:
        """What each of the jobs holds: its bound workers and its reservation, node by node."""
        usage: dict[Key, list[tuple[str, Resources, int]]] = {key: [] for key in keys}
        for use in self._pods.values():
            if use.job in usage and use.node is not None:
                usage[use.job].append((use.node, use.requests, 1))
        for key in keys:
            requests = self._jobs[key].gang.requests
            usage[key] += [(node, requests, times) for node, times in self._reserved.get(key, {}).items()]
        return usage

    def _fits_without(
        self,
        candidate: admission.Gang,
        keys: list[Key],
        usage: Mapping[Key, list[tuple[str, Resources, int]]],
        keeping: Mapping[Key, int] | None = None,
    ) -> bool:
        """Whether the candidate fits once the gangs `keys` stopped, those shrinking (`keeping`, and
        those shrinking for it already) restarted with the workers they keep."""
        trial = admission.Capacity(self.nodes, self.allocatable, {node: dict(free) for node, free in self.free.items()})
        for key in keys:
            for node, requests, times in usage[key]:
                if node in trial.free:
                    trial.give(node, requests, times)
        kept = {key: self._shrinking[key] for key in keys if key in self._shrinking} | dict(keeping or {})
        if any(trial.place(self._jobs[key].gang, keep) is None for key, keep in kept.items()):
            return False
        return trial.place(candidate, max(candidate.size - self._bound.get(candidate.key, 0), 0)) is not None

    def admit_waiting(self) -> None:
        """Capacity may have freed: admit what fits now, in queue order, and wake the elastic gangs
        that could grow (their reconcile asks `grow`, once their cooldown allows)."""
        self._refresh_gangs()
        self._admit_queue()
        self._woken += self._growable()

    def _admit_queue(self, until: tuple[int, str, str, str] | None = None, skip: Key | None = None) -> int:
        """Admit the waiting gangs (ahead of `until`) that fit; how many of them still wait."""
        blocked = 0
        for order, key in list(self._queue):
            if until is not None and order >= until:
                break
            if key == skip:
                continue
            gang = self._jobs[key].gang
            if self._tried.get(key) != self._epoch and self._grant(gang) is None:
                self._woken.append(key)
                continue
            self._tried[key] = self._epoch
            blocked += 1
        return blocked

    def take_woken(self) -> list[Key]:
        """The jobs admitted on another job's turn since the last call: their reconciles should run."""
        woken, self._woken = self._woken, []
        return woken

    @property
    def epoch(self) -> int:
        return self._epoch

    def worker_pods(self, key: Key) -> list[Object]:
        """The pods labelled with the job, as last seen."""
        return list(self._workers.get(key, {}).values())

    def worker_pod(self, key: Key, name: str) -> Object | None:
        """One of the job's pods, as last seen."""
        return self._workers.get(key, {}).get(name)

    def bound(self, key: Key) -> int:
        return self._bound.get(key, 0)

    def reserved(self, key: Key) -> Mapping[str, int]:
        return dict(self._reserved.get(key, {}))

    def queue(self) -> list[Key]:
        return [key for _, key in self._queue]


def quota_usage(requests: Mapping[str, Fraction]) -> Resources:
    """What a pod asking for `requests` counts against a ResourceQuota, in the quota's names:
    `pods`, `requests.<resource>`, and the legacy `cpu` and `memory`."""
    usage = {"pods": Fraction(1)}
    for name, value in requests.items():
        if name != admission.PODS:
            usage[f"requests.{name}"] = value
            if name in ("cpu", "memory"):
                usage[name] = value
    return usage


def _amount(name: str, value: Fraction, unit: bool = True) -> str:
    """A quota amount for people: memory in Gi or Mi where it divides, the resource named without
    its `requests.` prefix."""
    resource = name.removeprefix("requests.")
    text = admission.show(value)
    if resource == "memory":
        for suffix, size in (("Gi", 2**30), ("Mi", 2**20)):
            if value and value % size == 0:
                text = f"{admission.show(value / size)}{suffix}"
                break
    return f"{text} {resource}" if unit else text


def _add_to(table: dict[str, Resources], row: str, amounts: Mapping[str, Fraction], times: int) -> None:
    totals = table.setdefault(row, {})
    for name, value in amounts.items():
        totals[name] = totals.get(name, Fraction(0)) + value * times


def _descending(text: str) -> tuple[int, ...]:
    """Sorts text the other way round."""
    return tuple(-ord(character) for character in text)


def _fits(gang: admission.Gang, size: int) -> str:
    if size == gang.size:
        return f"all {gang.size} workers fit the free capacity"
    return f"{size} of {gang.size} workers fit the free capacity (elastic, at least {gang.smallest})"
