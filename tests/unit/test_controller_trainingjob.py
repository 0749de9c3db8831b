"""The TrainingJob controller's observe → act, driven against the in-memory API server with an
injected clock: admission and children created once, a failed worker restarting the gang after
its back-off, and a finished job's TTL deleting it but not the ModelVersion it registered."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from collections.abc import Mapping
from typing import Any

import pytest
import training_fixtures as fx
from polling import eventually

from kiln.controllers import peering, trainingjob
from kiln.kube import client, fake
from kiln.training import plan, workers

TRAINING_JOBS = trainingjob.TRAINING_JOBS
MODEL_VERSIONS = trainingjob.MODEL_VERSIONS
BACKOFF_SECONDS = 10.0
NAME = "resnet"
Object = dict[str, Any]


def submitted(**spec: Any) -> Object:
    """A job asking for two workers of 4 GPUs each: the whole of the two nodes."""
    return fx.job_body(NAME, **{"workers": 2, "resources": {"gpus": {"count": 4}}, **spec})


@pytest.fixture
def clock() -> fake.ManualClock:
    return fake.ManualClock(fx.T0)


class ReadCountingApi(fake.FakeApi):
    """The in-memory API server, telling which objects were read one by one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[tuple[str, str]] = []

    def get(self, resource: client.Resource, namespace: str | None, name: str) -> Object | None:
        self.reads.append((resource.plural, name))
        return super().get(resource, namespace, name)


@pytest.fixture
def api(clock: fake.ManualClock) -> ReadCountingApi:
    api = ReadCountingApi(namespace=fx.NAMESPACE, clock=clock)
    api.add(client.NODES, fx.node("gpu-a", gpus=4, product=fx.A100), fx.node("gpu-b", gpus=4, product=fx.A100))
    return api


@dataclasses.dataclass
class WatchedController(trainingjob.Controller):
    """The controller, with the pod watch events the API server would have sent by now delivered
    before each reconcile (kopf delivers them in the operator)."""

    delivered: dict[tuple[str, str], Object] = dataclasses.field(default_factory=dict)

    def reconcile(self, namespace: str, name: str) -> None:
        pods = {
            (pod["metadata"]["namespace"], pod["metadata"]["name"]): pod for pod in self.kube.list(client.PODS, None)
        }
        for key, pod in self.delivered.items():
            if key not in pods:
                self.watched("pod", "DELETED", pod)
        for pod in pods.values():
            self.watched("pod", "MODIFIED", pod)
        self.delivered = pods
        super().reconcile(namespace, name)


@pytest.fixture
def controller(api: fake.FakeApi, clock: fake.ManualClock) -> trainingjob.Controller:
    return WatchedController(kube=api, settings=plan.Settings(backoff_seconds=BACKOFF_SECONDS), clock=clock)


def reconcile(controller: trainingjob.Controller) -> None:
    controller.reconcile(fx.NAMESPACE, NAME)


def job_status(api: fake.FakeApi) -> Object:
    body = api.get(TRAINING_JOBS, fx.NAMESPACE, NAME)
    assert body is not None
    return dict(body.get("status") or {})


def created(api: fake.FakeApi, kind: str) -> list[str]:
    return [action.name for action in api.actions if (action.verb, action.kind) == ("create", kind)]


def worker_pods(api: fake.FakeApi) -> list[Object]:
    return api.list(client.PODS, fx.NAMESPACE, f"{workers.JOB_LABEL}={NAME}")


def kubelet_reports(api: fake.FakeApi, pod: Object, phase: str, exit_code: int | None = None) -> None:
    """What the scheduler and the kubelet would write: the pod bound, then its phase."""
    name = pod["metadata"]["name"]
    api.patch(client.PODS, fx.NAMESPACE, name, {"spec": {"nodeName": "gpu-a"}})
    status: Object = {"phase": phase}
    if exit_code is not None:
        terminated = {"exitCode": exit_code, "reason": "Error"}
        status["containerStatuses"] = [{"name": workers.TRAINER_CONTAINER, "state": {"terminated": terminated}}]
    api.patch(client.PODS, fx.NAMESPACE, name, {"status": status}, subresource="status")


