"""Where pods go: kube-scheduler's core filters and a coscheduling gate, as a pure plan.

`plan` takes the pods, nodes and pod groups as they are and returns which
pending pods bind to which node and, for those that cannot, the message
kube-scheduler would give (`0/3 nodes are available: 3 Insufficient
nvidia.com/gpu.`). It reads no clock and writes nothing; the scheduler
controller applies it.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from kiln import quantity
from kiln.devcluster import selectors

Object = dict[str, Any]
Resources = dict[str, Fraction]

SCHEDULER_NAMES = frozenset({"default-scheduler", "scheduler-plugins-scheduler", "volcano"})
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
COSCHEDULING_LABEL = "scheduling.x-k8s.io/pod-group"
VOLCANO_ANNOTATION = "scheduling.k8s.io/group-name"
COSCHEDULING_PODGROUPS = "podgroups.scheduling.x-k8s.io"
VOLCANO_PODGROUPS = "podgroups.scheduling.volcano.sh"
_SCHEDULED_EFFECTS = ("NoSchedule", "NoExecute")
_REVISIONS = itertools.count()


def is_terminal(pod: Object) -> bool:
    return pod.get("status", {}).get("phase") in TERMINAL_PHASES


def occupies_node(pod: Object) -> bool:
    """A bound pod holds its node's resources until it finishes or is gone, terminating or not."""
    return bool(pod.get("spec", {}).get("nodeName")) and not is_terminal(pod)


def _container_requests(container: Object) -> Resources:
    resources = container.get("resources") or {}
    # a limit without a request defaults the request, as the API server does
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: quantity.parse(value) for name, value in merged.items()}


def pod_requests(pod: Object) -> Resources:
    """What the pod asks of a node, as kube-scheduler adds it up: its containers and native sidecars
    (init containers with restartPolicy Always) together, or more if an init container needs more
    alongside the sidecars started before it; plus overhead and one pod."""
    spec = pod.get("spec", {})
    total: Resources = collections.defaultdict(Fraction)
    for container in spec.get("containers") or []:
        for name, amount in _container_requests(container).items():
            total[name] += amount
    sidecars: Resources = collections.defaultdict(Fraction)
    init_peak: Resources = collections.defaultdict(Fraction)
    for container in spec.get("initContainers") or []:
        asked = _container_requests(container)
        if container.get("restartPolicy") == "Always":
            for name, amount in asked.items():
                sidecars[name] += amount
                init_peak[name] = max(init_peak[name], sidecars[name])
        else:
            for name, amount in asked.items():
                init_peak[name] = max(init_peak[name], amount + sidecars[name])
    for name in set(total) | set(sidecars) | set(init_peak):
        total[name] = max(total[name] + sidecars[name], init_peak[name])
    for name, amount in (spec.get("overhead") or {}).items():
        total[name] += quantity.parse(amount)
    total["pods"] = Fraction(1)
    return dict(total)


DEFAULT_CPU_REQUEST = Fraction(1, 10)
DEFAULT_MEMORY_REQUEST = Fraction(200 * 1024 * 1024)


def scoring_requests(pod: Object) -> Resources:
    """cpu and memory as kube-scheduler scores them: a container that asks for none counts as
    100m and 200Mi, so pods without requests still spread over nodes."""
    total = {"cpu": Fraction(0), "memory": Fraction(0)}
    for container in pod.get("spec", {}).get("containers") or []:
        asked = _container_requests(container)
        total["cpu"] += asked.get("cpu") or DEFAULT_CPU_REQUEST
        total["memory"] += asked.get("memory") or DEFAULT_MEMORY_REQUEST
    return total


@dataclass
class NodeState:
    """A node as the scheduler sees it: what it offers and what its pods already take."""

    name: str
    labels: dict[str, str]
    taints: list[Object]
    allocatable: Resources
    unschedulable: bool
    requested: Resources = field(default_factory=dict)
    scored: Resources = field(default_factory=dict)
    revision: int = field(default_factory=lambda: next(_REVISIONS), compare=False)
    """Unique to what the node holds: a copy shares it, a pod taken gives a new one (so a pass can
    remember how a node looked to pods of one shape until it changes)."""

    @classmethod
    def of(cls, node: Object) -> NodeState:
        status = node.get("status") or {}
        offered = status.get("allocatable") or status.get("capacity") or {}
        return cls(
            name=node["metadata"]["name"],
            labels=node["metadata"].get("labels") or {},
            taints=list((node.get("spec") or {}).get("taints") or []),
            allocatable={name: quantity.parse(value) for name, value in offered.items()},
            unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
        )

    def take(self, pod: Object) -> None:
        for tally, requests in ((self.requested, pod_requests(pod)), (self.scored, scoring_requests(pod))):
            for name, amount in requests.items():
                tally[name] = tally.get(name, Fraction(0)) + amount
        self.revision = next(_REVISIONS)

    def free(self, resource: str) -> Fraction:
        return self.allocatable.get(resource, Fraction(0)) - self.requested.get(resource, Fraction(0))

    def copy(self) -> NodeState:
        return dataclasses.replace(self, requested=dict(self.requested), scored=dict(self.scored))


