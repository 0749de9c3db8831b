"""Builtin gang admission, the parts that need no memory: what a gang asks for, which nodes it may
use, free capacity per node and the placement of a whole gang in it, and the queue order.

A job is admitted only when all of its workers fit the free capacity of the nodes they may run on,
as Kueue admits a workload against its quota; `kiln.training.inventory` keeps that capacity up to
date and decides in queue order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from kiln import quantity
from kiln.api import trainingjob
from kiln.training import workers

Object = dict[str, Any]
Resources = dict[str, Fraction]
Phase = trainingjob.TrainingJobPhase
PODS = "pods"
HOLDS_ADMISSION = frozenset({Phase.ADMITTED, Phase.RUNNING})
"""Phases whose gang keeps its capacity reserved, bound or not."""
QUEUED = frozenset({Phase.PENDING, Phase.QUEUED})
"""Phases whose gang waits in the queue (unless the job is suspended)."""
_BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
FINISHED_POD_PHASES = frozenset({"Succeeded", "Failed"})


@dataclasses.dataclass(frozen=True)
class Gang:
    """One job's demand: `size` workers, each asking for `requests`, on nodes `where` allows."""

    namespace: str
    name: str
    size: int
    where: workers.Placement
    priority: int = 0
    queued_at: str = ""
    """The job's creation timestamp (RFC 3339, so it sorts as text), for FIFO order."""
    preemptible: bool = True
    min_size: int = 0
    """The fewest workers the gang may start with (elastic minWorkers); `size` when 0."""

    @property
    def smallest(self) -> int:
        return self.min_size or self.size

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @functools.cached_property
    def requests(self) -> Resources:
        """What each worker asks for, the pod slot included."""
        asked = {name: quantity.parse(value) for name, value in self.where.requests.items()}
        return {**asked, PODS: Fraction(1)}


@dataclasses.dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str
    """Why the job waits (for people), or which scheduler admitted it."""
    preempt: tuple[tuple[str, str], ...] = ()
    """Running jobs (namespace, name) to preempt now, so the waiting job fits once they stop."""
    shrink: tuple[tuple[tuple[str, str], int], ...] = ()
    """Elastic running jobs to restart now with fewer workers (how many they keep), so it fits."""
    preempting: tuple[tuple[str, str], ...] = ()
    """Every job stopping or shrinking to make room for this one: now, and before."""
    workers: int | None = None
    """How many workers builtin admission sized an elastic gang to."""


def pod_requests(pod: Mapping[str, Any]) -> Resources:
    """What a pod asks the scheduler for: the containers' requests (limits where a request is unset,
    as the API server defaults them), at least each init container's, plus the pod itself."""
    spec = pod.get("spec") or {}

    def of(container: Mapping[str, Any]) -> Resources:
        resources = container.get("resources") or {}
        merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return {name: quantity.parse(value) for name, value in merged.items()}

    total: Resources = {}
    for container in spec.get("containers") or []:
        for name, value in of(container).items():
            total[name] = total.get(name, Fraction(0)) + value
    for container in spec.get("initContainers") or []:
        for name, value in of(container).items():
            total[name] = max(total.get(name, Fraction(0)), value)
    total[PODS] = Fraction(1)
    return total


def _tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
            continue
        if not toleration.get("key"):
            if toleration.get("operator") == "Exists":
                return True
            continue
        if toleration["key"] != taint.get("key"):
            continue
        if toleration.get("operator") == "Exists" or toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def matches(node: Mapping[str, Any], where: workers.Placement) -> bool:
    """Whether the scheduler may place a worker with this placement on the node."""
    spec = node.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    if spec.get("unschedulable"):
        return False
    if any(labels.get(key) != value for key, value in where.node_selector.items()):
        return False
    if where.avoid_gpu_nodes and labels.get(workers.GPU_PRESENT_LABEL) == "true":
        return False
    return all(
        taint.get("effect") not in _BLOCKING_EFFECTS or _tolerates(where.tolerations, taint)
        for taint in spec.get("taints") or []
    )


