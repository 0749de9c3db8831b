"""The admission inventory kept from watch events: capacity accounted as gangs are admitted, bind
and finish; the queue in priority-then-age order, admitted on the way and again when capacity
frees; events that arrive late never undo newer ones."""

from __future__ import annotations

from typing import Any

import pytest
import training_fixtures as fx

from kiln.api import trainingjob
from kiln.training import inventory, workers

Object = dict[str, Any]
Phase = trainingjob.TrainingJobPhase
GPU = fx.GPU
NODES = [fx.node("gpu-a", gpus=4), fx.node("gpu-b", gpus=4)]


def known(*nodes: Object) -> inventory.Inventory:
    cluster = inventory.Inventory()
    for node in nodes or NODES:
        cluster.node_seen(node)
    return cluster


def job(name: str, phase: str | None = None, *, gpus: int = 4, size: int = 1, seconds: int = 0, **spec: Any) -> Object:
    status = {"phase": phase} if phase else None
    return fx.job_body(
        name, status=status, created=fx.at(seconds), workers=size, resources={"gpus": {"count": gpus}}, **spec
    )


def worker(job_name: str, node: str | None, phase: str = "Running", *, rank: int = 0, version: int = 1) -> Object:
    pod = fx.pod(f"{job_name}-worker-{rank}", node, limits={GPU: "4"}, phase=phase, namespace=fx.NAMESPACE)
    pod["metadata"]["labels"] = {workers.JOB_LABEL: job_name}
    pod["metadata"]["resourceVersion"] = str(version)
    return pod


def decide(cluster: inventory.Inventory, body: Object) -> bool:
    return cluster.decide(cluster.gang_of(workers.Job.from_body(body))).admitted


def key(name: str) -> tuple[str, str]:
    return fx.NAMESPACE, name


def test_capacity_is_accounted_as_gangs_are_admitted_without_waiting_for_their_status() -> None:
    cluster = known()

    answers = [decide(cluster, job(f"j{index}")) for index in range(3)]

    assert answers == [True, True, False]


def test_a_worker_that_binds_takes_its_gang_s_reservation_so_nothing_is_counted_twice() -> None:
    cluster = known()
    decide(cluster, job("a"))
    cluster.job_seen(job("a", "Admitted"))

    cluster.pod_seen(worker("a", "gpu-b"))

    assert (cluster.bound(key("a")), cluster.reserved(key("a"))) == (1, {})
    assert decide(cluster, job("b")) is True
    assert decide(cluster, job("c")) is False


def test_a_running_gang_whose_worker_failed_keeps_its_capacity_for_the_restart() -> None:
    cluster = known(fx.node("gpu-a", gpus=4))
    cluster.job_seen(job("a", "Running"))
    cluster.pod_seen(worker("a", "gpu-a"))

    cluster.pod_seen(worker("a", "gpu-a", "Failed", version=2))

    assert sum(cluster.reserved(key("a")).values()) == 1
    assert decide(cluster, job("b")) is False


@pytest.mark.parametrize(
    ("ending", "woken"),
    [
        pytest.param(lambda c: c.job_seen(job("a", "Succeeded")), [key("b")], id="the-job-succeeds"),
        pytest.param(lambda c: c.job_seen(job("a", "Suspended", suspend=True)), [key("b")], id="it-is-suspended"),
        pytest.param(lambda c: c.job_gone(job("a")), [key("b")], id="it-is-deleted"),
        pytest.param(lambda c: c.node_seen(fx.node("gpu-c", gpus=4)), [key("b")], id="a-node-joins"),
        pytest.param(lambda c: c.job_seen(job("a", "Running")), [], id="it-only-runs-on"),
    ],
)
def test_a_waiting_gang_is_admitted_and_woken_when_capacity_frees(ending: Any, woken: list[Any]) -> None:
    cluster = known(fx.node("gpu-a", gpus=4))
    cluster.job_seen(job("a", "Admitted"))
    cluster.job_seen(job("b", "Queued", seconds=1))
    assert decide(cluster, job("b", "Queued", seconds=1)) is False

    ending(cluster)
    cluster.admit_waiting()

    assert cluster.take_woken() == woken