def admitted_and_made(controller: trainingjob.Controller) -> None:
    """The job's admission turn, then the turn after it, which makes its gang."""
    reconcile(controller)
    assert (fx.NAMESPACE, NAME) in controller.wakeups.due(controller.clock())
    reconcile(controller)


def running_gang(api: fake.FakeApi, controller: trainingjob.Controller) -> None:
    api.add(TRAINING_JOBS, submitted())
    admitted_and_made(controller)
    for pod in worker_pods(api):
        kubelet_reports(api, pod, "Running")
    reconcile(controller)


def test_a_job_that_fits_is_admitted_and_gets_its_service_and_every_worker(
    api: fake.FakeApi, controller: trainingjob.Controller
) -> None:
    api.add(TRAINING_JOBS, submitted())

    reconcile(controller)
    assert (job_status(api)["phase"], created(api, "Pod")) == ("Admitted", [])
    assert (fx.NAMESPACE, NAME) in controller.wakeups.due(controller.clock())  # its next turn: now
    reconcile(controller)

    assert job_status(api)["phase"] == "Admitted"
    assert created(api, "Service") == [NAME]
    assert created(api, "Pod") == [workers.worker_name(NAME, 0), workers.worker_name(NAME, 1)]
    assert [event["reason"] for event in api.events(about=NAME)] == ["Admitted"]


def test_a_restarted_reconcile_never_creates_a_worker_twice(
    api: fake.FakeApi, controller: trainingjob.Controller, clock: fake.ManualClock
) -> None:
    api.add(TRAINING_JOBS, submitted())
    reconcile(controller)
    clock.advance(1)

    reconcile(controller)
    WatchedController(kube=api, settings=controller.settings, clock=clock).reconcile(fx.NAMESPACE, NAME)

    assert created(api, "Pod") == [workers.worker_name(NAME, 0), workers.worker_name(NAME, 1)]
    assert created(api, "Service") == [NAME]


def test_a_job_from_submission_to_running_costs_its_writes_and_reads_none_of_its_children(
    api: ReadCountingApi, controller: trainingjob.Controller
) -> None:
    running_gang(api, controller)

    by_the_controller = [
        (action.verb, action.kind, action.subresource)
        for action in api.actions
        if (action.verb, action.kind) != ("patch", "Pod")  # the scheduler's and kubelet's, in this test
    ]
    assert by_the_controller == [
        ("patch", "TrainingJob", "status"),
        ("create", "Event", None),
        ("create", "Service", None),
        ("create", "ServiceAccount", None),
        ("create", "Role", None),
        ("create", "RoleBinding", None),
        ("create", "Pod", None),
        ("create", "Pod", None),
        ("patch", "TrainingJob", "status"),
        ("create", "Event", None),
    ]
    assert api.reads == [("trainingjobs", NAME)]  # the job, never seen by a watch in this test


def test_events_are_posted_after_status(api: fake.FakeApi, controller: trainingjob.Controller) -> None:
    api.add(TRAINING_JOBS, submitted())

    reconcile(controller)

    order = [(action.kind, action.subresource) for action in api.actions if action.kind in ("TrainingJob", "Event")]
    assert order == [("TrainingJob", "status"), ("Event", None)]


def test_a_gang_that_does_not_fit_is_queued_without_pods(api: fake.FakeApi, controller: trainingjob.Controller) -> None:
    api.add(TRAINING_JOBS, submitted(workers=3))

    reconcile(controller)

    assert job_status(api)["phase"] == "Queued"
    assert created(api, "Pod") == []