class NodeUsage:
    """What the bound pods take of each node, kept current one pod event at a time as kube-scheduler's
    cache is, so a scheduling pass starts from it instead of adding up every pod in the cluster; and
    what passes found of each node for pods of each shape, until that node changes (`verdicts`)."""

    VERDICTS_KEPT = 100_000

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], tuple[str, Resources, Resources]] = {}
        self._requested: dict[str, Resources] = collections.defaultdict(dict)
        self._scored: dict[str, Resources] = collections.defaultdict(dict)
        self._nodes: dict[str, tuple[str, NodeState]] = {}
        self._revisions: dict[str, int] = {}
        self.verdicts: Verdicts = {}

    @classmethod
    def of(cls, pods: Iterable[Object]) -> NodeUsage:
        usage = cls()
        for pod in pods:
            usage.observe(pod, gone=False)
        return usage

    def observe(self, pod: Object, gone: bool) -> None:
        key = (pod["metadata"].get("namespace", ""), pod["metadata"]["name"])
        taken = None
        if not gone and occupies_node(pod):
            taken = (pod["spec"]["nodeName"], pod_requests(pod), scoring_requests(pod))
        before = self._pods.get(key)
        if taken == before:
            return  # most pod events (its status) change nothing a node holds
        if before is not None:
            del self._pods[key]
            self._add(before, -1)
        if taken is not None:
            self._pods[key] = taken
            self._add(taken, 1)

    def _add(self, taken: tuple[str, Resources, Resources], sign: int) -> None:
        node, requested, scored = taken
        for tally, amounts in ((self._requested[node], requested), (self._scored[node], scored)):
            for name, amount in amounts.items():
                tally[name] = tally.get(name, Fraction(0)) + sign * amount
        self._revisions[node] = next(_REVISIONS)

    def states(self, nodes: Iterable[Object]) -> list[NodeState]:
        """Each node as a pass may fill it: what it offers, less what its pods take."""
        if len(self.verdicts) > self.VERDICTS_KEPT:
            self.verdicts.clear()
        states = []
        for node in nodes:
            name, version = node["metadata"]["name"], node["metadata"].get("resourceVersion", "")
            known = self._nodes.get(name)
            if known is None or known[0] != version:
                known = self._nodes[name] = (version, NodeState.of(node))
                self._revisions[name] = next(_REVISIONS)
            state = copy.copy(known[1])
            state.requested, state.scored = dict(self._requested[name]), dict(self._scored[name])
            state.revision = self._revisions.setdefault(name, next(_REVISIONS))
            states.append(state)
        return states


def tolerates(toleration: Object, taint: Object) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    key = toleration.get("key")
    if not key:  # an empty key with Exists tolerates everything
        return toleration.get("operator") == "Exists"
    if key != taint.get("key"):
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return bool(toleration.get("value", "") == taint.get("value", ""))