@pytest.mark.parametrize(
    ("waiting", "candidate", "admitted", "woken"),
    [
        pytest.param([job("old", "Queued", seconds=0)], job("new", seconds=9), False, [key("old")], id="age"),
        pytest.param(
            [job("old", "Queued", seconds=0)],
            job("urgent", seconds=9, priorityClassName="high"),
            True,
            [],
            id="priority-before-age",
        ),
        pytest.param(
            [job("huge", "Queued", seconds=0, gpus=8)],
            job("small", seconds=9),
            True,
            [],
            id="a-blocked-gang-holds-nothing",
        ),
    ],
)
def test_the_queue_goes_by_priority_then_age_and_admits_the_gangs_ahead_on_the_way(
    waiting: list[Object], candidate: Object, admitted: bool, woken: list[Any]
) -> None:
    cluster = known(fx.node("gpu-a", gpus=4))
    cluster.priority_class_seen({"metadata": {"name": "high"}, "value": 1000})
    for body in waiting:
        cluster.job_seen(body)

    assert decide(cluster, candidate) is admitted
    assert cluster.take_woken() == woken


def test_a_waiting_reason_counts_the_gangs_still_ahead() -> None:
    cluster = known(fx.node("gpu-a", gpus=4))
    cluster.job_seen(job("huge", "Queued", gpus=8))

    answer = cluster.decide(cluster.gang_of(workers.Job.from_body(job("also-huge", gpus=8, seconds=1))))

    assert answer.reason.endswith("; 1 job(s) ahead in the queue")


def test_a_priority_class_that_appears_later_reorders_the_queue() -> None:
    cluster = known(fx.node("gpu-a", gpus=4))
    cluster.job_seen(job("old", "Queued"))
    cluster.job_seen(job("urgent", "Queued", seconds=9, priorityClassName="high"))

    cluster.priority_class_seen({"metadata": {"name": "high"}, "value": 1000})
    cluster.admit_waiting()

    assert cluster.take_woken() == [key("urgent")]


@pytest.mark.parametrize(
    ("late", "holds"),
    [
        pytest.param("Queued", True, id="its-old-queued-status-keeps-the-grant"),
        pytest.param("Admitted", True, id="its-admitted-status-takes-over"),
        pytest.param("Failed", False, id="a-failure-releases-it"),
    ],
)
def test_a_grant_lasts_until_the_job_s_own_status_speaks(late: str, holds: bool) -> None:
    cluster = known(fx.node("gpu-a", gpus=4))
    decide(cluster, job("a"))

    cluster.job_seen(job("a", late))

    assert bool(cluster.reserved(key("a"))) is holds


def test_a_late_event_never_brings_back_a_deleted_pod() -> None:
    cluster = known(fx.node("gpu-a", gpus=4))
    cluster.pod_seen(worker("other", "gpu-a", version=5))
    cluster.pod_gone(worker("other", "gpu-a", version=7))

    cluster.pod_seen(worker("other", "gpu-a", version=6))

    assert decide(cluster, job("a")) is True


# -- ResourceQuota, for the whole gang ----------------------------------------------------------------


def quota(hard: dict[str, str], used: dict[str, str] | None = None, *, name: str = "team", version: int = 1) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": name, "namespace": fx.NAMESPACE, "resourceVersion": str(version)},
        "spec": {"hard": hard},
        "status": {"hard": hard, "used": used or {}},
    }


def big_cluster() -> inventory.Inventory:
    return known(*(fx.node(f"gpu-{index}", gpus=8, cpu="64", memory="512Gi") for index in range(4)))