def has_gpus(node: Mapping[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    return labels.get(workers.GPU_PRESENT_LABEL) == "true" or quantity.parse(
        allocatable.get(workers.GPU_RESOURCE, 0)
    ) > Fraction(0)


def cpu_nodes_exist(nodes: Iterable[Mapping[str, Any]], tolerations: Iterable[Mapping[str, Any]] = ()) -> bool:
    """Whether a node without GPUs could take a worker with these tolerations, so CPU-only workers
    can be kept off GPU nodes. A tainted control-plane node is no such home."""
    tolerations = list(tolerations)
    return any(
        not has_gpus(node)
        and not (node.get("spec") or {}).get("unschedulable")
        and all(
            taint.get("effect") not in _BLOCKING_EFFECTS or _tolerates(tolerations, taint)
            for taint in (node.get("spec") or {}).get("taints") or []
        )
        for node in nodes
    )


def cpu_nodes_for(job: workers.Job, nodes: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the job's CPU-only workers have a node without GPUs to go to, given its tolerations.
    A job that asks for GPUs has no CPU-only workers, so the nodes are not looked at."""
    if job.spec.resources.gpus is not None:
        return False
    return cpu_nodes_exist(nodes, [toleration.to_wire() for toleration in job.spec.tolerations])


def priority_classes(classes: Iterable[Mapping[str, Any]]) -> tuple[dict[str, int], int]:
    """PriorityClass values by name, and the globalDefault one's value (0 without one)."""
    classes = list(classes)
    values = {item["metadata"]["name"]: int(item.get("value", 0)) for item in classes}
    default = next((int(item.get("value", 0)) for item in classes if item.get("globalDefault")), 0)
    return values, default


def gang_of(
    job: workers.Job, nodes: Sequence[Mapping[str, Any]], priorities: Mapping[str, int], default_priority: int
) -> Gang:
    """The job's demand: its workers, where they may run, and its place in the queue."""
    priority_class = job.spec.priority_class_name
    elastic = job.spec.elastic
    return Gang(
        namespace=job.namespace,
        name=job.name,
        size=elastic.max_workers if elastic else job.spec.workers,
        min_size=elastic.min_workers if elastic else 0,
        where=workers.placement(job.spec, cpu_nodes_for(job, nodes)),
        priority=priorities.get(priority_class, default_priority) if priority_class else default_priority,
        queued_at=job.created,
        preemptible=job.spec.preemptible,
    )


_MAX_SHAPES = 100


class Capacity:
    """Free resources per node, taken as workers are placed. It works on the `free` map it is given,
    in place, so one map can be kept up to date as the cluster changes (`kiln.training.inventory`)."""

    def __init__(
        self, nodes: Mapping[str, Mapping[str, Any]], allocatable: Mapping[str, Resources], free: dict[str, Resources]
    ) -> None:
        self.nodes = nodes
        self.allocatable = allocatable
        self.free = free
        self._takes: dict[str, int] = {}
        """How often each node's free map changed in place; a map replaced is a new object."""
        self._candidates: dict[str, list[str]] = {}
        """The nodes each placement may use, by its `where`."""
        self._scores: dict[frozenset[tuple[str, Fraction]], dict[str, tuple[Resources, int, bool, Fraction]]] = {}
        """Whether a worker fits each node and the node's free share, by requests and node, as of
        the free map and change they were computed for: placing one worker changes one node, so the
        next placement recomputes that node only."""

    def take(self, node: str, requests: Mapping[str, Fraction], times: int = 1) -> None:
        free = self.free.setdefault(node, {})
        for name, value in requests.items():
            free[name] = free.get(name, Fraction(0)) - value * times
        self._takes[node] = self._takes.get(node, 0) + 1

    def give(self, node: str, requests: Mapping[str, Fraction], times: int = 1) -> None:
        self.take(node, requests, -times)

    def fits(self, node: str, requests: Resources) -> bool:
        """Whether one worker asking for `requests` fits what the node has free."""
        free = self.free[node]
        return all(free.get(name, Fraction(0)) >= value for name, value in requests.items())

    def place(self, gang: Gang, count: int) -> dict[str, int] | None:
        """Place `count` workers of the gang, all or none: how many went to each node, or None (and
        nothing taken) when they do not all fit. Most-free nodes first, so gangs spread as the
        scheduler's least-allocated scoring spreads them."""
        requests = gang.requests
        candidates = self._candidates_for(gang.where)
        placed: dict[str, int] = {}
        known = self._scores_of(frozenset(requests.items()))
        for _ in range(count):
            scores = {name: self._score(name, requests, known) for name in candidates}
            fitting = [name for name in candidates if scores[name][0]]
            if not fitting:
                for name, times in placed.items():
                    self.give(name, requests, times)
                return None
            chosen = max(fitting, key=lambda name: scores[name][1])
            self.take(chosen, requests)
            placed[chosen] = placed.get(chosen, 0) + 1
        return placed

    def _candidates_for(self, where: workers.Placement) -> list[str]:
        """The nodes `where` allows, remembered until `nodes_changed`: matching labels and taints on
        every node is most of what a placement costs."""
        key = repr(where)
        if key not in self._candidates:
            self._candidates[key] = [
                name for name, node in self.nodes.items() if name in self.free and matches(node, where)
            ]
        return self._candidates[key]

    def nodes_changed(self) -> None:
        """A node came, went or changed: the nodes each placement may use are picked again."""
        self._candidates.clear()

    def _scores_of(self, shape: frozenset[tuple[str, Fraction]]) -> dict[str, tuple[Resources, int, bool, Fraction]]:
        """The scores remembered for workers of one shape of requests, by node. Looked up once per
        placement, since comparing shapes compares their quantities."""
        if shape not in self._scores and len(self._scores) >= _MAX_SHAPES:  # start over rather than grow
            self._scores.clear()
        return self._scores.setdefault(shape, {})

    def _score(
        self, node: str, requests: Resources, known: dict[str, tuple[Resources, int, bool, Fraction]]
    ) -> tuple[bool, Fraction]:
        """Whether a worker with these requests fits the node, and the node's free share; `known`
        holds the scores of workers of this shape."""
        free, takes = self.free[node], self._takes.get(node, 0)
        remembered = known.get(node)
        if remembered is not None and remembered[0] is free and remembered[1] == takes:
            return remembered[2], remembered[3]
        fits, share = self.fits(node, requests), self._share_free(node, requests)
        known[node] = (free, takes, fits, share)
        return fits, share

    def _share_free(self, node: str, requests: Resources) -> Fraction:
        allocatable = self.allocatable[node]
        return sum(
            (self.free[node].get(name, Fraction(0)) / allocatable[name] for name in requests if allocatable.get(name)),
            Fraction(0),
        )

    def shortfall(self, gang: Gang) -> str:
        """Which resources the gang lacks on the nodes it may use, for the waiting reason."""
        candidates = self._candidates_for(gang.where)
        if not candidates:
            return "no node matches the job's nodeSelector, GPU product and tolerations"
        short = []
        for name, value in gang.requests.items():
            needed = value * gang.size
            free = sum((max(self.free[node].get(name, Fraction(0)), Fraction(0)) for node in candidates), Fraction(0))
            if free < needed:
                short.append(f"{show(needed)} {name} ({show(free)} free)")
        if short:
            return f"the job needs {', '.join(short)} on the {len(candidates)} nodes it may use"
        return f"no placement of all {gang.size} workers fits: the free capacity is spread over too many nodes"


def show(value: Fraction) -> str:
    """A quantity for people: whole numbers as such, others as a short decimal."""
    return str(int(value)) if value.denominator == 1 else f"{float(value):g}"


def queue_order(gang: Gang) -> tuple[int, str, str, str]:
    """Higher priority first, then first come, first served."""
    return -gang.priority, gang.queued_at, gang.namespace, gang.name
