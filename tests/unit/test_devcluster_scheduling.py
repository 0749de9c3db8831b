"""The dev cluster's scheduler decides as kube-scheduler does: same filters, same order, same words.

`scheduling.plan` is pure (pods, nodes and pod groups in; bindings and
FailedScheduling messages out), so every rule is a row of a table here: resource
requests (containers summed, init containers maxed, overhead, limits defaulting
requests), taints and tolerations, node affinity, the filter order and the
`0/3 nodes are available: …` histogram, priority order, capacity consumed within
one pass, and all-or-nothing pod groups. The nodes the scheduler sees come from
the dev cluster's config (`config.load`) through `nodes.node_object`, tested last.
"""

from __future__ import annotations

import dataclasses
import pathlib
from fractions import Fraction
from typing import Any

import pytest

from kiln import quantity
from kiln.devcluster import config, nodes, scheduling

Object = dict[str, Any]
GI = 2**30
GPU = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU, "effect": "NoSchedule"}
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
COSCHEDULING = scheduling.COSCHEDULING_PODGROUPS


def container(requests: dict[str, str] | None = None, limits: dict[str, str] | None = None) -> Object:
    resources: Object = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": "main", "image": "registry.example/app:1", "resources": resources}


def pod(
    name: str = "p",
    *,
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    created: str = "2024-05-01T10:00:00Z",
    node: str | None = None,
    phase: str | None = None,
    group: str | None = None,
    **spec: Any,
) -> Object:
    """A pod with one container; `spec` adds pod spec fields (tolerations, nodeSelector, priority …)."""
    metadata: Object = {"name": name, "namespace": "default", "uid": f"uid-{name}", "creationTimestamp": created}
    if group is not None:
        metadata["labels"] = {scheduling.COSCHEDULING_LABEL: group}
    body: Object = {
        "metadata": metadata,
        "spec": {"schedulerName": "default-scheduler", "containers": [container(requests, limits)], **spec},
        "status": {"phase": phase or ("Running" if node else "Pending")},
    }
    if node is not None:
        body["spec"]["nodeName"] = node
    return body


def node(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "16Gi",
    pods: str = "110",
    gpus: str | None = None,
    labels: dict[str, str] | None = None,
    taints: list[Object] | None = None,
    unschedulable: bool = False,
) -> Object:
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods}
    if gpus is not None:
        allocatable[GPU] = gpus
    spec: Object = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {"capacity": dict(allocatable), "allocatable": allocatable},
    }


def state(raw: Object) -> scheduling.NodeState:
    return scheduling.NodeState.of(raw)


def bound(result: scheduling.Plan) -> dict[str, str]:
    return {p["metadata"]["name"]: node_name for p, node_name in result.bindings}


def refused(result: scheduling.Plan) -> dict[str, str]:
    return {p["metadata"]["name"]: message for p, message in result.unschedulable}


# Quantities


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("500m", Fraction(1, 2), id="millicores"),
        pytest.param("2", Fraction(2), id="whole-cores"),
        pytest.param("1.5", Fraction(3, 2), id="decimal"),
        pytest.param("2Gi", Fraction(2 * GI), id="binary-suffix"),
        pytest.param("128Mi", Fraction(128 * 2**20), id="mebibytes"),
        pytest.param("100M", Fraction(10**8), id="decimal-suffix"),
        pytest.param("1k", Fraction(1000), id="kilo"),
        pytest.param("1e3", Fraction(1000), id="exponent"),
        pytest.param("1E", Fraction(10**18), id="exa-not-exponent"),
        pytest.param("250u", Fraction(1, 4000), id="micro"),
        pytest.param(".5", Fraction(1, 2), id="leading-dot"),
        pytest.param(3, Fraction(3), id="int"),
    ],
)
def test_quantity_parses_kubernetes_notation_exactly(text: str | int, value: Fraction) -> None:
    assert quantity.parse(text) == value


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("lots", id="word"),
        pytest.param("1.2.3", id="two-dots"),
        pytest.param("5 Gi", id="inner-space"),
        pytest.param("1K", id="upper-case-kilo"),
        pytest.param("Gi", id="suffix-only"),
        pytest.param("1e", id="exponent-without-digits"),
    ],
)
def test_malformed_quantity_is_a_value_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="quantities must match") as raised:
        quantity.parse(text)
    assert repr(text) in str(raised.value)