@pytest.mark.parametrize(
    ("hard", "used", "candidate", "reason"),
    [
        pytest.param(
            {"requests.nvidia.com/gpu": "16"},
            {"requests.nvidia.com/gpu": "12"},
            job("big", size=2, gpus=4),
            f"quota: the job needs 8 nvidia.com/gpu, 4 of 16 left in namespace {fx.NAMESPACE}",
            id="gpus-for-the-whole-gang",
        ),
        pytest.param(
            {"requests.nvidia.com/gpu": "16"}, {"requests.nvidia.com/gpu": "8"}, job("fits", size=2), None, id="fits"
        ),
        pytest.param(
            {"pods": "3"},
            {"pods": "2"},
            job("three", size=2, gpus=1),
            f"quota: the job needs 2 pods, 1 of 3 left in namespace {fx.NAMESPACE}",
            id="pods",
        ),
        pytest.param(
            {"requests.cpu": "4"},
            {},
            fx.job_body("cpu", workers=3, resources={"cpu": "2"}),
            f"quota: the job needs 6 cpu, 4 of 4 left in namespace {fx.NAMESPACE}",
            id="cpu",
        ),
        pytest.param(
            {"requests.memory": "16Gi"},
            {"requests.memory": "12Gi"},
            fx.job_body("memory", workers=2, resources={"memory": "4Gi"}),
            f"quota: the job needs 8Gi memory, 4Gi of 16Gi left in namespace {fx.NAMESPACE}",
            id="memory",
        ),
        pytest.param({"count/configmaps": "1"}, {"count/configmaps": "1"}, job("other"), None, id="other-resources"),
    ],
)
def test_a_gang_over_its_namespace_s_quota_waits_whole(
    hard: dict[str, str], used: dict[str, str], candidate: Object, reason: str | None
) -> None:
    cluster = big_cluster()
    cluster.quota_seen(quota(hard, used))

    answer = cluster.decide(cluster.gang_of(workers.Job.from_body(candidate)))

    assert (answer.admitted, None if answer.admitted else answer.reason) == (reason is None, reason)


def test_gangs_admitted_but_not_created_yet_count_against_the_quota() -> None:
    cluster = big_cluster()
    cluster.quota_seen(quota({"requests.nvidia.com/gpu": "8"}, {"requests.nvidia.com/gpu": "0"}))

    first, second = decide(cluster, job("first", size=1, gpus=4)), decide(cluster, job("second", size=2, gpus=4))

    assert (first, second) == (True, False)


def test_pods_the_quota_status_does_not_show_yet_count_against_it() -> None:
    cluster = big_cluster()
    cluster.quota_seen(quota({"requests.nvidia.com/gpu": "4"}, {"requests.nvidia.com/gpu": "0"}))

    cluster.pod_seen(worker("elsewhere", None, "Pending"))

    assert decide(cluster, job("a", gpus=4)) is False


def test_a_gang_over_quota_is_admitted_when_another_job_frees_quota() -> None:
    cluster = big_cluster()
    cluster.quota_seen(quota({"requests.nvidia.com/gpu": "4"}, {"requests.nvidia.com/gpu": "4"}))
    cluster.job_seen(job("running", "Running"))
    cluster.pod_seen(worker("running", "gpu-0"))
    cluster.job_seen(job("next", "Queued", seconds=1))
    assert decide(cluster, job("next", "Queued", seconds=1)) is False

    cluster.pod_seen(worker("running", "gpu-0", "Succeeded", version=2))
    cluster.job_seen(job("running", "Succeeded"))
    cluster.quota_seen(quota({"requests.nvidia.com/gpu": "4"}, {"requests.nvidia.com/gpu": "0"}, version=2))
    cluster.admit_waiting()

    assert cluster.take_woken() == [key("next")]


# -- preemption ------------------------------------------------------------------------------------


def running(cluster: inventory.Inventory, name: str, gpus: int, node: str, *, seconds: int = 0, **spec: Any) -> None:
    """A job whose one worker runs on `node` with `gpus` GPUs."""
    cluster.job_seen(job(name, "Running", gpus=gpus, seconds=seconds, **spec))
    pod = worker(name, node)
    pod["spec"]["containers"][0]["resources"] = {"limits": {GPU: str(gpus)}}
    cluster.pod_seen(pod)


def classes(cluster: inventory.Inventory) -> None:
    for name, value in (("low", 0), ("mid", 500), ("high", 1000)):
        cluster.priority_class_seen({"metadata": {"name": name}, "value": value})