def test_a_failed_worker_restarts_the_whole_gang_after_the_back_off(
    api: fake.FakeApi, controller: trainingjob.Controller, clock: fake.ManualClock
) -> None:
    running_gang(api, controller)
    assert job_status(api)["phase"] == "Running"
    kubelet_reports(api, worker_pods(api)[1], "Failed", exit_code=1)

    reconcile(controller)
    assert worker_pods(api) == []
    assert job_status(api)["restarts"] == 1
    assert "Restarting" in [event["reason"] for event in api.events(about=NAME)]

    clock.advance(BACKOFF_SECONDS / 2)
    reconcile(controller)
    assert worker_pods(api) == []

    clock.advance(BACKOFF_SECONDS)
    reconcile(controller)
    attempts = {pod["metadata"]["labels"][workers.ATTEMPT_LABEL] for pod in worker_pods(api)}
    assert (len(worker_pods(api)), attempts) == (2, {"1"})
    # The restarted gang's Service was there already: its create was a conflict, and ignored.
    assert [service["metadata"]["name"] for service in api.list(client.SERVICES, fx.NAMESPACE)] == [NAME]


def finished_job_owning_its_children(api: fake.FakeApi, ttl: int) -> Object:
    """A job that succeeded at T0, with its pods, Service and the ModelVersion it registered."""
    status = {"phase": "Succeeded", "completionTime": fx.stamp(fx.T0), "restarts": 0}
    job = api.add(TRAINING_JOBS, {**submitted(ttlSecondsAfterFinished=ttl), "status": status})[0]
    owner = {"apiVersion": job["apiVersion"], "kind": job["kind"], "name": NAME, "uid": job["metadata"]["uid"]}

    def owned(name: str, **extra: Any) -> Object:
        return {"metadata": {"name": name, "namespace": fx.NAMESPACE, "ownerReferences": [owner], **extra}}

    labels = {workers.JOB_LABEL: NAME}
    api.add(client.PODS, *(owned(workers.worker_name(NAME, rank), labels=labels) for rank in range(2)))
    api.add(client.SERVICES, owned(NAME))
    api.add(MODEL_VERSIONS, {"apiVersion": MODEL_VERSIONS.api_version, "kind": "ModelVersion", **owned("resnet-v1")})
    return job


def test_a_finished_job_lives_until_its_ttl(
    api: fake.FakeApi, controller: trainingjob.Controller, clock: fake.ManualClock
) -> None:
    finished_job_owning_its_children(api, ttl=60)
    clock.now = fx.T0 + datetime.timedelta(seconds=59)

    reconcile(controller)

    assert api.get(TRAINING_JOBS, fx.NAMESPACE, NAME) is not None
    assert [action for action in api.actions if action.verb == "delete"] == []


def test_a_finished_job_past_its_ttl_is_deleted_but_its_model_version_is_orphaned_not_deleted(
    api: fake.FakeApi, controller: trainingjob.Controller, clock: fake.ManualClock
) -> None:
    finished_job_owning_its_children(api, ttl=60)
    clock.now = fx.T0 + datetime.timedelta(seconds=60)

    reconcile(controller)

    assert api.get(TRAINING_JOBS, fx.NAMESPACE, NAME) is None
    assert worker_pods(api) == []
    assert api.get(client.SERVICES, fx.NAMESPACE, NAME) is None
    model_version = api.get(MODEL_VERSIONS, fx.NAMESPACE, "resnet-v1")
    assert model_version is not None
    assert "ownerReferences" not in model_version["metadata"]
    assert fake.Action("delete", "TrainingJob", fx.NAMESPACE, NAME) in api.actions