# What a pod asks of a node


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"containers": [{"name": "a"}]}, {"pods": 1}, id="no-resources-is-one-pod"),
        pytest.param(
            {
                "containers": [
                    container({"cpu": "500m", "memory": "1Gi"}),
                    container({"cpu": "250m", "memory": "1Gi"}),
                ]
            },
            {"cpu": Fraction(3, 4), "memory": 2 * GI, "pods": 1},
            id="containers-are-summed",
        ),
        pytest.param(
            {"containers": [container({"cpu": "1"})], "initContainers": [container({"cpu": "2"})]},
            {"cpu": 2, "pods": 1},
            id="larger-init-container-wins",
        ),
        pytest.param(
            {
                "containers": [container({"cpu": "500m"}), container({"cpu": "500m"})],
                "initContainers": [container({"cpu": "1"}), container({"cpu": "1500m"})],
            },
            {"cpu": Fraction(3, 2), "pods": 1},
            id="init-containers-are-maxed-not-summed",
        ),
        pytest.param(
            {"containers": [container({"cpu": "2"})], "initContainers": [container({"cpu": "1", "memory": "1Gi"})]},
            {"cpu": 2, "memory": GI, "pods": 1},
            id="init-container-resource-the-app-does-not-ask-for",
        ),
        # native sidecars (init containers with restartPolicy Always, on by default since 1.29) run beside
        # the app containers, so kube-scheduler adds their requests to the containers' sum
        pytest.param(
            {
                "containers": [container({"cpu": "1"})],
                "initContainers": [{**container({"cpu": "500m"}), "restartPolicy": "Always"}],
            },
            {"cpu": Fraction(3, 2), "pods": 1},
            id="sidecar-init-container-adds-up",
        ),
        pytest.param(
            {"containers": [container({"cpu": "1"})], "overhead": {"cpu": "250m", "memory": "120Mi"}},
            {"cpu": Fraction(5, 4), "memory": 120 * 2**20, "pods": 1},
            id="overhead-is-added",
        ),
        pytest.param(
            {"containers": [container({"cpu": "1"}, {"cpu": "2", "memory": "4Gi", GPU: "2"})]},
            {"cpu": 1, "memory": 4 * GI, GPU: 2, "pods": 1},
            id="limits-default-missing-requests",
        ),
    ],
)
def test_pod_requests(spec: Object, expected: dict[str, int | Fraction]) -> None:
    assert scheduling.pod_requests({"metadata": {"name": "p"}, "spec": spec}) == expected


def test_node_state_offers_allocatable_and_carries_labels_taints_and_cordon() -> None:
    raw = node("n1", cpu="8", memory="32Gi", gpus="4", labels={"zone": "a"}, taints=[GPU_TAINT], unschedulable=True)
    raw["status"]["capacity"]["cpu"] = "9"  # allocatable, not capacity, is what pods can have

    seen = state(raw)

    assert seen.name == "n1"
    assert seen.allocatable == {"cpu": 8, "memory": 32 * GI, "pods": 110, GPU: 4}
    assert seen.labels == {"kubernetes.io/hostname": "n1", "zone": "a"}
    assert seen.taints == [GPU_TAINT]
    assert seen.unschedulable
    assert seen.requested == {}


def test_node_state_falls_back_to_capacity_without_allocatable() -> None:
    raw = node("n1", cpu="2")
    del raw["status"]["allocatable"]
    assert state(raw).allocatable["cpu"] == 2


# Taints and tolerations


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        pytest.param(
            {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
            {"key": "team", "value": "ml", "effect": "NoSchedule"},
            True,
            id="equal-same-value",
        ),
        pytest.param(
            {"key": "team", "operator": "Equal", "value": "web"},
            {"key": "team", "value": "ml", "effect": "NoSchedule"},
            False,
            id="equal-other-value",
        ),
        pytest.param(
            {"key": "team", "value": "ml"},
            {"key": "team", "value": "ml", "effect": "NoExecute"},
            True,
            id="operator-defaults-to-equal",
        ),
        pytest.param(
            {"key": GPU, "operator": "Equal"},
            {"key": GPU, "effect": "NoSchedule"},
            True,
            id="equal-both-values-empty",
        ),
        pytest.param(
            {"key": "team", "operator": "Exists"},
            {"key": "team", "value": "anything", "effect": "NoSchedule"},
            True,
            id="exists-ignores-value",
        ),
        pytest.param(
            {"key": "team", "operator": "Exists"},
            {"key": "other", "effect": "NoSchedule"},
            False,
            id="exists-other-key",
        ),
        pytest.param({"operator": "Exists"}, {"key": "any", "effect": "NoExecute"}, True, id="empty-key-exists-all"),
        pytest.param(
            {"operator": "Exists", "effect": "NoSchedule"},
            {"key": "any", "effect": "NoExecute"},
            False,
            id="empty-key-exists-limited-to-its-effect",
        ),
        pytest.param(
            {"key": "", "operator": "Equal"},
            {"key": "any", "effect": "NoSchedule"},
            False,
            id="empty-key-equal-tolerates-nothing",
        ),
        pytest.param(
            {"key": GPU, "operator": "Exists", "effect": "NoExecute"},
            GPU_TAINT,
            False,
            id="effect-must-match",
        ),
        pytest.param({"key": GPU, "operator": "Exists"}, GPU_TAINT, True, id="empty-effect-matches-every-effect"),
    ],
)
def test_tolerates(toleration: Object, taint: Object, expected: bool) -> None:
    assert scheduling.tolerates(toleration, taint) is expected