@pytest.mark.parametrize(
    ("jobs", "candidate", "victims"),
    [
        pytest.param(
            [("small", 1, "gpu-a", "low"), ("big", 4, "gpu-b", "low")],
            job("urgent", gpus=4, seconds=99, priorityClassName="high"),
            [key("big")],
            id="the-one-job-that-frees-enough",
        ),
        pytest.param(
            [("a", 2, "gpu-a", "low"), ("b", 2, "gpu-a", "low"), ("c", 4, "gpu-b", "mid")],
            job("urgent", gpus=4, seconds=99, priorityClassName="high"),
            [key("c")],
            id="one-of-higher-priority-before-two-of-the-lowest",
        ),
        pytest.param(
            [("a", 2, "gpu-a", "low"), ("b", 2, "gpu-a", "low"), ("c", 4, "gpu-b", "high")],
            job("urgent", gpus=4, seconds=99, priorityClassName="high"),
            [key("a"), key("b")],
            id="never-one-of-equal-priority",
        ),
        pytest.param(
            [("a", 4, "gpu-a", "high"), ("b", 4, "gpu-b", "high")],
            job("urgent", gpus=4, seconds=99, priorityClassName="high"),
            None,
            id="equal-priority-never-preempts",
        ),
        pytest.param(
            [("a", 4, "gpu-a", "low"), ("b", 4, "gpu-b", "low")],
            job("urgent", gpus=8, seconds=99, priorityClassName="high"),
            None,
            id="no-node-would-fit-it-anyway",
        ),
    ],
)
def test_preemption_picks_the_fewest_lower_priority_gangs_that_make_room(
    jobs: list[tuple[str, int, str, str]], candidate: Object, victims: list[Any] | None
) -> None:
    cluster = known()
    classes(cluster)
    for name, gpus, node, priority in jobs:
        running(cluster, name, gpus, node, priorityClassName=priority)

    answer = cluster.decide(cluster.gang_of(workers.Job.from_body(candidate)))

    assert not answer.admitted
    assert (sorted(answer.preempt) if answer.preempt else None) == victims


def test_a_job_that_opted_out_is_never_preempted() -> None:
    cluster = known(fx.node("gpu-a", gpus=4))
    classes(cluster)
    running(cluster, "keep", 4, "gpu-a", priorityClassName="low", preemptible=False)

    answer = cluster.decide(cluster.gang_of(workers.Job.from_body(job("urgent", priorityClassName="high"))))

    assert (answer.admitted, answer.preempt) == (False, ())


def urgent_beside_two_low_jobs() -> tuple[inventory.Inventory, Object]:
    """Two 4-GPU nodes each full with a low-priority job, a and the younger b, and urgent (high,
    4 GPUs) queued."""
    cluster = known(fx.node("gpu-a", gpus=4), fx.node("gpu-b", gpus=4))
    classes(cluster)
    running(cluster, "a", 4, "gpu-a", priorityClassName="low")
    running(cluster, "b", 4, "gpu-b", priorityClassName="low", seconds=1)
    urgent = job("urgent", "Queued", seconds=99, priorityClassName="high")
    cluster.job_seen(urgent)
    return cluster, urgent


def test_victims_stopping_are_waited_for_not_joined_by_more_and_the_gang_is_admitted_once_they_stopped() -> None:
    cluster, urgent = urgent_beside_two_low_jobs()
    first = cluster.decide(cluster.gang_of(workers.Job.from_body(urgent)))

    again = cluster.decide(cluster.gang_of(workers.Job.from_body(urgent)))
    cluster.pod_gone(worker("b", "gpu-b", version=2))
    cluster.job_seen(job("b", "Queued", seconds=1, priorityClassName="low"))
    cluster.admit_waiting()

    assert first.preempt == (key("b"),)  # the younger of the two
    assert (again.preempt, again.reason.startswith(f"preempting {fx.NAMESPACE}/b ")) == ((), True)
    assert cluster.take_woken() == [key("urgent")]


def test_a_victim_queued_again_while_its_worker_stops_is_still_waited_for_and_never_readmitted_into_its_own_room() -> (
    None
):
    cluster, urgent = urgent_beside_two_low_jobs()
    assert cluster.decide(cluster.gang_of(workers.Job.from_body(urgent))).preempt == (key("b"),)
    stopping = worker("b", "gpu-b", version=2)
    stopping["spec"]["containers"][0]["resources"] = {"limits": {GPU: "4"}}
    stopping["metadata"]["deletionTimestamp"] = fx.at(5).isoformat()
    cluster.pod_seen(stopping)
    victim = job("b", "Queued", seconds=1, priorityClassName="low")
    cluster.job_seen(victim)

    again = cluster.decide(cluster.gang_of(workers.Job.from_body(urgent)))
    victim_readmitted = cluster.decide(cluster.gang_of(workers.Job.from_body(victim))).admitted
    cluster.pod_gone(worker("b", "gpu-b", version=3))
    cluster.admit_waiting()

    assert (again.preempt, again.reason.startswith(f"preempting {fx.NAMESPACE}/b ")) == ((), True)
    assert victim_readmitted is False
    assert cluster.take_woken() == [key("urgent")]
    assert decide(cluster, victim) is False  # the room went to the job it was made for


