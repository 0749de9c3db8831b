"""Builtin gang admission against node capacity, and the GangScheduler seam in front of it.

A gang is admitted only when every worker fits what the nodes it may use can still allocate, after
bound pods, admitted gangs still being placed, and the gangs ahead of it in the queue. A gang that
does not fit holds nothing, so two gangs can never half-place and block each other.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
import training_fixtures as fx

from kiln.api import trainingjob
from kiln.providers import gang as gang_providers
from kiln.training import admission, inventory, workers

Object = dict[str, Any]
GPU = fx.GPU
gang = fx.gang
node = fx.node
pod = fx.pod


def cluster(
    nodes: list[Object],
    pods: list[Object] | None = None,
    admitted: list[admission.Gang] | None = None,
    waiting: list[admission.Gang] | None = None,
) -> inventory.Inventory:
    """An inventory of the nodes and pods, with gangs that hold admission (their bound workers are
    the pods labelled with their job) and gangs waiting in the queue."""
    known = inventory.Inventory()
    for one in nodes:
        known.node_seen(one)
    for one in pods or []:
        known.pod_seen(one)
    for held in admitted or []:
        known.gang_seen(held, trainingjob.TrainingJobPhase.RUNNING)
    for queued in waiting or []:
        known.gang_seen(queued, trainingjob.TrainingJobPhase.QUEUED)
    return known


def bound_gang(job: str, node_names: list[str], gpus: int) -> list[Object]:
    """The worker pods of an admitted gang, bound one per node."""
    pods = [
        pod(f"{job}-worker-{rank}", name, requests={GPU: str(gpus)}, limits={GPU: str(gpus)}, namespace=fx.NAMESPACE)
        for rank, name in enumerate(node_names)
    ]
    for one in pods:
        one["metadata"]["labels"] = {workers.JOB_LABEL: job}
    return pods


TWO_4_GPU_NODES = [node("gpu-a", gpus=4, product=fx.A100), node("gpu-b", gpus=4, product=fx.A100)]


# -- what a pod asks for ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        pytest.param(
            pod("p", "n", requests={"cpu": "500m", "memory": "1Gi"}),
            {"cpu": Fraction(1, 2), "memory": Fraction(2**30), "pods": 1},
            id="requests-parsed-exactly",
        ),
        pytest.param(
            pod("p", "n", limits={"cpu": "2", GPU: "1"}),
            {"cpu": 2, GPU: 1, "pods": 1},
            id="limits-stand-in-for-unset-requests",
        ),
        pytest.param(
            pod("p", "n", requests={"cpu": "250m"}, limits={"cpu": "1", "memory": "512Mi"}),
            {"cpu": Fraction(1, 4), "memory": Fraction(512 * 2**20), "pods": 1},
            id="requests-win-over-limits",
        ),
        pytest.param(
            pod("p", "n", requests={"cpu": "1"}, init=[{"cpu": "3"}, {"cpu": "2", "memory": "2Gi"}]),
            {"cpu": 3, "memory": Fraction(2 * 2**30), "pods": 1},
            id="largest-init-container-counts",
        ),
        pytest.param(
            pod("p", "n", requests={"cpu": "4"}, init=[{"cpu": "1"}]),
            {"cpu": 4, "pods": 1},
            id="small-init-container-adds-nothing",
        ),
        pytest.param(pod("p", "n"), {"pods": 1}, id="best-effort-pod-takes-a-pod-slot"),
    ],
)
def test_pod_requests(candidate: Object, expected: dict[str, Fraction]) -> None:
    assert admission.pod_requests(candidate) == expected


def test_containers_requests_add_up() -> None:
    two = pod("p", "n", requests={"cpu": "1"})
    two["spec"]["containers"].append(
        {"name": "sidecar", "image": "envoy:1", "resources": {"requests": {"cpu": "100m"}}}
    )

    assert admission.pod_requests(two)["cpu"] == Fraction(11, 10)


# -- which nodes a worker may use ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "target", "expected"),
    [
        pytest.param(gang("j", gpus=1), node("gpu-a", gpus=4), True, id="gpu-node"),
        pytest.param(gang("j", gpus=1), node("gpu-a", gpus=4, unschedulable=True), False, id="cordoned"),
        pytest.param(gang("j", gpus=1, product=fx.H100), node("gpu-a", gpus=4, product=fx.A100), False, id="product"),
        pytest.param(gang("j", gpus=1, product=fx.H100), node("gpu-h", gpus=8, product=fx.H100), True, id="product-ok"),
        pytest.param(
            gang("j", cpu="1", node_selector={"pool": "batch"}),
            node("cpu-a", labels={"pool": "serving"}),
            False,
            id="node-selector",
        ),
        pytest.param(gang("j", gpus=1), node("gpu-a", gpus=4, taints=[fx.GPU_TAINT]), True, id="gpu-taint-tolerated"),
        pytest.param(
            gang("j", cpu="1"), node("gpu-a", gpus=4, taints=[fx.GPU_TAINT]), False, id="gpu-taint-not-tolerated"
        ),
        pytest.param(gang("j", cpu="1"), node("cp", taints=[fx.CONTROL_PLANE_TAINT]), False, id="control-plane"),
        pytest.param(
            gang("j", cpu="1"),
            node("cp", taints=[{**fx.CONTROL_PLANE_TAINT, "effect": "PreferNoSchedule"}]),
            True,
            id="prefer-no-schedule-does-not-block",
        ),
        pytest.param(
            gang("j", cpu="1", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml"}]),
            node("n", taints=[{"key": "dedicated", "value": "ml", "effect": "NoExecute"}]),
            True,
            id="equal-toleration-without-effect-covers-every-effect",
        ),
        pytest.param(
            gang("j", cpu="1", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "web"}]),
            node("n", taints=[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]),
            False,
            id="equal-toleration-with-another-value",
        ),
        pytest.param(
            gang("j", cpu="1", tolerations=[{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]),
            node("n", taints=[{"key": "dedicated", "value": "ml", "effect": "NoExecute"}]),
            False,
            id="toleration-for-another-effect",
        ),
        pytest.param(
            gang("j", cpu="1", tolerations=[{"operator": "Exists"}]),
            node("n", taints=[fx.CONTROL_PLANE_TAINT, {"key": "x", "effect": "NoExecute"}]),
            True,
            id="keyless-exists-tolerates-everything",
        ),
        pytest.param(gang("j", cpu="1", cpu_nodes=True), node("gpu-a", gpus=4), False, id="cpu-job-avoids-gpu-nodes"),
        pytest.param(gang("j", cpu="1", cpu_nodes=False), node("gpu-a", gpus=4), True, id="cpu-job-on-all-gpu-cluster"),
    ],
)
def test_matches(candidate: admission.Gang, target: Object, expected: bool) -> None:
    assert admission.matches(target, candidate.where) is expected


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        pytest.param([node("gpu-a", gpus=8), node("cpu-a")], True, id="mixed"),
        pytest.param([node("gpu-a", gpus=8), node("gpu-b", gpus=8)], False, id="all-gpu"),
        pytest.param([node("gpu-a", gpus=8), node("cpu-a", unschedulable=True)], False, id="cordoned-cpu-node"),
        pytest.param(
            [node("gpu-a", gpus=8), node("drained", labels={"nvidia.com/gpu.present": "true"})],
            False,
            id="gpu-label-without-allocatable-gpus-yet",
        ),
        pytest.param(
            [node("gpu-a", gpus=8), node("control-plane", taints=[fx.CONTROL_PLANE_TAINT])],
            False,
            id="tainted-control-plane-is-no-home-for-cpu-workers",
        ),
    ],
)
def test_cpu_nodes_exist(nodes: list[Object], expected: bool) -> None:
    assert admission.cpu_nodes_exist(nodes) is expected


# -- admission --------------------------------------------------------------------------------------


def test_a_gang_that_fits_is_admitted() -> None:
    answer = cluster(TWO_4_GPU_NODES).decide(gang("bert", size=2, gpus=4))

    assert answer == admission.Admission(True, "all 2 workers fit the free capacity", workers=2)


def test_an_identical_second_gang_waits_for_the_gpus_the_first_holds() -> None:
    first = gang("bert-a", size=2, gpus=4)
    pods = bound_gang("bert-a", ["gpu-a", "gpu-b"], 4)

    answer = cluster(TWO_4_GPU_NODES, pods, admitted=[first]).decide(gang("bert-b", size=2, gpus=4))

    assert not answer.admitted
    assert answer.reason == "waiting for capacity: the job needs 8 nvidia.com/gpu (0 free) on the 2 nodes it may use"


def test_admitted_gangs_reserve_their_unbound_workers() -> None:
    first = gang("bert-a", size=2, gpus=4)
    pods = bound_gang("bert-a", ["gpu-a"], 4)

    partly = cluster(TWO_4_GPU_NODES, pods, admitted=[first]).decide(gang("bert-b", size=1, gpus=4))
    unbound = cluster(TWO_4_GPU_NODES, admitted=[first]).decide(gang("bert-b", size=1, gpus=4))

    assert not partly.admitted
    assert not unbound.admitted
    assert "nvidia.com/gpu" in unbound.reason


def test_a_gang_is_not_held_back_by_its_own_admission() -> None:
    me = gang("bert", size=2, gpus=4)

    answer = cluster(TWO_4_GPU_NODES, admitted=[me], waiting=[me]).decide(me)

    assert answer.admitted


@pytest.mark.parametrize(
    ("candidate", "waiting", "admitted"),
    [
        pytest.param(
            gang("first", size=2, gpus=3, created=fx.at(0)),
            [gang("second", size=2, gpus=3, created=fx.at(60))],
            True,
            id="the-older-gang-is-admitted",
        ),
        pytest.param(
            gang("second", size=2, gpus=3, created=fx.at(60)),
            [gang("first", size=2, gpus=3, created=fx.at(0))],
            False,
            id="the-newer-gang-waits-for-the-older",
        ),
        pytest.param(
            gang("urgent", size=2, gpus=3, created=fx.at(60), priority=1000),
            [gang("first", size=2, gpus=3, created=fx.at(0))],
            True,
            id="higher-priority-goes-first-though-newer",
        ),
        pytest.param(
            gang("first", size=2, gpus=3, created=fx.at(0)),
            [gang("urgent", size=2, gpus=3, created=fx.at(60), priority=1000)],
            False,
            id="older-lower-priority-waits-for-the-urgent-one",
        ),
        pytest.param(
            gang("small", size=1, gpus=2, created=fx.at(120)),
            [gang("huge", size=2, gpus=8, created=fx.at(0))],
            True,
            id="a-gang-ahead-that-cannot-fit-holds-nothing",
        ),
        pytest.param(
            gang("small", size=1, gpus=1, created=fx.at(120)),
            [gang("first", size=2, gpus=3, created=fx.at(0)), gang("huge", size=2, gpus=8, created=fx.at(60))],
            True,
            id="best-effort-fifo-past-a-blocked-gang",
        ),
        pytest.param(
            gang("b", size=2, gpus=3, created=fx.at(0)),
            [gang("a", size=2, gpus=3, created=fx.at(0))],
            False,
            id="same-second-ties-go-by-name",
        ),
    ],
)
def test_queue_order_on_two_4_gpu_nodes(
    candidate: admission.Gang, waiting: list[admission.Gang], admitted: bool
) -> None:
    answer = cluster(TWO_4_GPU_NODES, waiting=[candidate, *waiting]).decide(candidate)

    assert answer.admitted is admitted, answer.reason


def test_two_gangs_wanting_6_of_8_gpus_never_deadlock() -> None:
    first, second = gang("first", size=2, gpus=3, created=fx.at(0)), gang("second", size=2, gpus=3, created=fx.at(1))

    first_answer = cluster(TWO_4_GPU_NODES, waiting=[first, second]).decide(first)
    both_waiting = cluster(TWO_4_GPU_NODES, waiting=[first, second])
    second_while_first_waits = both_waiting.decide(second)
    second_after = cluster(TWO_4_GPU_NODES, admitted=[first], waiting=[second]).decide(second)
    # The second gang, waiting, reserves nothing: a 1-GPU job after it still gets the 2 GPUs left.
    late = gang("late", size=1, gpus=1, created=fx.at(2))
    late_answer = cluster(TWO_4_GPU_NODES, admitted=[first], waiting=[second, late]).decide(late)

    assert first_answer.admitted
    assert not second_while_first_waits.admitted
    assert not second_after.admitted
    assert second_after.reason == (
        "waiting for capacity: the job needs 6 nvidia.com/gpu (2 free) on the 2 nodes it may use"
    )
    assert both_waiting.take_woken() == [first.key]  # admitted on the second's turn, as it is ahead
    assert late_answer.admitted


def test_free_gpus_spread_over_nodes_do_not_fit_one_big_worker() -> None:
    pods = [
        pod("other-0", "gpu-a", requests={GPU: "2"}, limits={GPU: "2"}),
        pod("other-1", "gpu-b", requests={GPU: "2"}, limits={GPU: "2"}),
    ]

    answer = cluster(TWO_4_GPU_NODES, pods).decide(gang("big", size=1, gpus=4))

    assert not answer.admitted
    assert answer.reason == (
        "waiting for capacity: no placement of all 1 workers fits: the free capacity is spread over too many nodes"
    )


@pytest.mark.parametrize(
    ("phase", "admitted"),
    [
        pytest.param("Running", False, id="running-holds"),
        pytest.param("Pending", False, id="bound-pending-holds"),
        pytest.param("Succeeded", True, id="succeeded-frees"),
        pytest.param("Failed", True, id="failed-frees"),
    ],
)
def test_only_unfinished_bound_pods_hold_capacity(phase: str, admitted: bool) -> None:
    pods = [pod("done", "gpu-a", requests={GPU: "4"}, phase=phase)]

    answer = cluster([node("gpu-a", gpus=4)], pods).decide(gang("j", gpus=4))

    assert answer.admitted is admitted


def test_unbound_pods_of_other_workloads_hold_nothing() -> None:
    pods = [pod("pending", None, requests={GPU: "4"}, phase="Pending")]

    assert cluster([node("gpu-a", gpus=4)], pods).decide(gang("j", gpus=4)).admitted


def test_pods_on_unknown_nodes_are_ignored() -> None:
    pods = [pod("ghost", "gone-node", requests={GPU: "4"})]

    assert cluster([node("gpu-a", gpus=4)], pods).decide(gang("j", gpus=4)).admitted


@pytest.mark.parametrize(
    ("candidate", "nodes", "pods", "reason"),
    [
        pytest.param(
            gang("j", size=2, gpus=1),
            [node("gpu-a", gpus=4, pods="3")],
            [pod("a", "gpu-a"), pod("b", "gpu-a")],
            "the job needs 2 pods (1 free) on the 1 nodes it may use",
            id="pod-slots",
        ),
        pytest.param(
            gang("j", size=2, cpu="500m", memory="1Gi"),
            [node("cpu-a", cpu="1", memory="1536Mi")],
            [pod("a", "cpu-a", requests={"cpu": "250m", "memory": "256Mi"})],
            "the job needs 1 cpu (0.75 free), 2147483648 memory (1342177280 free) on the 1 nodes it may use",
            id="milli-cpu-and-binary-memory",
        ),
        pytest.param(
            gang("j", gpus=1, product=fx.H100),
            TWO_4_GPU_NODES,
            [],
            "no node matches the job's nodeSelector, GPU product and tolerations",
            id="no-node-has-the-product",
        ),
        pytest.param(
            gang("j", cpu="1", node_selector={"pool": "batch"}),
            [node("cpu-a", labels={"pool": "serving"}), node("cpu-b")],
            [],
            "no node matches the job's nodeSelector, GPU product and tolerations",
            id="no-node-in-the-pool",
        ),
        pytest.param(
            gang("j", gpus=2),
            [node("gpu-a", gpus=4, taints=[{"key": "maintenance", "effect": "NoSchedule"}])],
            [],
            "no node matches the job's nodeSelector, GPU product and tolerations",
            id="taint-without-toleration",
        ),
    ],
)
def test_waiting_reasons(candidate: admission.Gang, nodes: list[Object], pods: list[Object], reason: str) -> None:
    answer = cluster(nodes, pods).decide(candidate)

    assert answer == admission.Admission(False, f"waiting for capacity: {reason}")


@pytest.mark.parametrize(
    ("candidate", "pods", "admitted"),
    [
        pytest.param(gang("j", size=2, cpu="500m", memory="1Gi"), [], True, id="exactly-fits"),
        pytest.param(
            gang("j", size=2, cpu="500m", memory="1Gi"),
            [pod("x", "cpu-a", requests={"cpu": "1m"})],
            False,
            id="one-millicore-short",
        ),
        pytest.param(
            gang("j", size=1, cpu="500m", memory="1Gi"),
            [pod("x", "cpu-a", limits={"cpu": "500m", "memory": "1Gi"})],
            True,
            id="a-limits-only-pod-counts-its-limits",
        ),
        pytest.param(
            gang("j", size=1, cpu="500m", memory="1Gi"),
            [pod("x", "cpu-a", limits={"cpu": "501m"})],
            False,
            id="a-limits-only-pod-takes-its-limits",
        ),
    ],
)
def test_quantities_are_compared_exactly(candidate: admission.Gang, pods: list[Object], admitted: bool) -> None:
    answer = cluster([node("cpu-a", cpu="1", memory="2Gi")], pods).decide(candidate)

    assert answer.admitted is admitted, answer.reason


def test_cpu_workers_are_not_counted_onto_gpu_nodes_when_cpu_nodes_exist() -> None:
    nodes = [node("gpu-a", cpu="64", gpus=8), node("cpu-a", cpu="4")]

    fits = cluster(nodes).decide(gang("j", size=1, cpu="4", cpu_nodes=True))
    too_big = cluster(nodes).decide(gang("j", size=2, cpu="4", cpu_nodes=True))

    assert fits.admitted
    assert not too_big.admitted
    assert "on the 1 nodes it may use" in too_big.reason


def test_a_cpu_job_runs_on_gpu_nodes_when_the_only_other_node_is_a_tainted_control_plane() -> None:
    nodes = [
        node("control-plane", cpu="4", taints=[fx.CONTROL_PLANE_TAINT]),
        node("gpu-a", cpu="64", gpus=8),
        node("gpu-b", cpu="64", gpus=8),
    ]
    candidate = gang("etl", size=2, cpu="4", cpu_nodes=admission.cpu_nodes_exist(nodes))

    answer = cluster(nodes).decide(candidate)

    assert answer.admitted, answer.reason


def test_workers_may_share_a_node() -> None:
    answer = cluster(TWO_4_GPU_NODES).decide(gang("j", size=4, gpus=2))

    assert answer.admitted
    assert not cluster(TWO_4_GPU_NODES).decide(gang("j", size=5, gpus=2)).admitted


# -- the GangScheduler seam ------------------------------------------------------------------------


def unread() -> inventory.Inventory:
    raise AssertionError("a PodGroup scheduler must not read the cluster")


def test_every_scheduler_in_the_api_has_an_implementation() -> None:
    assert set(gang_providers.SCHEDULERS) == set(trainingjob.GangScheduler)


@pytest.mark.parametrize(
    ("scheduler", "reason"),
    [
        pytest.param(
            trainingjob.GangScheduler.VOLCANO, "a PodGroup with minMember lets volcano bind the 4 workers", id="volcano"
        ),
        pytest.param(
            trainingjob.GangScheduler.COSCHEDULING,
            "a PodGroup with minMember lets the coscheduling plugin bind the 4 workers",
            id="coscheduling",
        ),
        pytest.param(
            trainingjob.GangScheduler.KUEUE, "Kueue admits the pod group of 4 gated workers from its queue", id="kueue"
        ),
    ],
)
def test_pod_group_and_kueue_schedulers_admit_at_once_without_reading_the_cluster(
    scheduler: trainingjob.GangScheduler, reason: str
) -> None:
    provider = gang_providers.SCHEDULERS[scheduler]

    assert provider.needs_cluster is False
    assert provider.admit(gang("j", size=4, gpus=8), unread) == admission.Admission(True, reason)


@pytest.mark.parametrize(
    ("nodes", "admitted"),
    [pytest.param(TWO_4_GPU_NODES, True, id="fits"), pytest.param([node("cpu-a")], False, id="no-gpus")],
)
def test_builtin_scheduler_reads_the_cluster_and_admits_by_capacity(nodes: list[Object], admitted: bool) -> None:
    provider = gang_providers.SCHEDULERS[trainingjob.GangScheduler.BUILTIN]
    reads: list[bool] = []

    def read() -> inventory.Inventory:
        reads.append(True)
        return cluster(nodes)

    assert provider.needs_cluster is True
    assert provider.admit(gang("j", size=2, gpus=4), read).admitted is admitted
    assert reads == [True]


# -- what the cluster holds, from the objects as listed ----------------------------------------------


def worker_pod(job: str, node_name: str | None, phase: str = "Running", namespace: str = fx.NAMESPACE) -> Object:
    one = pod(f"{job}-{node_name}-{phase}", node_name, phase=phase, namespace=namespace)
    one["metadata"]["labels"] = {workers.JOB_LABEL: job}
    return one


@pytest.mark.parametrize(
    ("pods", "bound"),
    [
        pytest.param([worker_pod("a", "n1"), worker_pod("a", "n2")], {(fx.NAMESPACE, "a"): 2}, id="bound-running"),
        pytest.param([worker_pod("a", "n1", "Pending")], {(fx.NAMESPACE, "a"): 1}, id="bound-pending"),
        pytest.param([worker_pod("a", None, "Pending")], {}, id="unbound"),
        pytest.param([worker_pod("a", "n1", "Succeeded"), worker_pod("a", "n1", "Failed")], {}, id="finished"),
        pytest.param([pod("web", "n1", namespace=fx.NAMESPACE)], {}, id="not-a-worker"),
        pytest.param(
            [worker_pod("a", "n1"), worker_pod("a", "n1", namespace="other")],
            {(fx.NAMESPACE, "a"): 1, ("other", "a"): 1},
            id="per-namespace",
        ),
    ],
)
def test_the_inventory_counts_unfinished_workers_bound_to_a_node(
    pods: list[Object], bound: dict[tuple[str, str], int]
) -> None:
    known = cluster(TWO_4_GPU_NODES, pods)
    keys = [(fx.NAMESPACE, "a"), ("other", "a")]
    assert {key: known.bound(key) for key in keys if known.bound(key)} == bound


@pytest.mark.parametrize(
    ("status", "spec", "held"),
    [
        pytest.param(None, {}, "waiting", id="new"),
        pytest.param({"phase": "Pending"}, {}, "waiting", id="pending"),
        pytest.param({"phase": "Queued"}, {}, "waiting", id="queued"),
        pytest.param({"phase": "Queued"}, {"suspend": True}, None, id="suspended-while-queued"),
        pytest.param({"phase": "Suspended"}, {"suspend": True}, None, id="suspended"),
        pytest.param({"phase": "Admitted"}, {}, "admitted", id="admitted"),
        pytest.param({"phase": "Running"}, {}, "admitted", id="running"),
        pytest.param({"phase": "Succeeded"}, {}, None, id="succeeded"),
        pytest.param({"phase": "Failed"}, {}, None, id="failed"),
        pytest.param({"phase": "Running"}, {"gangScheduling": {"scheduler": "volcano"}}, None, id="volcano-running"),
        pytest.param({"phase": "Queued"}, {"gangScheduling": {"scheduler": "coscheduling"}}, None, id="pod-group"),
        pytest.param({"phase": "Queued"}, {"workers": 0}, None, id="does-not-parse"),
    ],
)
def test_the_inventory_reserves_admitted_phases_and_queues_waiting_ones(
    status: Object | None, spec: Object, held: str | None
) -> None:
    known = cluster(TWO_4_GPU_NODES)
    known.job_seen(fx.job_body("a", status=status, **{"workers": 2, **spec}))
    holding = {"admitted": sum(known.reserved((fx.NAMESPACE, "a")).values()), "waiting": known.queue()}
    assert holding == {
        "admitted": 2 if held == "admitted" else 0,
        "waiting": [(fx.NAMESPACE, "a")] if held == "waiting" else [],
    }


def test_an_admitted_gang_reserves_only_its_unbound_workers() -> None:
    known = cluster(TWO_4_GPU_NODES, [worker_pod("a", "gpu-a")])
    known.job_seen(fx.job_body("a", status={"phase": "Running"}, workers=2))
    assert (known.bound((fx.NAMESPACE, "a")), sum(known.reserved((fx.NAMESPACE, "a")).values())) == (1, 1)


@pytest.mark.parametrize(
    ("priority_class", "priority"),
    [
        pytest.param(None, 5, id="none-takes-the-default"),
        pytest.param("high", 1000, id="known"),
        pytest.param("missing", 5, id="unknown-takes-the-default"),
    ],
)
def test_gang_of_takes_its_priority_from_the_job_s_class(priority_class: str | None, priority: int) -> None:
    spec = {"priorityClassName": priority_class} if priority_class else {}
    one = admission.gang_of(fx.job(name="a", workers=3, **spec), TWO_4_GPU_NODES, {"high": 1000}, 5)
    assert (one.key, one.size, one.priority, one.queued_at) == ((fx.NAMESPACE, "a"), 3, priority, fx.stamp(fx.T0))


@pytest.mark.parametrize(
    ("nodes", "avoids_gpu_nodes"),
    [
        pytest.param([*TWO_4_GPU_NODES, node("cpu-a")], True, id="cpu-nodes-exist"),
        pytest.param(TWO_4_GPU_NODES, False, id="only-gpu-nodes"),
    ],
)
def test_gang_of_keeps_cpu_workers_off_gpu_nodes_only_when_cpu_nodes_exist(
    nodes: list[Object], avoids_gpu_nodes: bool
) -> None:
    one = admission.gang_of(fx.job(name="a", resources={"cpu": "1"}), nodes, {}, 0)
    assert one.where.avoid_gpu_nodes is avoids_gpu_nodes


@pytest.mark.parametrize(
    ("tolerations", "expected"),
    [
        pytest.param([], False, id="tainted-control-plane-is-no-home"),
        pytest.param([{"key": fx.CONTROL_PLANE_TAINT["key"], "operator": "Exists"}], True, id="tolerated"),
    ],
)
def test_cpu_nodes_for_reads_the_job_s_tolerations(tolerations: list[Object], expected: bool) -> None:
    nodes = [*TWO_4_GPU_NODES, node("control-plane", taints=[fx.CONTROL_PLANE_TAINT])]
    assert admission.cpu_nodes_for(fx.job(name="a", tolerations=tolerations), nodes) is expected


def test_a_gpu_job_has_no_cpu_only_workers_to_keep_off_gpu_nodes() -> None:
    gpu_job = fx.job(name="a", resources={"cpu": "1", "gpus": {"count": 1}})
    assert admission.cpu_nodes_for(gpu_job, [*TWO_4_GPU_NODES, node("cpu-a")]) is False


def priority_class(name: str, value: int, *, default: bool = False) -> Object:
    return {"metadata": {"name": name}, "value": value, **({"globalDefault": True} if default else {})}


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        pytest.param([], ({}, 0), id="none"),
        pytest.param([priority_class("high", 1000)], ({"high": 1000}, 0), id="no-global-default"),
        pytest.param(
            [priority_class("high", 1000), priority_class("normal", 10, default=True)],
            ({"high": 1000, "normal": 10}, 10),
            id="global-default",
        ),
    ],
)
def test_priority_classes_by_name_and_the_global_default(
    classes: list[Object], expected: tuple[dict[str, int], int]
) -> None:
    assert admission.priority_classes(classes) == expected