def test_admission_lists_the_cluster_once_and_then_reads_what_watches_fed(
    api: fake.FakeApi, clock: fake.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = trainingjob.Controller(kube=api, clock=clock)
    cluster_lists: list[str] = []
    listing = api.list

    def counted(resource: client.Resource, namespace: str | None, label_selector: str | None = None) -> list[Object]:
        if namespace is None:
            cluster_lists.append(resource.plural)
        return listing(resource, namespace, label_selector)

    monkeypatch.setattr(api, "list", counted)
    api.add(TRAINING_JOBS, submitted())
    reconcile(controller)
    second = api.add(TRAINING_JOBS, fx.job_body("second", workers=1, resources={"gpus": {"count": 4}}))[0]
    controller.watched("trainingjob", "ADDED", second)

    controller.reconcile(fx.NAMESPACE, "second")

    assert sorted(cluster_lists) == ["nodes", "pods", "priorityclasses", "resourcequotas", "trainingjobs"]
    second_status = (api.get(TRAINING_JOBS, fx.NAMESPACE, "second") or {})["status"]
    assert second_status["phase"] == "Queued"


def test_a_queued_job_is_woken_when_the_job_holding_its_gpus_finishes(
    api: fake.FakeApi, controller: trainingjob.Controller
) -> None:
    running_gang(api, controller)
    api.add(TRAINING_JOBS, fx.job_body("next", workers=2, resources={"gpus": {"count": 4}}))
    controller.reconcile(fx.NAMESPACE, "next")
    timeout = fx.T0 + datetime.timedelta(seconds=600)
    assert controller.wakeups.pending()[(fx.NAMESPACE, "next")] == timeout

    for pod in worker_pods(api):
        kubelet_reports(api, pod, "Succeeded")
        controller.watched("pod", "MODIFIED", api.get(client.PODS, fx.NAMESPACE, pod["metadata"]["name"]) or {})
    reconcile(controller)

    assert job_status(api)["phase"] == "Succeeded"
    assert (fx.NAMESPACE, "next") in controller.wakeups.due(fx.T0)


@pytest.mark.parametrize(
    ("wishes", "due_at_30", "due_at_90"),
    [
        pytest.param([("a", 60)], [], ["a"], id="one-deadline"),
        pytest.param([("a", 60), ("a", 20)], ["a"], [], id="an-earlier-one-wins"),
        pytest.param([("a", 20), ("a", 60)], ["a"], [], id="a-later-one-never-cancels-an-earlier"),
        pytest.param([("a", 20), ("a", None)], ["a"], [], id="none-cancels-nothing"),
        pytest.param([("b", 80), ("a", 10)], ["a"], ["b"], id="earliest-first"),
    ],
)
def test_wakeups(wishes: list[tuple[str, int | None]], due_at_30: list[str], due_at_90: list[str]) -> None:
    wakeups = trainingjob.Wakeups()
    for name, seconds in wishes:
        wakeups.at(("ml", name), None if seconds is None else fx.at(seconds))

    first, then = wakeups.due(fx.at(30)), wakeups.due(fx.at(90))

    assert ([name for _, name in first], [name for _, name in then]) == (due_at_30, due_at_90)


def test_wakeups_for_events_come_before_those_whose_time_came_one_at_a_time() -> None:
    wakeups = trainingjob.Wakeups()
    wakeups.at(("ml", "admitted-gang-to-make"), fx.at(10))
    wakeups.now([("ml", "new-job")])
    wakeups.at(("ml", "later"), fx.at(40))

    taken = [wakeups.due(fx.at(30), limit=1) for _ in range(3)]

    assert taken == [[("ml", "new-job")], [("ml", "admitted-gang-to-make")], []]


def test_a_stream_of_events_lets_a_due_deadline_through_after_so_many_in_a_row() -> None:
    wakeups = trainingjob.Wakeups()
    wakeups.at(("ml", "deadline"), fx.at(10))
    wakeups.now([("ml", f"event-{index}") for index in range(trainingjob.EVENTS_BEFORE_A_DEADLINE + 5)])

    taken = [name for _, name in wakeups.due(fx.at(30))]

    assert taken.index("deadline") == trainingjob.EVENTS_BEFORE_A_DEADLINE
    assert len(taken) == trainingjob.EVENTS_BEFORE_A_DEADLINE + 6


def test_the_wakeup_runner_hands_a_job_to_a_worker_only_when_one_is_free(
    api: fake.FakeApi, clock: fake.ManualClock
) -> None:
    reconciled: list[str] = []
    one_more_free = threading.Semaphore(0)

    class Busy(trainingjob.Controller):
        def wake(self, namespace: str, name: str) -> None:
            reconciled.append(name)
            if name.startswith("busy"):
                one_more_free.acquire(timeout=10)

    controller = Busy(kube=api, clock=clock)
    controller.wakeups.now([("ml", f"busy-{index}") for index in range(trainingjob.WAKE_WORKERS)])
    controller.wakeups.at(("ml", "due-by-time"), fx.T0)
    controller.start()
    try:
        eventually(lambda: len(reconciled) == trainingjob.WAKE_WORKERS, "every worker busy")
        controller.wakeups.now([("ml", "event")])  # later, but first: nothing was taken while all were busy
        one_more_free.release()
        eventually(lambda: len(reconciled) == trainingjob.WAKE_WORKERS + 2, "both taken by the one free worker")
    finally:
        one_more_free.release(trainingjob.WAKE_WORKERS)
        controller.stop()

    assert reconciled[-2:] == ["event", "due-by-time"]


def test_on_standby_the_wakeups_reconcile_nothing_and_taking_over_starts_from_what_the_cluster_holds(
    api: fake.FakeApi, clock: fake.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peering, "POLL_SECONDS", 0.01)
    reconciled: list[str] = []
    asked: list[bool] = []
    kopf_lets_it_act = threading.Event()

    def acting() -> bool:
        asked.append(kopf_lets_it_act.is_set())
        return asked[-1]

    class Recording(trainingjob.Controller):
        def reconcile(self, namespace: str, name: str) -> None:
            reconciled.append(name)

    controller = Recording(kube=api, clock=clock, acting=acting)
    controller.sync()
    # What it saw before standing by: a worker that used all of gpu-a, deleted while its watches
    # were paused, so it never saw it go.
    gone = {
        "metadata": {"name": "gone", "namespace": fx.NAMESPACE, "resourceVersion": "1"},
        "spec": {"nodeName": "gpu-a", "containers": [{"name": "c", "resources": {"requests": {fx.GPU: "4"}}}]},
        "status": {"phase": "Running"},
    }
    controller.watched("pod", None, gone)
    assert controller.inventory.free["gpu-a"][fx.GPU] == 0
    api.add(
        TRAINING_JOBS, fx.job_body("queued", status={"phase": "Queued"}, workers=1, resources={"gpus": {"count": 1}})
    )
    finished = fx.job_body("finished", status={"phase": "Succeeded"}, workers=1, resources={"gpus": {"count": 1}})
    api.add(TRAINING_JOBS, finished)  # only a take-over that reconciles every job wakes it
    controller.wakeups.at((fx.NAMESPACE, "deadline-passed"), fx.T0)
    controller.start()
    try:
        eventually(lambda: len(asked) >= 3, "the runner asking whether it may act, on standby")
        assert reconciled == []
        kopf_lets_it_act.set()
        eventually(lambda: {"queued", "deadline-passed", "finished"} <= set(reconciled), "every job reconciled")
    finally:
        controller.stop()

    free = [controller.inventory.free[node][fx.GPU] for node in ("gpu-a", "gpu-b")]
    assert sum(free) == 7  # the queued job holds one GPU; the gone worker none


def test_an_event_that_comes_while_a_take_over_lists_the_cluster_reaches_its_new_inventory(
    api: fake.FakeApi, clock: fake.ManualClock
) -> None:
    spec = {"nodeName": "gpu-a", "containers": [{"name": "c", "resources": {"requests": {fx.GPU: "4"}}}]}
    [leaving] = api.add(client.PODS, {"metadata": {"name": "leaving", "namespace": fx.NAMESPACE}, "spec": spec})

    class EventWhileListing(ReadCountingApi):
        def list(self, resource: client.Resource, namespace: str | None, label_selector: str | None = None) -> Any:
            if resource is TRAINING_JOBS:  # the pods are listed already; their deletion comes now
                gone = {**leaving, "metadata": {**leaving["metadata"], "resourceVersion": "999999"}}
                controller.watched("pod", "DELETED", gone)
            return api.list(resource, namespace, label_selector)

    controller = trainingjob.Controller(kube=EventWhileListing(namespace=fx.NAMESPACE, clock=clock), clock=clock)

    controller.take_over()

    assert [controller.inventory.free[node][fx.GPU] for node in ("gpu-a", "gpu-b")] == [4, 4]


def test_events_before_the_first_list_admit_nothing(api: fake.FakeApi, clock: fake.ManualClock) -> None:
    controller = trainingjob.Controller(kube=api, clock=clock)
    queued = fx.job_body("waiting", status={"phase": "Queued"}, workers=1, resources={"gpus": {"count": 4}})

    controller.watched("trainingjob", None, queued)  # new to the controller: it wakes to be reconciled
    woken = controller.wakeups.pending()
    controller.watched("node", None, fx.node("gpu-c", gpus=4))  # capacity appears: a running pod may fill it

    assert controller.wakeups.pending() == woken
    assert controller.inventory.reserved((fx.NAMESPACE, "waiting")) == {}


def test_the_first_list_admits_and_wakes_the_queued_jobs_that_fit(api: fake.FakeApi, clock: fake.ManualClock) -> None:
    controller = trainingjob.Controller(kube=api, clock=clock)
    api.add(
        TRAINING_JOBS, fx.job_body("waiting", status={"phase": "Queued"}, workers=1, resources={"gpus": {"count": 4}})
    )

    controller.sync()

    assert (fx.NAMESPACE, "waiting") in controller.wakeups.due(fx.T0)


def test_a_watch_event_older_than_the_controllers_own_status_write_is_not_planned_from(
    api: fake.FakeApi, controller: trainingjob.Controller, clock: fake.ManualClock
) -> None:
    api.add(TRAINING_JOBS, submitted())
    before_admission = api.get(TRAINING_JOBS, fx.NAMESPACE, NAME)
    assert before_admission is not None
    reconcile(controller)
    controller.watched("trainingjob", "MODIFIED", before_admission)  # its watch event, arriving late
    clock.advance(1)

    reconcile(controller)  # planned from that event, its status write would be refused (409)

    assert job_status(api)["phase"] == "Admitted"
    assert created(api, "Pod") == [workers.worker_name(NAME, 0), workers.worker_name(NAME, 1)]


def test_a_job_deleted_while_it_is_planned_is_forgotten_not_tried_again(
    api: fake.FakeApi, clock: fake.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    controller = trainingjob.Controller(kube=api, clock=clock)  # given no watch events: its deletion's is late
    (body,) = api.add(TRAINING_JOBS, submitted())
    controller.watched("trainingjob", "ADDED", body)
    controller.wakeups.due(controller.clock())
    api.delete(TRAINING_JOBS, fx.NAMESPACE, NAME)

    controller.wake(fx.NAMESPACE, NAME)  # planned from the job as kept, its status write finds none
    for key in controller.wakeups.due(clock()):  # woken meanwhile, as admitted: it finds no job
        controller.wake(*key)

    assert controller.wakeups.pending() == {}
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_a_reconcile_that_fails_unexpectedly_is_logged_and_tried_again_after_the_retry_delay(
    api: fake.FakeApi, clock: fake.ManualClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = trainingjob.Controller(kube=api, clock=clock)
    (body,) = api.add(TRAINING_JOBS, submitted())
    controller.watched("trainingjob", "ADDED", body)
    controller.sync()
    controller.wakeups.due(clock())
    with monkeypatch.context() as broken:
        broken.setattr(plan, "plan", lambda *_: {}["a fault of Kiln's own"])

        controller.wake(fx.NAMESPACE, NAME)

    retry_at = clock() + datetime.timedelta(seconds=trainingjob.RETRY_SECONDS)
    assert controller.wakeups.pending() == {(fx.NAMESPACE, NAME): retry_at}
    [record] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError
    clock.advance(trainingjob.RETRY_SECONDS)
    for key in controller.wakeups.due(clock()):
        controller.wake(*key)
    assert job_status(api)["phase"] == "Admitted"


class QuotaRefusingApi(ReadCountingApi):
    """The in-memory API server, refusing worker pods as a ResourceQuota does while `refusing`."""

    refusing = False

    def create(self, resource: client.Resource, body: Mapping[str, Any]) -> Object:
        if resource == client.PODS and self.refusing:
            refusal = (
                f'pods "{body["metadata"]["name"]}" is forbidden: exceeded quota: gpus, requested:'
                " requests.nvidia.com/gpu=4, used: requests.nvidia.com/gpu=0, limited: requests.nvidia.com/gpu=0"
            )
            raise client.ApiError(403, "Forbidden", refusal)
        return super().create(resource, body)


def gpu_quota(gpus: int) -> Object:
    hard = {"requests.nvidia.com/gpu": str(gpus)}
    return {"metadata": {"name": "gpus", "namespace": fx.NAMESPACE}, "spec": {"hard": hard}, "status": {"hard": hard}}


def test_a_gang_admitted_before_its_quota_was_seen_is_queued_again_whole_when_a_worker_is_refused(
    clock: fake.ManualClock,
) -> None:
    api = QuotaRefusingApi(namespace=fx.NAMESPACE, clock=clock)
    api.add(client.NODES, fx.node("gpu-a", gpus=4, product=fx.A100), fx.node("gpu-b", gpus=4, product=fx.A100))
    api.add(TRAINING_JOBS, submitted())
    controller = WatchedController(kube=api, clock=clock)
    reconcile(controller)
    assert job_status(api)["phase"] == "Admitted"
    api.add(client.RESOURCE_QUOTAS, gpu_quota(0))  # created with the job: its event not come yet
    api.refusing = True

    controller.wake(fx.NAMESPACE, NAME)  # the gang is made: its first worker is refused
    controller.wake(fx.NAMESPACE, NAME)  # queued again, whole
    assert job_status(api)["phase"] == "Queued"
    assert job_status(api)["message"].startswith('quota: a worker was refused: pods "resnet-worker-0" is forbidden')
    for key in controller.wakeups.due(clock()):
        controller.wake(*key)  # asks for admission again, which knows the quota now

    assert job_status(api)["phase"] == "Queued"
    assert job_status(api)["message"].startswith("quota: the job needs 8 nvidia.com/gpu, 0 of 0 left")
    assert worker_pods(api) == []

    api.refusing = False
    raised = api.patch(
        client.RESOURCE_QUOTAS, fx.NAMESPACE, "gpus", {"spec": {"hard": {"requests.nvidia.com/gpu": "8"}}}
    )
    controller.watched("resourcequota", "MODIFIED", raised)
    for _ in range(3):
        for key in controller.wakeups.due(clock()):
            controller.wake(*key)

    assert job_status(api)["phase"] == "Admitted"
    assert len(worker_pods(api)) == 2


def test_only_a_pod_event_that_changes_the_worker_as_planned_wakes_its_job(
    api: fake.FakeApi, controller: trainingjob.Controller, clock: fake.ManualClock
) -> None:
    api.add(TRAINING_JOBS, submitted())
    admitted_and_made(controller)
    controller.wakeups.due(clock() + datetime.timedelta(days=1))
    pod = api.get(client.PODS, fx.NAMESPACE, workers.worker_name(NAME, 0))
    assert pod is not None

    bound = {**pod, "spec": {**pod["spec"], "nodeName": "gpu-a"}}
    controller.watched("pod", "MODIFIED", bound)
    assert (fx.NAMESPACE, NAME) not in controller.wakeups.pending()

    controller.watched("pod", "MODIFIED", {**bound, "status": {"phase": "Running"}})
    assert (fx.NAMESPACE, NAME) in controller.wakeups.pending()