def elastic_workers(cluster: inventory.Inventory, name: str, node: str, count: int, **metadata: Any) -> None:
    for rank in range(count):
        pod = worker(name, node, rank=rank, version=metadata.pop("version", 1))
        pod["spec"]["containers"][0]["resources"] = {"limits": {GPU: "1"}}
        pod["metadata"].update(metadata)
        cluster.pod_seen(pod)


def test_a_lower_priority_elastic_gang_is_shrunk_rather_than_stopped_when_that_makes_room() -> None:
    cluster = known(fx.node("gpu-a", gpus=4))
    classes(cluster)
    flex = elastic("flex", priority_class="low")
    assert cluster.decide(cluster.gang_of(workers.Job.from_body(flex))).workers == 4
    cluster.job_seen(elastic("flex", "Running", worldSize=4, priority_class="low"))
    elastic_workers(cluster, "flex", "gpu-a", 4)
    urgent = job("urgent", "Queued", gpus=2, seconds=99, priorityClassName="high")
    cluster.job_seen(urgent)

    first = cluster.decide(cluster.gang_of(workers.Job.from_body(urgent)))
    again = cluster.decide(cluster.gang_of(workers.Job.from_body(urgent)))
    cluster.job_seen(elastic("flex", "Admitted", worldSize=2, priority_class="low"))
    elastic_workers(cluster, "flex", "gpu-a", 4, version=2, deletionTimestamp=fx.at(5).isoformat())
    waiting = cluster.decide(cluster.gang_of(workers.Job.from_body(urgent)))
    for rank in range(4):
        cluster.pod_gone(worker("flex", "gpu-a", rank=rank, version=3))
    cluster.admit_waiting()

    reason = f"preempting {fx.NAMESPACE}/flex down to 2 workers (lower priority than 1000) to make room"
    assert (first.preempt, first.shrink, first.reason.startswith(reason)) == ((), ((key("flex"), 2),), True)
    assert (again.shrink, again.reason.startswith(reason)) == ((), True)
    assert (waiting.admitted, waiting.reason.startswith(reason)) == (False, True)
    assert cluster.take_woken() == [key("urgent")]
    assert sum(cluster.reserved(key("flex")).values()) == 2  # its two workers' room, beside urgent's


def test_an_elastic_gang_is_stopped_whole_when_shrinking_to_its_minimum_leaves_too_little_room() -> None:
    cluster = known(fx.node("gpu-a", gpus=4))
    classes(cluster)
    assert cluster.decide(cluster.gang_of(workers.Job.from_body(elastic("flex", priority_class="low")))).workers
    cluster.job_seen(elastic("flex", "Running", worldSize=4, priority_class="low"))
    elastic_workers(cluster, "flex", "gpu-a", 4)

    answer = cluster.decide(cluster.gang_of(workers.Job.from_body(job("urgent", gpus=3, priorityClassName="high"))))

    assert (answer.preempt, answer.shrink) == ((key("flex"),), ())


# -- elastic gangs ---------------------------------------------------------------------------------


def elastic(name: str, phase: str | None = None, *, priority_class: str | None = None, **status: Any) -> Object:
    spec = {"priorityClassName": priority_class} if priority_class else {}
    body = job(name, phase, gpus=1, size=2, elastic={"minWorkers": 2, "maxWorkers": 4}, **spec)
    if status:
        body["status"] = {**body.get("status", {}), **status}
    return body


@pytest.mark.parametrize(
    ("busy_gpus", "admitted", "workers_", "reason"),
    [
        pytest.param(0, True, 4, "all 4 workers fit the free capacity", id="all-fit"),
        pytest.param(5, True, 3, "3 of 4 workers fit the free capacity (elastic, at least 2)", id="three-fit"),
        pytest.param(6, True, 2, "2 of 4 workers fit the free capacity (elastic, at least 2)", id="the-minimum-fits"),
        pytest.param(7, False, None, None, id="fewer-than-the-minimum-waits"),
    ],
)
def test_an_elastic_gang_is_admitted_with_as_many_workers_as_fit_between_min_and_max(
    busy_gpus: int, admitted: bool, workers_: int | None, reason: str | None
) -> None:
    cluster = known(fx.node("gpu-a", gpus=8))
    if busy_gpus:
        running(cluster, "busy", busy_gpus, "gpu-a")

    answer = cluster.decide(cluster.gang_of(workers.Job.from_body(elastic("flex"))))

    assert answer.admitted is admitted
    if admitted:
        assert (answer.workers, answer.reason) == (workers_, reason)
        assert sum(cluster.reserved(key("flex")).values()) == workers_