@pytest.mark.parametrize(
    ("taints", "tolerations", "expected"),
    [
        pytest.param([], [], None, id="no-taints"),
        pytest.param([GPU_TAINT], [], GPU_TAINT, id="no-schedule-counts"),
        pytest.param(
            [{"key": "maintenance", "effect": "NoExecute"}],
            [],
            {"key": "maintenance", "effect": "NoExecute"},
            id="no-execute-counts",
        ),
        pytest.param([{"key": "spot", "effect": "PreferNoSchedule"}], [], None, id="prefer-no-schedule-does-not"),
        pytest.param([GPU_TAINT], [GPU_TOLERATION], None, id="tolerated"),
        pytest.param(
            [GPU_TAINT, {"key": "team", "value": "ml", "effect": "NoSchedule"}],
            [GPU_TOLERATION],
            {"key": "team", "value": "ml", "effect": "NoSchedule"},
            id="the-first-untolerated-one",
        ),
    ],
)
def test_untolerated_taint(taints: list[Object], tolerations: list[Object], expected: Object | None) -> None:
    assert scheduling.untolerated_taint(pod(tolerations=tolerations), state(node("n1", taints=taints))) == expected


# Node affinity


def required(*terms: Object) -> Object:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def expression(key: str, operator: str, *values: str) -> Object:
    found: Object = {"key": key, "operator": operator}
    if values:
        found["values"] = list(values)
    return found


GPU_NODE_LABELS = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8", "zone": "a"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, True, id="no-constraints"),
        pytest.param({"nodeSelector": {"zone": "a"}}, True, id="node-selector-matches"),
        pytest.param({"nodeSelector": {"zone": "b"}}, False, id="node-selector-other-value"),
        pytest.param({"nodeSelector": {"disk": "ssd"}}, False, id="node-selector-missing-label"),
        pytest.param({"affinity": required({"matchExpressions": [expression("zone", "In", "a", "b")]})}, True, id="in"),
        pytest.param(
            {"affinity": required({"matchExpressions": [expression("zone", "In", "b")]})}, False, id="in-not-listed"
        ),
        pytest.param(
            {"affinity": required({"matchExpressions": [expression("zone", "NotIn", "b")]})}, True, id="notin"
        ),
        pytest.param(
            {"affinity": required({"matchExpressions": [expression("disk", "NotIn", "hdd")]})},
            True,
            id="notin-missing-label",
        ),
        pytest.param(
            {"affinity": required({"matchExpressions": [expression("nvidia.com/gpu.product", "Exists")]})},
            True,
            id="exists",
        ),
        pytest.param(
            {"affinity": required({"matchExpressions": [expression("zone", "DoesNotExist")]})},
            False,
            id="does-not-exist",
        ),
        pytest.param(
            {"affinity": required({"matchExpressions": [expression("nvidia.com/gpu.count", "Gt", "4")]})},
            True,
            id="gt",
        ),
        pytest.param(
            {"affinity": required({"matchExpressions": [expression("nvidia.com/gpu.count", "Lt", "8")]})},
            False,
            id="lt-is-strict",
        ),
        pytest.param(
            {"affinity": required({"matchExpressions": [expression("zone", "Gt", "1")]})},
            False,
            id="gt-on-non-integer-label",
        ),
        pytest.param(
            {"affinity": required({"matchExpressions": [expression("memory", "Gt", "1")]})},
            False,
            id="gt-on-missing-label",
        ),
        pytest.param(
            {"affinity": required({"matchExpressions": [expression("zone", "In", "a"), expression("disk", "Exists")]})},
            False,
            id="expressions-of-a-term-are-anded",
        ),
        pytest.param(
            {
                "affinity": required(
                    {"matchExpressions": [expression("zone", "In", "b")]},
                    {"matchExpressions": [expression("zone", "In", "a")]},
                )
            },
            True,
            id="terms-are-ored",
        ),
        pytest.param(
            {"affinity": required({"matchFields": [expression("metadata.name", "In", "gpu-1")]})},
            True,
            id="match-fields-node-name",
        ),
        pytest.param(
            {"affinity": required({"matchFields": [expression("metadata.name", "In", "gpu-2")]})},
            False,
            id="match-fields-other-node",
        ),
        pytest.param(
            {
                "affinity": required(
                    {
                        "matchExpressions": [expression("zone", "In", "a")],
                        "matchFields": [expression("metadata.name", "NotIn", "gpu-1")],
                    }
                )
            },
            False,
            id="fields-and-labels-anded",
        ),
        pytest.param({"affinity": required({})}, False, id="empty-term-matches-nothing"),
        pytest.param(
            {
                "nodeSelector": {"zone": "b"},
                "affinity": required({"matchExpressions": [expression("zone", "In", "a")]}),
            },
            False,
            id="selector-and-affinity-both-apply",
        ),
    ],
)
def test_matches_node_affinity(spec: Object, expected: bool) -> None:
    gpu_node = state(node("gpu-1", labels=GPU_NODE_LABELS))
    assert scheduling.matches_node_affinity(pod(**spec), gpu_node) is expected


