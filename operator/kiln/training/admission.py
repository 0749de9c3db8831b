"""Builtin gang admission: a job is admitted only when all of its workers fit the free capacity of
the nodes they may run on, as Kueue admits a workload against its quota.

Capacity is what nodes can allocate minus what bound, unfinished pods request. Jobs already
admitted whose workers are not bound yet (just admitted, or restarting after a failure) keep their
whole gang reserved, and jobs ahead in the queue (higher priority, then older) that fit are
reserved before the candidate, so a later job never takes capacity an earlier one could use. A job
that does not fit waits and holds nothing: two half-placed gangs can never block each other.

What the cluster holds is decided here too, from the objects as listed: which jobs' phases hold
their admission, which wait in the queue, and how many of each gang's workers are bound.
"""

from __future__ import annotations

import dataclasses
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
_FINISHED_POD_PHASES = frozenset({"Succeeded", "Failed"})


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

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def requests(self) -> Resources:
        asked = {name: quantity.parse(value) for name, value in self.where.requests.items()}
        return {**asked, PODS: Fraction(1)}


@dataclasses.dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str
    """Why the job waits (for people), or which scheduler admitted it."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """What admission reads: nodes, pods, the gangs admitted and those waiting."""

    nodes: Sequence[Object]
    pods: Sequence[Object]
    admitted: Sequence[tuple[Gang, int]]
    """Admitted gangs with how many of their workers are bound to a node now."""
    waiting: Sequence[Gang]


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
    """Whether the job's CPU-only workers have a node without GPUs to go to, given its tolerations."""
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
    return Gang(
        namespace=job.namespace,
        name=job.name,
        size=job.spec.workers,
        where=workers.placement(job.spec, cpu_nodes_for(job, nodes)),
        priority=priorities.get(priority_class, default_priority) if priority_class else default_priority,
        queued_at=job.created,
    )


def bound_workers(pods: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """How many unfinished workers of each job (namespace, name) are bound to a node."""
    bound: dict[tuple[str, str], int] = {}
    for pod in pods:
        job_name = (pod["metadata"].get("labels") or {}).get(workers.JOB_LABEL)
        phase = (pod.get("status") or {}).get("phase")
        if job_name and (pod.get("spec") or {}).get("nodeName") and phase not in _FINISHED_POD_PHASES:
            key = (pod["metadata"].get("namespace", ""), job_name)
            bound[key] = bound.get(key, 0) + 1
    return bound


def cluster_snapshot(
    nodes: Sequence[Object],
    pods: Sequence[Object],
    jobs: Iterable[Mapping[str, Any]],
    priorities: Mapping[str, int],
    default_priority: int,
) -> Cluster:
    """The cluster as builtin admission reads it, from every node, pod and TrainingJob listed. Jobs
    other schedulers place are theirs to count; a job that does not parse is left out (its own
    reconcile reports it)."""
    bound = bound_workers(pods)
    admitted: list[tuple[Gang, int]] = []
    waiting: list[Gang] = []
    for body in jobs:
        try:
            job = workers.Job.from_body(body)
        except ValueError:
            continue
        if job.spec.gang_scheduling.scheduler is not trainingjob.GangScheduler.BUILTIN:
            continue
        phase = (body.get("status") or {}).get("phase") or Phase.PENDING.value
        one = gang_of(job, nodes, priorities, default_priority)
        if phase in HOLDS_ADMISSION:
            admitted.append((one, bound.get(one.key, 0)))
        elif phase in QUEUED and not job.spec.suspend:
            waiting.append(one)
    return Cluster(nodes=nodes, pods=pods, admitted=admitted, waiting=waiting)


class _Capacity:
    """Free resources per node, consumed as workers are placed on a trial basis."""

    def __init__(self, nodes: Sequence[Object], pods: Sequence[Object]) -> None:
        self.nodes = {node["metadata"]["name"]: node for node in nodes}
        self.allocatable: dict[str, Resources] = {}
        for name, node in self.nodes.items():
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            self.allocatable[name] = {key: quantity.parse(value) for key, value in allocatable.items()}
        self.free = {name: dict(allocatable) for name, allocatable in self.allocatable.items()}
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            phase = (pod.get("status") or {}).get("phase")
            if node_name in self.free and phase not in _FINISHED_POD_PHASES:
                self._take(node_name, pod_requests(pod))

    def _take(self, node: str, requests: Resources) -> None:
        free = self.free[node]
        for name, value in requests.items():
            free[name] = free.get(name, Fraction(0)) - value

    def _fits(self, node: str, requests: Resources) -> bool:
        free = self.free[node]
        return all(free.get(name, Fraction(0)) >= value for name, value in requests.items())

    def place(self, gang: Gang, count: int) -> bool:
        """Place `count` workers of the gang, all or none; most-free nodes first, so gangs spread
        as the scheduler's least-allocated scoring spreads them."""
        requests = gang.requests
        trial = {name: dict(free) for name, free in self.free.items()}
        candidates = [name for name, node in self.nodes.items() if matches(node, gang.where)]
        for _ in range(count):
            fitting = [name for name in candidates if self._fits(name, requests)]
            if not fitting:
                self.free = trial
                return False
            self._take(max(fitting, key=lambda name: self._share_free(name, requests)), requests)
        return True

    def _share_free(self, node: str, requests: Resources) -> Fraction:
        allocatable = self.allocatable[node]
        return sum(
            (self.free[node].get(name, Fraction(0)) / allocatable[name] for name in requests if allocatable.get(name)),
            Fraction(0),
        )

    def shortfall(self, gang: Gang) -> str:
        """Which resources the gang lacks on the nodes it may use, for the waiting reason."""
        candidates = [name for name, node in self.nodes.items() if matches(node, gang.where)]
        if not candidates:
            return "no node matches the job's nodeSelector, GPU product and tolerations"
        short = []
        for name, value in gang.requests.items():
            needed = value * gang.size
            free = sum((max(self.free[node].get(name, Fraction(0)), Fraction(0)) for node in candidates), Fraction(0))
            if free < needed:
                short.append(f"{_show(needed)} {name} ({_show(free)} free)")
        if short:
            return f"the job needs {', '.join(short)} on the {len(candidates)} nodes it may use"
        return f"no placement of all {gang.size} workers fits: the free capacity is spread over too many nodes"


def _show(value: Fraction) -> str:
    return str(int(value)) if value.denominator == 1 else f"{float(value):g}"


def queue_order(gang: Gang) -> tuple[int, str, str, str]:
    """Higher priority first, then first come, first served."""
    return -gang.priority, gang.queued_at, gang.namespace, gang.name


def admit(candidate: Gang, cluster: Cluster) -> Admission:
    """Admit the candidate if its whole gang fits after admitted gangs and the queue ahead of it."""
    capacity = _Capacity(cluster.nodes, cluster.pods)
    for gang, bound in cluster.admitted:
        if gang.key != candidate.key and bound < gang.size:
            capacity.place(gang, gang.size - bound)
    ahead = sorted(
        (gang for gang in cluster.waiting if gang.key != candidate.key and queue_order(gang) < queue_order(candidate)),
        key=queue_order,
    )
    for gang in ahead:
        capacity.place(gang, gang.size)  # one that does not fit holds nothing back (best-effort FIFO)
    if capacity.place(candidate, candidate.size):
        return Admission(True, f"all {candidate.size} workers fit the free capacity")
    queue_note = f"; {len(ahead)} job(s) ahead in the queue" if ahead else ""
    return Admission(False, f"waiting for capacity: {capacity.shortfall(candidate)}{queue_note}")