def elastic_beside_a_busy_job(phase: str) -> inventory.Inventory:
    """An 8-GPU node, 6 of them busy: the elastic job flex admitted with 2 of 4 workers, in `phase`."""
    cluster = known(fx.node("gpu-a", gpus=8))
    running(cluster, "busy", 6, "gpu-a")
    assert cluster.decide(cluster.gang_of(workers.Job.from_body(elastic("flex")))).workers == 2
    cluster.job_seen(elastic("flex", phase, worldSize=2))
    for rank in range(2):
        pod = worker("flex", "gpu-a", rank=rank)
        pod["spec"]["containers"][0]["resources"] = {"limits": {GPU: "1"}}
        cluster.pod_seen(pod)
    return cluster


def test_an_elastic_gang_grows_into_capacity_that_frees_and_is_woken_for_it() -> None:
    cluster = elastic_beside_a_busy_job("Running")
    assert cluster.grow(key("flex")) is None  # nothing free yet

    cluster.pod_gone(worker("busy", "gpu-a", version=2))
    cluster.job_seen(job("busy", "Succeeded", gpus=6))
    cluster.admit_waiting()

    assert cluster.take_woken() == [key("flex")]
    assert cluster.grow(key("flex")) == 4
    assert sum(cluster.reserved(key("flex")).values()) == 2  # the two new workers' room
    assert cluster.decide(cluster.gang_of(workers.Job.from_body(job("late", gpus=5)))).admitted is False


def test_an_elastic_gang_that_starts_running_after_capacity_freed_is_woken_to_grow() -> None:
    cluster = elastic_beside_a_busy_job("Admitted")
    cluster.pod_gone(worker("busy", "gpu-a", version=2))
    cluster.job_seen(job("busy", "Succeeded", gpus=6))
    cluster.admit_waiting()
    assert cluster.take_woken() == []  # still starting: not a gang that may grow yet

    cluster.job_seen(elastic("flex", "Running", worldSize=2))

    assert cluster.take_woken() == [key("flex")]
    cluster.job_seen(elastic("flex", "Running", worldSize=2))
    assert cluster.take_woken() == []  # woken once, as it started running
    assert cluster.grow(key("flex")) == 4


def test_a_node_whose_labels_change_is_matched_again() -> None:
    h100 = "NVIDIA-H100-80GB-HBM3"
    cluster = known(fx.node("gpu-a", gpus=4, product=fx.A100))

    def wanting(name: str, product: str) -> Object:
        return fx.job_body(name, created=fx.at(0), resources={"gpus": {"count": 1, "product": product}})

    assert decide(cluster, wanting("first", fx.A100)) is True

    relabelled = fx.node("gpu-a", gpus=4, product=h100)
    relabelled["metadata"]["resourceVersion"] = "2"
    cluster.node_seen(relabelled)

    assert decide(cluster, wanting("second", fx.A100)) is False
    assert decide(cluster, wanting("third", h100)) is True


def test_a_worker_bound_where_another_gang_holds_room_moves_that_reservation_so_none_is_counted_twice() -> None:
    cluster = known(fx.node("gpu-a", gpus=1), fx.node("gpu-b", gpus=1))
    for name in ("first", "second"):
        assert decide(cluster, job(name, gpus=1)) is True
        cluster.job_seen(job(name, "Admitted", gpus=1))
    (reserved_for_first,) = cluster.reserved(key("first"))
    elsewhere = "gpu-b" if reserved_for_first == "gpu-a" else "gpu-a"
    one_gpu_worker = worker("first", elsewhere)
    one_gpu_worker["spec"]["containers"][0]["resources"] = {"limits": {GPU: "1"}}

    cluster.pod_seen(one_gpu_worker)  # the scheduler bound it where the second gang's room was

    assert cluster.reserved(key("second")) == {reserved_for_first: 1}
    assert decide(cluster, job("third", gpus=1)) is False