# Filters, in kube-scheduler's order: NodeUnschedulable, TaintToleration, NodeAffinity, NodeResourcesFit


UNSCHEDULABLE = "node(s) were unschedulable"
AFFINITY = "node(s) didn't match Pod's node affinity/selector"
GPU_TAINTED = "node(s) had untolerated taint {nvidia.com/gpu: }"


@pytest.mark.parametrize(
    ("the_pod", "the_node", "reasons"),
    [
        pytest.param(pod(requests={"cpu": "1"}), node("n1"), [], id="fits"),
        pytest.param(pod(), node("n1", unschedulable=True), [UNSCHEDULABLE], id="cordoned"),
        pytest.param(
            pod(tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]),
            node("n1", unschedulable=True),
            [],
            id="cordon-tolerated",
        ),
        pytest.param(
            pod(requests={"cpu": "64"}, nodeSelector={"zone": "z"}),
            node("n1", unschedulable=True, taints=[GPU_TAINT]),
            [UNSCHEDULABLE],
            id="unschedulable-before-taints",
        ),
        pytest.param(pod(), node("n1", taints=[GPU_TAINT]), [GPU_TAINTED], id="taint"),
        pytest.param(
            pod(),
            node("n1", taints=[{"key": "dedicated", "value": "ml", "effect": "NoExecute"}]),
            ["node(s) had untolerated taint {dedicated: ml}"],
            id="taint-with-value",
        ),
        pytest.param(
            pod(requests={"cpu": "64"}, nodeSelector={"zone": "z"}),
            node("n1", taints=[GPU_TAINT]),
            [GPU_TAINTED],
            id="taints-before-affinity",
        ),
        pytest.param(
            pod(requests={"cpu": "64"}, nodeSelector={"zone": "z"}), node("n1"), [AFFINITY], id="affinity-before-fit"
        ),
        pytest.param(
            pod(requests={"cpu": "5", "memory": "17Gi"}),
            node("n1"),
            ["Insufficient cpu", "Insufficient memory"],
            id="every-short-resource",
        ),
        pytest.param(pod(limits={GPU: "1"}), node("n1"), ["Insufficient nvidia.com/gpu"], id="resource-node-lacks"),
        pytest.param(pod(), node("n1", pods="0"), ["Too many pods"], id="pod-count"),
        pytest.param(pod(requests={"cpu": "4", "memory": "16Gi"}), node("n1"), [], id="exactly-full-fits"),
    ],
)
def test_filter_reasons(the_pod: Object, the_node: Object, reasons: list[str]) -> None:
    requests = scheduling.pod_requests(the_pod)
    assert sorted(scheduling.filter_reasons(the_pod, requests, state(the_node))) == reasons


def test_filter_reasons_count_what_the_node_already_runs() -> None:
    busy = dataclasses.replace(state(node("n1", cpu="2")), requested={"cpu": Fraction(3, 2), "pods": Fraction(1)})
    wanting = pod(requests={"cpu": "1"})
    assert scheduling.filter_reasons(wanting, scheduling.pod_requests(wanting), busy) == ["Insufficient cpu"]


@pytest.mark.parametrize(
    ("node_count", "reasons_by_node", "message"),
    [
        pytest.param(
            3,
            [["Insufficient cpu"], [GPU_TAINTED], [GPU_TAINTED]],
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {nvidia.com/gpu: }.",
            id="kube-scheduler-example",
        ),
        pytest.param(
            12,
            [["Insufficient cpu"]] * 2 + [["Insufficient memory"]] * 10,
            "0/12 nodes are available: 10 Insufficient memory, 2 Insufficient cpu.",
            id="sorted-as-strings-not-numbers",
        ),
        pytest.param(
            2,
            [["Insufficient cpu", "Insufficient memory"], ["Insufficient cpu"]],
            "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu.",
            id="one-node-several-reasons",
        ),
        pytest.param(
            3,
            [["Too many pods"]] * 3,
            "0/3 nodes are available: 3 Too many pods.",
            id="same-reason-everywhere",
        ),
        pytest.param(0, [], "no nodes available to schedule pods", id="no-nodes"),
    ],
)
def test_failure_message(node_count: int, reasons_by_node: list[list[str]], message: str) -> None:
    assert scheduling.failure_message(node_count, reasons_by_node) == message


# Planning a pass


def test_plan_binds_a_gpu_pod_to_the_tainted_gpu_node_it_tolerates() -> None:
    nodes_ = [node("cpu-1"), node("gpu-1", gpus="8", taints=[GPU_TAINT])]
    trainer = pod("trainer", limits={GPU: "1"}, tolerations=[GPU_TOLERATION])
    web = pod("web", requests={"cpu": "1"})

    result = scheduling.plan([trainer, web], nodes_, {})

    assert bound(result) == {"trainer": "gpu-1", "web": "cpu-1"}
    assert result.unschedulable == []