def untolerated_taint(pod: Object, node: NodeState) -> Object | None:
    tolerations = pod.get("spec", {}).get("tolerations") or []
    for taint in node.taints:
        if taint.get("effect") in _SCHEDULED_EFFECTS and not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def matches_node_affinity(pod: Object, node: NodeState) -> bool:
    """nodeSelector and requiredDuringSchedulingIgnoredDuringExecution (terms are ORed)."""
    spec = pod.get("spec", {})
    if any(node.labels.get(key) != value for key, value in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return True
    fields = {"metadata.name": node.name}
    terms = required.get("nodeSelectorTerms") or []
    return any(selectors.node_selector_term_matches(term, node.labels, fields) for term in terms)


def filter_reasons(pod: Object, requests: Resources, node: NodeState) -> list[str]:
    """Why the pod cannot go on the node, from the first filter that refuses it; empty when it fits."""
    if node.unschedulable and not any(
        tolerates(t, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
        for t in pod.get("spec", {}).get("tolerations") or []
    ):
        return ["node(s) were unschedulable"]
    taint = untolerated_taint(pod, node)
    if taint is not None:
        return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"]
    if not matches_node_affinity(pod, node):
        return ["node(s) didn't match Pod's node affinity/selector"]
    short = []
    for resource, amount in sorted(requests.items()):
        if amount > 0 and node.free(resource) < amount:
            short.append("Too many pods" if resource == "pods" else f"Insufficient {resource}")
    return short


def failure_message(node_count: int, reasons_by_node: Iterable[list[str]]) -> str:
    """kube-scheduler's FitError text: reasons counted over nodes, sorted as strings."""
    if node_count == 0:
        return "no nodes available to schedule pods"
    counts: collections.Counter[str] = collections.Counter()
    for reasons in reasons_by_node:
        counts.update(set(reasons))
    histogram = sorted(f"{count} {reason}" for reason, count in counts.items())
    return f"0/{node_count} nodes are available: {', '.join(histogram)}."


def _least_allocated_score(node: NodeState, requests: Resources) -> float:
    """kube-scheduler's default scoring: prefer the node left with the most free cpu and memory (in
    floating point, as kube-scheduler's integer scores are not exact either: equal nodes tie)."""
    score = 0.0
    for resource in ("cpu", "memory"):
        offered = node.allocatable.get(resource, Fraction(0))
        if offered > 0:
            used = node.scored.get(resource, Fraction(0)) + requests[resource]
            score += 1.0 - float(used) / float(offered)
    return score


@functools.cache
def _first_by_name(name: str) -> list[int]:
    """A sort key under which, of nodes that score the same, the first name alphabetically wins."""
    return [-ord(char) for char in name]


Verdicts = dict[tuple[str, str, int], tuple[list[str], float]]
"""What a pass found of each node for pods of one shape: why it refuses them, or its score."""


def _shape(pod: Object, requests: Resources, scoring: Resources) -> str:
    """All that the filters and scores read of a pod (pods of one shape fare alike on a node), as
    text: a string keeps its hash, and a pass looks it up once for every node."""
    spec = pod.get("spec", {})
    placing = json.dumps([spec.get(key) for key in ("tolerations", "nodeSelector", "affinity")], sort_keys=True)
    return f"{sorted(requests.items())}{sorted(scoring.items())}{placing}"


def place(pod: Object, nodes: list[NodeState], verdicts: Verdicts | None = None) -> tuple[NodeState | None, str]:
    """The best node for the pod, or None with the reason none fits. `verdicts` carries what the
    pass already found, so a node unchanged since a pod of the same shape was placed is not
    filtered and scored again (a burst of like pods costs one look at each node, not one each)."""
    requests, scoring = pod_requests(pod), scoring_requests(pod)
    shape = _shape(pod, requests, scoring)
    found = {} if verdicts is None else verdicts
    fitting: list[tuple[float, NodeState]] = []
    reasons_by_node = []
    for node in nodes:
        key = (shape, node.name, node.revision)
        if key not in found:
            reasons = filter_reasons(pod, requests, node)
            found[key] = (reasons, 0.0 if reasons else _least_allocated_score(node, scoring))
        reasons, score = found[key]
        if reasons:
            reasons_by_node.append(reasons)
        else:
            fitting.append((score, node))
    if not fitting:
        return None, failure_message(len(nodes), reasons_by_node)
    _, best = max(fitting, key=lambda scored: (scored[0], _first_by_name(scored[1].name)))
    best.take(pod)
    return best, ""


@dataclass(frozen=True)
class GroupRef:
    """A pod's gang: the PodGroup resource (coscheduling or volcano), namespace and name."""

    resource: str
    namespace: str
    name: str


def group_of(pod: Object) -> GroupRef | None:
    metadata = pod["metadata"]
    namespace = metadata.get("namespace", "")
    name = (metadata.get("labels") or {}).get(COSCHEDULING_LABEL)
    if name:
        return GroupRef(COSCHEDULING_PODGROUPS, namespace, name)
    name = (metadata.get("annotations") or {}).get(VOLCANO_ANNOTATION)
    if name and pod.get("spec", {}).get("schedulerName") == "volcano":
        return GroupRef(VOLCANO_PODGROUPS, namespace, name)
    return None


@dataclass
class Plan:
    bindings: list[tuple[Object, str]] = field(default_factory=list)
    unschedulable: list[tuple[Object, str]] = field(default_factory=list)


def priority(pod: Object, priority_classes: dict[str, int], default_priority: int) -> int:
    spec = pod.get("spec", {})
    if spec.get("priority") is not None:
        return int(spec["priority"])
    name = spec.get("priorityClassName")
    return priority_classes.get(name, default_priority) if name else default_priority


def is_pending(pod: Object) -> bool:
    spec = pod.get("spec", {})
    return (
        not spec.get("nodeName")
        and not pod["metadata"].get("deletionTimestamp")
        and not is_terminal(pod)
        and spec.get("schedulerName", "default-scheduler") in SCHEDULER_NAMES
        and not spec.get("schedulingGates")
    )


def plan(
    pods: list[Object],
    nodes: list[Object],
    min_members: dict[GroupRef, int],
    priority_classes: dict[str, int] | None = None,
    claims: set[tuple[str, str]] | None = None,
    *,
    usage: NodeUsage | None = None,
) -> Plan:
    """Bind what fits, highest priority first then oldest; gangs bind all of minMember or none.

    `min_members` holds each existing PodGroup's minMember; `claims` the
    (namespace, name) of existing PersistentVolumeClaims; `usage` what the
    pods take of the nodes, when the caller keeps it (else it is added up).
    """
    classes = priority_classes or {}
    default_priority = 0
    usage = usage or NodeUsage.of(pods)
    states = usage.states(nodes)
    verdicts = usage.verdicts
    pending = sorted(
        (pod for pod in pods if is_pending(pod)),
        key=lambda pod: (
            -priority(pod, classes, default_priority),
            pod["metadata"].get("creationTimestamp", ""),
            pod["metadata"]["name"],
        ),
    )
    result = Plan()
    handled_groups: set[GroupRef] = set()
    for pod in pending:
        missing_claim = _missing_claim(pod, claims)
        if missing_claim:
            result.unschedulable.append((pod, f"0/{len(states)} nodes are available: {missing_claim}."))
            continue
        group = group_of(pod)
        if group is None:
            node, why = place(pod, states, verdicts)
            if node is None:
                result.unschedulable.append((pod, why))
            else:
                result.bindings.append((pod, node.name))
            continue
        if group in handled_groups:
            continue
        handled_groups.add(group)
        members = [p for p in pods if group_of(p) == group and not is_terminal(p)]
        waiting = [p for p in pending if group_of(p) == group]
        _plan_gang(group, min_members.get(group), members=members, waiting=waiting, states=states, result=result)
    return result


def _missing_claim(pod: Object, claims: set[tuple[str, str]] | None) -> str | None:
    if claims is None:
        return None
    namespace = pod["metadata"].get("namespace", "")
    for volume in pod.get("spec", {}).get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim and (namespace, claim) not in claims:
            return f'persistentvolumeclaim "{claim}" not found'
    return None


def _plan_gang(
    group: GroupRef,
    min_member: int | None,
    *,
    members: list[Object],
    waiting: list[Object],
    states: list[NodeState],
    result: Plan,
) -> None:
    """All-or-nothing: place every waiting member on a trial copy; commit only if minMember is reached."""
    prefix = f"0/{len(states)} nodes are available"
    if min_member is None:
        for pod in waiting:
            result.unschedulable.append((pod, f'{prefix}: pod group "{group.name}" not found.'))
        return
    if len(members) < min_member:
        why = f'{prefix}: pod group "{group.name}" has {len(members)} of its minMember {min_member} pods.'
        for pod in waiting:
            result.unschedulable.append((pod, why))
        return
    bound = sum(
        1 for pod in members if pod.get("spec", {}).get("nodeName") and not pod["metadata"].get("deletionTimestamp")
    )
    trial = [state.copy() for state in states]
    placed: list[tuple[Object, str]] = []
    first_failure = ""
    for pod in waiting:
        node, why = place(pod, trial)
        if node is None:
            first_failure = first_failure or why
        else:
            placed.append((pod, node.name))
    if bound + len(placed) < min_member:
        why = (
            f'pod group "{group.name}" needs {min_member} pods placed together, only {bound + len(placed)} fit: '
            f"{first_failure}"
        )
        for pod in waiting:
            result.unschedulable.append((pod, why))
        return
    by_name = {state.name: state for state in states}
    for pod, node_name in placed:
        by_name[node_name].take(pod)
        result.bindings.append((pod, node_name))
    for pod in waiting:
        if all(pod is not placed_pod for placed_pod, _ in placed):
            _, why = place(pod, [state.copy() for state in states])
            result.unschedulable.append((pod, why))


def group_status(members: list[Object], min_member: int) -> Object:
    """A PodGroup's status from its pods, as the scheduler-plugins PodGroup controller phrases it."""
    phases = collections.Counter(pod.get("status", {}).get("phase") for pod in members)
    scheduled = sum(1 for pod in members if pod.get("spec", {}).get("nodeName"))
    running, succeeded, failed = phases["Running"], phases["Succeeded"], phases["Failed"]
    if len(members) < min_member:
        phase = "Pending"
    elif succeeded >= min_member:
        phase = "Finished"
    elif failed and failed + running + succeeded >= min_member:
        phase = "Failed"
    elif running + succeeded >= min_member:
        phase = "Running"
    elif scheduled >= min_member:
        phase = "Scheduled"
    elif scheduled:
        phase = "Scheduling"
    else:
        phase = "PreScheduling"
    return {"phase": phase, "scheduled": scheduled, "running": running, "succeeded": succeeded, "failed": failed}