def test_plan_explains_why_nothing_fits_in_kube_scheduler_words() -> None:
    nodes_ = [node("cpu-1", cpu="1"), node("gpu-1", gpus="8", taints=[GPU_TAINT]), node("gpu-2", taints=[GPU_TAINT])]

    result = scheduling.plan([pod("big", requests={"cpu": "2"})], nodes_, {})

    assert refused(result) == {
        "big": "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {nvidia.com/gpu: }."
    }


def test_plan_with_no_nodes() -> None:
    assert refused(scheduling.plan([pod("p")], [], {})) == {"p": "no nodes available to schedule pods"}


def test_plan_spreads_over_the_least_allocated_nodes() -> None:
    pods = [pod(f"p{i}", requests={"cpu": "1"}, created=f"2024-05-01T10:00:0{i}Z") for i in range(4)]
    result = scheduling.plan(pods, [node("n1"), node("n2")], {})
    assert sorted(bound(result).values()) == ["n1", "n1", "n2", "n2"]


@pytest.mark.parametrize(
    ("pods", "classes", "winner"),
    [
        pytest.param(
            [
                pod("old-low", requests={"cpu": "1"}, created="2024-05-01T10:00:00Z"),
                pod("new-high", requests={"cpu": "1"}, created="2024-05-01T11:00:00Z", priority=1000),
            ],
            {},
            "new-high",
            id="higher-priority-first",
        ),
        pytest.param(
            [
                pod("old-low", requests={"cpu": "1"}, created="2024-05-01T10:00:00Z"),
                pod("new-high", requests={"cpu": "1"}, created="2024-05-01T11:00:00Z", priorityClassName="urgent"),
            ],
            {"urgent": 1000},
            "new-high",
            id="priority-from-its-class",
        ),
        pytest.param(
            [
                pod("new", requests={"cpu": "1"}, created="2024-05-01T11:00:00Z"),
                pod("old", requests={"cpu": "1"}, created="2024-05-01T10:00:00Z"),
            ],
            {},
            "old",
            id="then-oldest-first",
        ),
    ],
)
def test_plan_order(pods: list[Object], classes: dict[str, int], winner: str) -> None:
    result = scheduling.plan(pods, [node("n1", cpu="1")], {}, classes)

    assert bound(result) == {winner: "n1"}
    (loser,) = {p["metadata"]["name"] for p in pods} - {winner}
    assert refused(result) == {loser: "0/1 nodes are available: 1 Insufficient cpu."}


def test_plan_counts_capacity_taken_earlier_in_the_same_pass() -> None:
    pods = [pod(f"p{i}", requests={"cpu": "1"}, created=f"2024-05-01T10:00:0{i}Z") for i in range(3)]

    result = scheduling.plan(pods, [node("n1", cpu="2")], {})

    assert bound(result) == {"p0": "n1", "p1": "n1"}
    assert refused(result) == {"p2": "0/1 nodes are available: 1 Insufficient cpu."}


@pytest.mark.parametrize(
    ("running", "fits"),
    [
        pytest.param(pod("busy", requests={"cpu": "2"}, node="n1"), False, id="bound-pod-counts"),
        pytest.param(pod("busy", requests={"cpu": "2"}, node="n1", phase="Pending"), False, id="bound-pending-counts"),
        pytest.param(pod("done", requests={"cpu": "2"}, node="n1", phase="Succeeded"), True, id="succeeded-does-not"),
        pytest.param(pod("crashed", requests={"cpu": "2"}, node="n1", phase="Failed"), True, id="failed-does-not"),
        pytest.param(pod("elsewhere", requests={"cpu": "2"}, node="gone"), True, id="pod-of-unknown-node"),
    ],
)
def test_plan_counts_what_bound_pods_hold(running: Object, fits: bool) -> None:
    result = scheduling.plan([running, pod("new", requests={"cpu": "1"})], [node("n1", cpu="2")], {})
    assert bound(result) == ({"new": "n1"} if fits else {})


def test_plan_refuses_a_pod_beyond_the_node_pod_count() -> None:
    pods = [pod("a", node="n1"), pod("b", node="n1"), pod("c")]
    assert refused(scheduling.plan(pods, [node("n1", pods="2")], {})) == {
        "c": "0/1 nodes are available: 1 Too many pods."
    }


@pytest.mark.parametrize(
    "ignored",
    [
        pytest.param(pod("other", schedulerName="my-scheduler"), id="other-scheduler"),
        pytest.param(pod("gated", schedulingGates=[{"name": "example.com/wait"}]), id="scheduling-gate"),
        pytest.param(pod("bound", node="n1"), id="already-bound"),
        pytest.param(pod("done", phase="Succeeded"), id="terminal"),
    ],
)
def test_plan_leaves_pods_that_are_not_its_to_place(ignored: Object) -> None:
    result = scheduling.plan([ignored], [node("n1")], {})
    assert result.bindings == []
    assert result.unschedulable == []


def test_plan_leaves_a_deleted_pending_pod() -> None:
    deleted = pod("deleted")
    deleted["metadata"]["deletionTimestamp"] = "2024-05-01T10:00:00Z"
    assert scheduling.plan([deleted], [node("n1")], {}) == scheduling.Plan()


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        pytest.param(set(), {"p": '0/2 nodes are available: persistentvolumeclaim "data" not found.'}, id="missing"),
        pytest.param(
            {("other", "data")},
            {"p": '0/2 nodes are available: persistentvolumeclaim "data" not found.'},
            id="in-another-namespace",
        ),
        pytest.param({("default", "data")}, {}, id="present"),
    ],
)
def test_plan_needs_the_pods_claims(claims: set[tuple[str, str]], expected: dict[str, str]) -> None:
    with_claim = pod("p", volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}])
    result = scheduling.plan([with_claim], [node("n1"), node("n2")], {}, claims=claims)
    assert refused(result) == expected
    assert len(result.bindings) == 1 - len(expected)


# Pod groups: all of minMember or none


def gang(group: str, count: int, *, gpus: str = "1", start: int = 0) -> list[Object]:
    return [
        pod(
            f"{group}-{i}",
            group=group,
            limits={GPU: gpus},
            created=f"2024-05-01T10:00:{i:02d}Z",
            schedulerName="scheduler-plugins-scheduler",
        )
        for i in range(start, start + count)
    ]


def group_ref(name: str) -> scheduling.GroupRef:
    return scheduling.GroupRef(COSCHEDULING, "default", name)


GPU_NODES = [node("gpu-1", gpus="2"), node("gpu-2", gpus="2")]


def test_group_of_reads_the_coscheduling_label_and_the_volcano_annotation() -> None:
    volcano = pod("v", schedulerName="volcano")
    volcano["metadata"]["annotations"] = {scheduling.VOLCANO_ANNOTATION: "team"}
    not_volcano = pod("d")
    not_volcano["metadata"]["annotations"] = {scheduling.VOLCANO_ANNOTATION: "team"}

    assert scheduling.group_of(pod("c", group="g")) == group_ref("g")
    assert scheduling.group_of(volcano) == scheduling.GroupRef(scheduling.VOLCANO_PODGROUPS, "default", "team")
    assert scheduling.group_of(not_volcano) is None
    assert scheduling.group_of(pod("plain")) is None


def test_a_gang_that_fits_binds_together() -> None:
    result = scheduling.plan(gang("g", 4), GPU_NODES, {group_ref("g"): 4})
    assert sorted(bound(result).values()) == ["gpu-1", "gpu-1", "gpu-2", "gpu-2"]
    assert result.unschedulable == []


def test_a_gang_that_does_not_fit_binds_nothing_and_holds_nothing() -> None:
    late_single = pod("single", limits={GPU: "1"}, created="2024-05-01T11:00:00Z")

    result = scheduling.plan([*gang("g", 5), late_single], GPU_NODES, {group_ref("g"): 5})

    assert bound(result) == {"single": "gpu-1"}  # the failed gang's trial placement reserved nothing
    messages = refused(result)
    assert sorted(messages) == [f"g-{i}" for i in range(5)]
    assert set(messages.values()) == {
        'pod group "g" needs 5 pods placed together, only 4 fit: '
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    }


def test_a_gang_larger_than_min_member_binds_what_fits() -> None:
    result = scheduling.plan(gang("g", 5), GPU_NODES, {group_ref("g"): 3})
    assert len(result.bindings) == 4
    assert refused(result) == {"g-4": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}


def test_a_gang_without_its_pod_group_waits() -> None:
    result = scheduling.plan(gang("g", 2), GPU_NODES, {})
    assert result.bindings == []
    assert set(refused(result).values()) == {'0/2 nodes are available: pod group "g" not found.'}


def test_a_gang_with_fewer_pods_than_min_member_waits() -> None:
    result = scheduling.plan(gang("g", 2), GPU_NODES, {group_ref("g"): 3})
    assert result.bindings == []
    assert set(refused(result).values()) == {'0/2 nodes are available: pod group "g" has 2 of its minMember 3 pods.'}


def test_a_partly_bound_gang_binds_the_rest() -> None:
    members = gang("g", 3)
    members[0]["spec"]["nodeName"] = "gpu-1"
    members[1]["spec"]["nodeName"] = "gpu-1"

    result = scheduling.plan(members, GPU_NODES, {group_ref("g"): 3})

    assert bound(result) == {"g-2": "gpu-2"}


def test_a_partly_bound_gang_still_needs_min_member_placed() -> None:
    members = gang("g", 4)
    members[0]["spec"]["nodeName"] = "gpu-1"
    blocker = pod("blocker", limits={GPU: "2"}, node="gpu-2")

    result = scheduling.plan([*members, blocker], GPU_NODES, {group_ref("g"): 4})

    assert result.bindings == []  # 1 bound + 1 more fits on gpu-1: 2 of 4
    assert sorted(refused(result)) == ["g-1", "g-2", "g-3"]


def test_a_gang_member_held_by_a_scheduling_gate_does_not_count_as_placed() -> None:
    """Coscheduling's Permit counts members assigned to nodes: a gated pod is neither bound nor placeable."""
    gated, ready = gang("g", 2)
    gated["spec"]["schedulingGates"] = [{"name": "example.com/wait"}]

    result = scheduling.plan([gated, ready], GPU_NODES, {group_ref("g"): 2})

    assert bound(result) == {}


def test_two_gangs_are_judged_apart() -> None:
    result = scheduling.plan([*gang("a", 2), *gang("b", 3, start=2)], GPU_NODES, {group_ref("a"): 2, group_ref("b"): 3})
    assert sorted(bound(result)) == ["a-0", "a-1"]
    assert sorted(refused(result)) == ["b-2", "b-3", "b-4"]


def member(phase: str, node_name: str | None = "gpu-1") -> Object:
    return pod("m", node=node_name, phase=phase)


@pytest.mark.parametrize(
    ("members", "min_member", "phase"),
    [
        pytest.param([member("Pending", None)] * 2, 3, "Pending", id="too-few-members"),
        pytest.param([member("Pending", None)] * 3, 3, "PreScheduling", id="unscheduled"),
        pytest.param([member("Pending")] * 2 + [member("Pending", None)], 3, "Scheduling", id="partly-scheduled"),
        pytest.param([member("Pending")] * 3, 3, "Scheduled", id="scheduled"),
        pytest.param([member("Running")] * 3, 3, "Running", id="running"),
        pytest.param([member("Running")] * 2 + [member("Succeeded")], 3, "Running", id="running-and-succeeded"),
        pytest.param([member("Succeeded")] * 3, 3, "Finished", id="finished"),
        pytest.param([member("Failed")] + [member("Running")] * 2, 3, "Failed", id="failed"),
        pytest.param([member("Failed")] + [member("Running")] * 2, 2, "Failed", id="failed-despite-min-running"),
    ],
)
def test_group_status(members: list[Object], min_member: int, phase: str) -> None:
    """Phases as scheduler-plugins' PodGroup controller sets them: Running counts running+succeeded
    against minMember; any failure with failed+running+succeeded >= minMember is Failed; Finished wins."""
    assert scheduling.group_status(members, min_member)["phase"] == phase


def test_group_status_counts() -> None:
    members = [member("Running"), member("Succeeded"), member("Failed"), member("Pending", None)]
    assert scheduling.group_status(members, 10) == {
        "phase": "Pending",
        "scheduled": 3,
        "running": 1,
        "succeeded": 1,
        "failed": 1,
    }


# The nodes a config makes


def test_config_defaults() -> None:
    settings = config.load(None)
    assert settings.node_pools == (config.NodePool(),)
    (pool,) = settings.node_pools
    assert (pool.name, pool.count, pool.cpu, pool.memory, pool.pods, pool.gpus) == ("node", 1, "8", "32Gi", 110, 0)
    assert settings.local_images == ()
    assert settings.simulated_job_duration == 1.0
    assert (settings.crash_loop_back_off.initial_seconds, settings.crash_loop_back_off.max_seconds) == (1.0, 60.0)
    assert settings.prometheus is False


MIXED_POOLS = """\
apiVersion: kiln.dev/v1alpha1
kind: DevCluster
nodePools:
  - name: cpu
    count: 2
    cpu: "16"
    memory: 64Gi
  - name: gpu
    count: 2
    cpu: "96"
    memory: 1Ti
    gpus: 8
    gpuProduct: NVIDIA-H100-80GB-HBM3
    taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
localImages: [registry.example.com/team/trainer]
simulatedJobDuration: 2
crashLoopBackOff: {initialSeconds: 1, maxSeconds: 60}
"""


def test_config_from_a_yaml_file_with_pools(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(MIXED_POOLS)

    settings = config.load(path)

    cpu, gpu = settings.node_pools
    assert (cpu.name, cpu.count, cpu.cpu, cpu.memory, cpu.gpus) == ("cpu", 2, "16", "64Gi", 0)
    assert (gpu.name, gpu.gpus, gpu.gpu_product) == ("gpu", 8, "NVIDIA-H100-80GB-HBM3")
    assert gpu.taints == (config.Taint(key=GPU, effect="NoSchedule"),)
    assert settings.local_images == ("registry.example.com/team/trainer",)
    assert settings.simulated_job_duration == 2


def test_config_flags_override_the_file_and_unset_flags_do_not(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(MIXED_POOLS)

    settings = config.load(path, {"simulatedJobDuration": 5, "prometheus": None})

    assert settings.simulated_job_duration == 5
    assert settings.prometheus is False
    assert len(settings.node_pools) == 2


@pytest.mark.parametrize(
    ("document", "field"),
    [
        pytest.param({"nodePools": [{"cpu": "lots"}]}, "nodePools.0.cpu", id="cpu-not-a-quantity"),
        pytest.param({"nodePools": [{"memory": "1 GB"}]}, "nodePools.0.memory", id="memory-not-a-quantity"),
        pytest.param({"nodePools": [{"count": -1}]}, "nodePools.0.count", id="negative-count"),
        pytest.param({"nodePools": [{"name": "GPU_Pool"}]}, "nodePools.0.name", id="name-not-a-dns-label"),
        pytest.param({"nodePools": [{}, {"pods": 0}]}, "nodePools.1.pods", id="second-pool"),
        pytest.param({"nodePools": [{"colour": "red"}]}, "nodePools.0.colour", id="unknown-field"),
        pytest.param(
            {"nodePools": [{"taints": [{"key": "k", "effect": "Evict"}]}]},
            "nodePools.0.taints.0.effect",
            id="taint-effect",
        ),
        pytest.param({"simulatedJobDuration": -1}, "simulatedJobDuration", id="negative-duration"),
        pytest.param({"crashLoopBackOff": {"maxSeconds": 0}}, "crashLoopBackOff.maxSeconds", id="nested"),
    ],
)
def test_a_bad_config_field_is_named(document: Object, field: str) -> None:
    with pytest.raises(config.ConfigError, match=r"^invalid dev cluster config: ") as raised:
        config.load(None, document)
    assert f"{field}: " in str(raised.value)


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(config.ConfigError, match="must be a mapping"):
        config.load(path)


@pytest.mark.parametrize(
    ("product", "mib"),
    [
        pytest.param("NVIDIA-H100-80GB-HBM3", 80 * 1024, id="h100"),
        pytest.param("NVIDIA-A100-SXM4-40GB", 40 * 1024, id="a100"),
        pytest.param("Tesla-T4", None, id="no-size-in-name"),
        pytest.param("", None, id="empty"),
    ],
)
def test_gpu_memory_mib(product: str, mib: int | None) -> None:
    assert config.gpu_memory_mib(product) == mib


def pool(**fields: Any) -> config.NodePool:
    return config.load(None, {"nodePools": [fields]}).node_pools[0]


def test_gpu_node_object() -> None:
    gpu_pool = pool(
        name="gpu",
        cpu="96",
        memory="1Ti",
        gpus=8,
        gpuProduct="NVIDIA-H100-80GB-HBM3",
        taints=[{"key": GPU, "effect": "NoSchedule"}],
        labels={"team": "ml"},
    )

    raw = nodes.node_object(gpu_pool, "gpu-1")

    assert raw["metadata"]["name"] == "gpu-1"
    status = raw["status"]
    assert status["capacity"] == {"cpu": "96", "memory": "1Ti", "pods": "110", "ephemeral-storage": "100Gi", GPU: "8"}
    assert status["allocatable"] == status["capacity"]
    assert raw["spec"]["taints"] == [{"key": GPU, "value": "", "effect": "NoSchedule"}]
    labels = raw["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "gpu-1"
    assert labels["node.kubernetes.io/instance-type"] == "kiln-96cpu-1ti-8gpu"
    assert labels["kiln.dev/node-pool"] == "gpu"
    assert labels["nvidia.com/gpu.present"] == "true"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.memory"] == "81920"
    assert labels["team"] == "ml"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")


def test_cpu_node_object_has_no_gpu_labels_or_taints() -> None:
    raw = nodes.node_object(pool(name="cpu", cpu="16", memory="64Gi", pods=30), "cpu-1")

    assert raw["spec"] == {}
    assert GPU not in raw["status"]["capacity"]
    assert raw["status"]["capacity"]["pods"] == "30"
    assert not [label for label in raw["metadata"]["labels"] if label.startswith("nvidia.com/")]
    assert raw["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "kiln-16cpu-64gi"


def test_an_explicit_instance_type_is_kept() -> None:
    raw = nodes.node_object(pool(instanceType="p5.48xlarge", gpus=8), "n")
    assert raw["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "p5.48xlarge"


def test_pool_nodes_are_numbered_from_one() -> None:
    names = [raw["metadata"]["name"] for raw in nodes.pool_nodes(pool(name="gpu", count=3))]
    assert names == ["gpu-1", "gpu-2", "gpu-3"]


def test_the_scheduler_places_on_configured_nodes() -> None:
    document = config.load(
        None,
        {
            "nodePools": [
                {"name": "cpu", "count": 1},
                {"name": "gpu", "count": 1, "gpus": 2, "taints": [{"key": GPU, "effect": "NoSchedule"}]},
            ]
        },
    )
    cluster_nodes = [raw for p in document.node_pools for raw in nodes.pool_nodes(p)]
    pods = [
        pod("web", requests={"cpu": "1"}),
        pod("trainer", limits={GPU: "2"}, tolerations=[GPU_TOLERATION], created="2024-05-01T10:00:01Z"),
        pod("greedy", limits={GPU: "1"}, tolerations=[GPU_TOLERATION], created="2024-05-01T10:00:02Z"),
    ]

    result = scheduling.plan(pods, cluster_nodes, {})

    assert bound(result) == {"web": "cpu-1", "trainer": "gpu-1"}
    assert refused(result) == {"greedy": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}
