"""The TrainingJob lifecycle plan, with time injected: admission and queueing, the gang timeout,
starting and running, gang restarts with back-off, the backoff limit and its log lines, the active
deadline, success and the ModelVersion it registers, suspend and resume, time to live, and the
status (phase, conditions, Events, observedGeneration) that tells the story."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import pytest
import training_fixtures as fx
from training_fixtures import T0, at, worker

from kiln.api import trainingjob
from kiln.training import admission, plan

Object = dict[str, Any]
Phase = trainingjob.TrainingJobPhase
ADMIT = admission.Admission(True, "all 2 workers fit the free capacity")
WAIT = admission.Admission(
    False, "waiting for capacity: the job needs 8 nvidia.com/gpu (0 free) on the 2 nodes it may use"
)
SETTINGS = plan.Settings(trainer_image="ghcr.io/kiln-dev/kiln:0.1.0", backoff_seconds=10, max_backoff_seconds=360)
ARTIFACT = {"uri": "pvc://kiln-models/resnet/2.0.0/model.pt", "sha256": fx.DIGEST, "format": "torchscript"}
OUTPUT = {"modelName": "resnet", "version": "2.0.0"}
GPU_JOB = {"workers": 2, "resources": {"gpus": {"count": 4}}}


def status(phase: Phase, **fields: Any) -> Object:
    """A status as an earlier plan wrote it, in wire form."""
    wire: Object = {"phase": phase.value}
    for key, value in fields.items():
        wire[key] = value.isoformat() if isinstance(value, datetime.datetime) else value
    return wire


def body(phase: Phase | None = None, *, name: str = "resnet", state: Object | None = None, **spec: Any) -> Object:
    merged = {**GPU_JOB, **spec}
    if phase is not None:
        state = {**status(phase), **(state or {})}
    return fx.job_body(name, status=state, **merged)


def run(
    manifest: Object,
    now: datetime.datetime = T0,
    *,
    pods: tuple[plan.Worker, ...] = (),
    settings: plan.Settings = SETTINGS,
    **observed: Any,
) -> plan.Plan:
    return plan.plan(plan.Observed(body=manifest, workers=pods, **observed), now, settings)


def applied(manifest: Object, result: plan.Plan) -> Object:
    return {**manifest, "status": result.status.to_wire()}


def started(
    manifest: Object, now: datetime.datetime = T0, *, answer: admission.Admission = ADMIT, **observed: Any
) -> plan.Plan:
    """The job's turn after its admission was written: the one that makes its gang."""
    admitted = run(manifest, now, admission=answer, **observed)
    assert admitted.create == []  # the decision is written alone
    assert admitted.wake_at == now
    return run(applied(manifest, admitted), now, **observed)


def kinds(result: plan.Plan) -> list[str]:
    return [obj["kind"] for obj in result.create]


def created_pods(result: plan.Plan) -> list[Object]:
    return [obj for obj in result.create if obj["kind"] == "Pod"]


def events(result: plan.Plan) -> list[tuple[str, str]]:
    return [(event.type, event.reason) for event in result.events]


def condition(result: plan.Plan, condition_type: str) -> Any:
    return next(c for c in result.status.conditions if c.type == condition_type)


def truths(result: plan.Plan) -> dict[str, str]:
    return {c.type: c.status.value for c in result.status.conditions}


def running(size: int = 2, *, attempt: int = 0) -> tuple[plan.Worker, ...]:
    return tuple(worker(rank, "Running", attempt=attempt) for rank in range(size))


def result_json(**fields: Any) -> str:
    return json.dumps({"metrics": {"accuracy": 0.91, "loss": 0.3}, **fields})


# -- admission and the queue -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "phase",
    [pytest.param(None, id="new"), pytest.param(Phase.PENDING, id="pending"), pytest.param(Phase.QUEUED, id="queued")],
)
def test_a_job_waiting_for_admission_asks_the_gang_scheduler_first(phase: Phase | None) -> None:
    state = {"queuedTime": T0.isoformat()} if phase is Phase.QUEUED else None
    result = run(body(phase, state=state), at(30))

    assert result.needs_admission
    assert result.create == []
    assert result.events == []
    assert result.status.phase == (phase or Phase.PENDING)


def test_admission_is_written_alone_and_the_jobs_next_turn_makes_its_gang() -> None:
    manifest = body(workers=4)

    admitted = run(manifest, at(3), admission=ADMIT)
    making = run(applied(manifest, admitted), at(3))

    assert admitted.status.phase == Phase.ADMITTED
    assert not admitted.needs_admission
    assert admitted.create == []
    assert admitted.wake_at == at(3)
    assert events(admitted) == [("Normal", "Admitted")]
    assert admitted.status.workers.desired == 4
    assert truths(admitted)["Admitted"] == "True"
    assert kinds(making) == ["Service", "ServiceAccount", "Role", "RoleBinding", "Pod", "Pod", "Pod", "Pod"]
    assert [pod["metadata"]["name"] for pod in created_pods(making)] == [f"resnet-worker-{rank}" for rank in range(4)]
    assert making.events == []
    assert making.wake_at is None


def test_the_admitted_event_says_who_admitted_the_gang_and_why() -> None:
    result = run(body(), admission=ADMIT)

    [event] = result.events
    assert "builtin gang scheduler" in event.message
    assert "all 2 workers fit the free capacity" in event.message


@pytest.mark.parametrize(
    ("spec", "observed", "expected"),
    [
        pytest.param({}, {}, ["Service"], id="container-job"),
        pytest.param({"checkpoint": {"size": "100Gi"}}, {}, ["Service", "PersistentVolumeClaim"], id="checkpoint"),
        pytest.param({"checkpoint": {"claimName": "shared"}}, {}, ["Service"], id="users-checkpoint-claim"),
        pytest.param({"gangScheduling": {"scheduler": "volcano"}}, {}, ["Service", "PodGroup"], id="volcano"),
        pytest.param({"gangScheduling": {"scheduler": "coscheduling"}}, {}, ["Service", "PodGroup"], id="coscheduling"),
        pytest.param(
            {
                "workers": 1,
                "resources": {},
                "sklearn": fx.sklearn_spec(),
                "output": {"modelName": "iris", "version": "1.0.0"},
            },
            {"model_store_exists": False, "trainer_account_exists": False},
            ["Service", "PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding"],
            id="sklearn-job-with-output-and-nothing-yet",
        ),
        pytest.param(
            {
                "workers": 1,
                "resources": {},
                "sklearn": fx.sklearn_spec(),
                "output": {"modelName": "iris", "version": "1.0.0"},
            },
            {"model_store_exists": True, "trainer_account_exists": True},
            ["Service"],
            id="sklearn-job-with-store-and-account",
        ),
        pytest.param(
            {"workers": 1, "resources": {}, "sklearn": fx.sklearn_spec()},
            {"model_store_exists": False, "trainer_account_exists": False},
            ["Service", "ServiceAccount", "Role", "RoleBinding"],
            id="sklearn-job-without-output-still-runs-as-kiln-trainer",
        ),
        pytest.param(
            {
                "workers": 1,
                "resources": {},
                "sklearn": fx.sklearn_spec(),
                "serviceAccountName": "ml-bot",
                "output": {"modelName": "iris", "version": "1.0.0"},
            },
            {"model_store_exists": False, "trainer_account_exists": False},
            ["Service", "PersistentVolumeClaim"],
            id="sklearn-job-with-its-own-account",
        ),
        pytest.param(
            {"output": OUTPUT},
            {"model_store_exists": False, "trainer_account_exists": False},
            ["Service"],
            id="container-job-needs-neither-store-nor-account",
        ),
    ],
)
def test_children_created_on_admission(spec: Object, observed: Object, expected: list[str]) -> None:
    result = started(body(**spec), **observed)

    workers_own = {"Pod", "resnet-workers"}  # the pods, and their access to themselves (tested below)
    created = [obj for obj in result.create if not {obj["kind"], obj["metadata"]["name"]} & workers_own]
    assert [obj["kind"] for obj in created] == expected


@pytest.mark.parametrize(
    ("spec", "account", "expected"),
    [
        pytest.param({}, "resnet-workers", ["ServiceAccount", "Role", "RoleBinding"], id="container-job-own-account"),
        pytest.param({"serviceAccountName": "ml-bot"}, "ml-bot", ["Role", "RoleBinding"], id="users-account"),
        pytest.param(
            {"workers": 1, "resources": {}, "sklearn": fx.sklearn_spec()},
            "kiln-trainer",
            ["Role", "RoleBinding"],
            id="sklearn-as-kiln-trainer",
        ),
    ],
)
def test_workers_get_their_access_to_their_own_pods_before_the_pods(
    spec: Object, account: str, expected: list[str]
) -> None:
    result = started(body(**spec))

    access = [obj for obj in result.create if obj["metadata"]["name"] == "resnet-workers"]
    assert [obj["kind"] for obj in access] == expected
    first_pod = kinds(result).index("Pod")
    assert all(result.create.index(obj) < first_pod for obj in access)
    binding = access[-1]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": fx.NAMESPACE}]
    assert {pod["spec"]["serviceAccountName"] for pod in created_pods(result)} == {account}


def test_admission_of_a_resumed_job_labels_its_workers_with_the_restart_count() -> None:
    result = started(body(Phase.PENDING, state={"restarts": 2}))

    assert [pod["metadata"]["labels"]["kiln.dev/attempt"] for pod in created_pods(result)] == ["2", "2"]


def test_a_gang_that_does_not_fit_is_queued_with_the_reason_and_the_time_it_began_waiting() -> None:
    first = run(body(), at(5), admission=WAIT)
    later = run(applied(body(), first), at(65), admission=WAIT)

    assert first.status.phase == Phase.QUEUED
    assert first.status.message == WAIT.reason
    assert first.status.queued_time == at(5)
    assert first.create == []
    assert events(first) == [("Normal", "Queued")]
    assert later.status.queued_time == at(5)
    assert later.events == []


@pytest.mark.parametrize(
    ("seconds", "phase"),
    [
        pytest.param(299, Phase.QUEUED, id="just-before"),
        pytest.param(300, Phase.FAILED, id="at-the-timeout"),
    ],
)
def test_gang_timeout_while_queued(seconds: int, phase: Phase) -> None:
    manifest = body(Phase.QUEUED, state={"queuedTime": T0.isoformat()}, gangScheduling={"timeoutSeconds": 300})

    result = run(manifest, at(seconds), admission=WAIT)

    assert result.status.phase == phase
    if phase is Phase.FAILED:
        assert condition(result, "Failed").reason == "GangTimeout"
        assert events(result) == [("Warning", "GangTimeout")]
        assert "timeoutSeconds (300s)" in (result.status.message or "")
        assert WAIT.reason in (result.status.message or "")
        assert result.status.completion_time == at(seconds)


def test_admission_clears_the_queued_time() -> None:
    manifest = body(Phase.QUEUED, state={"queuedTime": T0.isoformat()})

    result = run(manifest, at(100), admission=ADMIT)

    assert result.status.phase == Phase.ADMITTED
    assert result.status.queued_time is None
    assert events(result) == [("Normal", "Admitted")]


def test_workers_left_unscheduled_past_the_timeout_fail_the_gang() -> None:
    unscheduled = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    pods = (worker(0, "Running", created=T0), worker(1, "Pending", created=T0, reason=unscheduled))
    manifest = body(Phase.ADMITTED, gangScheduling={"timeoutSeconds": 120})

    waiting = run(manifest, at(119), pods=pods)
    timed_out = run(manifest, at(120), pods=pods)

    assert waiting.status.phase == Phase.ADMITTED
    assert waiting.status.message == f"1 of 2 workers running; resnet-worker-1: {unscheduled}"
    assert timed_out.status.phase == Phase.FAILED
    assert condition(timed_out, "Failed").reason == "GangTimeout"
    assert timed_out.delete_pods == ["resnet-worker-0", "resnet-worker-1"]


# -- running -----------------------------------------------------------------------------------------


def test_all_workers_running_makes_the_job_running_once() -> None:
    manifest = body(Phase.ADMITTED)

    first = run(manifest, at(40), pods=running())
    again = run(applied(manifest, first), at(100), pods=running())

    assert first.status.phase == Phase.RUNNING
    assert first.status.start_time == at(40)
    assert events(first) == [("Normal", "Running")]
    assert (first.status.workers.active, first.status.workers.ready) == (2, 2)
    assert again.status.start_time == at(40)
    assert again.events == []
    assert again.create == []
    assert again.delete_pods == []


def test_a_job_that_passes_two_phases_in_one_reconcile_announces_each() -> None:
    # Resumed and admitted at once: it says both what happened and in which order.
    result = run(body(Phase.SUSPENDED), at(40), admission=ADMIT)

    assert result.status.phase == Phase.ADMITTED
    assert events(result) == [("Normal", "Resumed"), ("Normal", "Admitted")]
    assert "builtin gang scheduler" in result.events[1].message


ADMISSION_MESSAGE = "admitted by the builtin gang scheduler: all 2 workers fit the free capacity"


@pytest.mark.parametrize(
    ("pods", "message"),
    [
        pytest.param((), ADMISSION_MESSAGE, id="none-yet"),
        pytest.param((worker(0, "Pending"), worker(1, "Pending")), ADMISSION_MESSAGE, id="all-starting"),
        pytest.param((worker(0, "Running"), worker(1, "Pending")), "1 of 2 workers running", id="one"),
    ],
)
def test_an_admitted_job_keeps_its_admission_message_until_a_worker_runs(
    pods: tuple[plan.Worker, ...], message: str
) -> None:
    result = run(body(Phase.ADMITTED, state={"message": ADMISSION_MESSAGE}), at(10), pods=pods)

    assert result.status.phase == Phase.ADMITTED
    assert result.status.message == message
    assert result.events == []


def test_admission_counts_the_workers_it_makes_room_for_so_making_them_writes_no_status() -> None:
    manifest = body(Phase.PENDING)

    admitted = run(manifest, admission=ADMIT)
    making = run(applied(manifest, admitted))

    assert (admitted.status.workers.active, admitted.status.workers.ready) == (2, 0)
    assert len(created_pods(making)) == 2
    assert making.status.to_wire() == admitted.status.to_wire()


def test_a_job_whose_workers_run_before_its_admission_is_seen_runs_on_its_next_turn() -> None:
    # Its Admitted status write was refused after its workers were made: admitted again, it finds
    # them all running on the turn after.
    manifest = body(Phase.PENDING)

    admitted = run(manifest, at(40), pods=running(), admission=ADMIT)
    then = run(applied(manifest, admitted), at(40), pods=running())

    assert (admitted.status.phase, admitted.create) == (Phase.ADMITTED, [])
    assert "builtin gang scheduler" in admitted.events[0].message
    assert (then.status.phase, events(then), then.create) == (Phase.RUNNING, [("Normal", "Running")], [])


def test_only_missing_workers_are_created() -> None:
    result = run(body(Phase.ADMITTED, workers=3), pods=(worker(0, "Pending"),))

    assert [pod["metadata"]["name"] for pod in created_pods(result)] == ["resnet-worker-1", "resnet-worker-2"]


def test_a_gang_that_has_workers_does_not_make_its_children_again() -> None:
    spec = {"workers": 3, "checkpoint": {"size": "100Gi"}, "gangScheduling": {"scheduler": "volcano"}}

    result = run(body(Phase.ADMITTED, **spec), pods=(worker(0, "Pending"),))

    assert {obj["kind"] for obj in result.create} & {"Service", "PersistentVolumeClaim", "PodGroup"} == set()
    assert len(created_pods(result)) == 2


# -- restarts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restarts", "delay"),
    [
        pytest.param(0, 10, id="first-restart"),
        pytest.param(1, 20, id="second-doubles"),
        pytest.param(2, 40, id="third"),
        pytest.param(5, 320, id="sixth"),
        pytest.param(6, 360, id="capped"),
        pytest.param(9, 360, id="stays-capped"),
    ],
)
def test_a_failed_worker_restarts_the_whole_gang_after_a_doubling_back_off(restarts: int, delay: int) -> None:
    manifest = body(Phase.RUNNING, state={"restarts": restarts, "startTime": T0.isoformat()}, backoffLimit=10)
    pods = (worker(0, "Running", attempt=restarts), worker(1, "Failed", attempt=restarts, exit_code=1, reason="Error"))

    result = run(manifest, at(50), pods=pods)

    assert result.status.restarts == restarts + 1
    assert result.status.next_restart_time == at(50 + delay)
    assert result.status.phase == Phase.ADMITTED
    assert sorted(result.delete_pods) == ["resnet-worker-0", "resnet-worker-1"]
    assert created_pods(result) == []
    assert events(result) == [("Warning", "Restarting")]
    assert "resnet-worker-1 failed (exit code 1, Error)" in result.events[0].message
    assert f"restarting the whole gang in {delay}s (restart {restarts + 1} of 10)" in result.events[0].message


def test_a_restart_keeps_the_start_time_and_marks_the_job_not_running() -> None:
    manifest = body(Phase.RUNNING, state={"startTime": T0.isoformat()})
    pods = (worker(0, "Failed", exit_code=137, reason="OOMKilled"), worker(1, "Running"))

    result = run(manifest, at(50), pods=pods)

    assert result.status.start_time == T0
    assert truths(result)["Running"] == "False"
    assert truths(result)["Admitted"] == "True"
    assert condition(result, "Ready").reason == "Restarting"
    assert result.status.workers.failed == 1


def test_a_second_failure_before_the_job_ran_is_announced_again() -> None:
    manifest = body(Phase.ADMITTED, state={"restarts": 1})
    pods = (worker(0, "Failed", attempt=1, exit_code=2), worker(1, "Pending", attempt=1))

    result = run(manifest, at(50), pods=pods)

    assert result.status.restarts == 2
    assert events(result) == [("Warning", "Restarting")]


def restarting(next_restart: datetime.datetime) -> Object:
    return body(Phase.ADMITTED, state={"restarts": 1, "nextRestartTime": next_restart.isoformat()})


@pytest.mark.parametrize(
    ("now", "pods", "deleted", "created"),
    [
        pytest.param(at(5), (), [], 0, id="before-the-back-off-ends"),
        pytest.param(
            at(5),
            (worker(0, "Failed", exit_code=1), worker(1, "Running")),
            ["resnet-worker-0", "resnet-worker-1"],
            0,
            id="old-attempt-left",
        ),
        pytest.param(
            at(10),
            (worker(0, "Failed", exit_code=1), worker(1, "Running", deleting=True)),
            ["resnet-worker-0"],
            0,
            id="old-attempt-still-there-after-the-back-off",
        ),
        pytest.param(at(10), (worker(1, "Running", deleting=True),), [], 0, id="old-pod-still-terminating"),
        pytest.param(
            at(10), (worker(1, "Running", attempt=1, deleting=True),), [], 0, id="new-attempt-pod-terminating"
        ),
        pytest.param(at(10), (), [], 2, id="back-off-over-and-all-gone"),
    ],
)
def test_a_restarting_gang_starts_only_after_the_back_off_and_once_every_old_pod_is_gone(
    now: datetime.datetime, pods: tuple[plan.Worker, ...], deleted: list[str], created: int
) -> None:
    result = run(restarting(at(10)), now, pods=pods)

    assert result.delete_pods == deleted
    assert len(created_pods(result)) == created
    assert result.status.restarts == 1
    assert result.events == []


def test_a_restarted_gang_carries_the_new_attempt() -> None:
    result = run(restarting(at(10)), at(10))

    assert [pod["metadata"]["labels"]["kiln.dev/attempt"] for pod in created_pods(result)] == ["1", "1"]
    assert {
        v["value"]
        for pod in created_pods(result)
        for v in pod["spec"]["containers"][0]["env"]
        if v["name"] == "KILN_ATTEMPT"
    } == {"1"}
    assert result.status.next_restart_time is None


def test_a_worker_that_disappears_while_others_run_fails_the_attempt() -> None:
    manifest = body(Phase.RUNNING, state={"startTime": T0.isoformat()}, workers=3)

    result = run(manifest, at(60), pods=(worker(0, "Running"), worker(2, "Running")))

    assert result.status.restarts == 1
    assert result.status.next_restart_time == at(70)
    assert sorted(result.delete_pods) == ["resnet-worker-0", "resnet-worker-2"]
    assert created_pods(result) == []
    assert "worker(s) resnet-worker-1 disappeared while the gang ran" in (result.status.message or "")


def test_a_worker_that_is_evicted_counts_as_disappeared() -> None:
    manifest = body(Phase.RUNNING, state={"startTime": T0.isoformat()})

    result = run(manifest, at(60), pods=(worker(0, "Running"), worker(1, "Running", deleting=True)))

    assert result.status.restarts == 1
    assert result.delete_pods == ["resnet-worker-0"]


# -- the backoff limit -------------------------------------------------------------------------------


def spent(limit: int = 2) -> Object:
    return body(Phase.RUNNING, state={"restarts": limit, "startTime": T0.isoformat()}, backoffLimit=limit)


def test_when_restarts_are_spent_the_failed_workers_logs_are_read_first() -> None:
    pods = (worker(0, "Running", attempt=2), worker(1, "Failed", attempt=2, exit_code=1))

    result = run(spent(), at(90), pods=pods)

    assert result.needs_logs == "resnet-worker-1"
    assert result.status.phase == Phase.RUNNING
    assert result.status.restarts == 2
    assert result.events == []


def test_the_job_fails_with_the_exit_code_and_the_last_20_log_lines() -> None:
    logs = "\n".join(f"step {index:03d}" for index in range(1, 31)) + "\nRuntimeError: CUDA out of memory\n"
    pods = (worker(0, "Running", attempt=2), worker(1, "Failed", attempt=2, exit_code=1, reason="Error"))

    result = run(spent(), at(90), pods=pods, logs=logs)
    message = result.status.message or ""

    assert result.status.phase == Phase.FAILED
    assert result.needs_logs is None
    assert condition(result, "Failed").reason == "BackoffLimitExceeded"
    assert events(result) == [("Warning", "BackoffLimitExceeded")]
    assert message.startswith("resnet-worker-1 failed (exit code 1, Error); backoffLimit (2) restarts are spent.")
    assert message.endswith("step 030\nRuntimeError: CUDA out of memory")
    assert "step 012" in message
    assert "step 011" not in message
    assert result.status.restarts == 2
    assert result.status.completion_time == at(90)
    assert result.delete_pods == ["resnet-worker-0"]


def test_a_termination_message_saves_reading_the_logs() -> None:
    pods = (
        worker(0, "Failed", attempt=0, exit_code=3, message="Traceback (most recent call last):\nValueError: bad lr"),
    )

    result = run(body(Phase.RUNNING, workers=1, backoffLimit=0), at(5), pods=pods)

    assert result.needs_logs is None
    assert result.status.phase == Phase.FAILED
    assert (result.status.message or "").endswith(
        "Last log lines of resnet-worker-0:\nTraceback (most recent call last):\nValueError: bad lr"
    )


def test_a_disappeared_worker_past_the_limit_fails_without_logs() -> None:
    result = run(spent(), at(90), pods=(worker(1, "Running", attempt=2),))

    assert result.needs_logs is None
    assert result.status.phase == Phase.FAILED
    assert result.status.message == (
        "worker(s) resnet-worker-0 disappeared while the gang ran; backoffLimit (2) restarts are spent"
    )


# -- the active deadline -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "phase"),
    [pytest.param(3599, Phase.RUNNING, id="within"), pytest.param(3600, Phase.FAILED, id="exceeded")],
)
def test_active_deadline_counts_from_the_start(seconds: int, phase: Phase) -> None:
    manifest = body(Phase.RUNNING, state={"startTime": at(100).isoformat()}, activeDeadlineSeconds=3600)

    result = run(manifest, at(100 + seconds), pods=running())

    assert result.status.phase == phase
    if phase is Phase.FAILED:
        assert condition(result, "Failed").reason == "DeadlineExceeded"
        assert result.status.message == "the job ran longer than activeDeadlineSeconds (3600s)"
        assert sorted(result.delete_pods) == ["resnet-worker-0", "resnet-worker-1"]
        assert events(result) == [("Warning", "DeadlineExceeded")]


def test_the_deadline_deletes_only_pods_still_active() -> None:
    manifest = body(Phase.RUNNING, state={"startTime": T0.isoformat()}, workers=4, activeDeadlineSeconds=60)
    pods = (worker(0, "Running"), worker(1, "Succeeded"), worker(2, "Pending"), worker(3, "Running", deleting=True))

    result = run(manifest, at(60), pods=pods)

    assert result.delete_pods == ["resnet-worker-0", "resnet-worker-2"]


# -- success -----------------------------------------------------------------------------------------


def succeeded(message: str, *rest: plan.Worker) -> tuple[plan.Worker, ...]:
    return (worker(0, "Succeeded", exit_code=0, reason="Completed", message=message), *rest)


def test_rank_0_finishing_first_waits_for_its_peers() -> None:
    manifest = body(Phase.RUNNING, state={"startTime": T0.isoformat()})

    result = run(manifest, at(600), pods=succeeded(result_json(), worker(1, "Running")))

    assert result.status.phase == Phase.RUNNING
    assert result.delete_pods == []
    assert result.status.completion_time is None


def test_every_worker_succeeding_finishes_the_job_with_rank_0s_metrics() -> None:
    manifest = body(Phase.RUNNING, state={"startTime": T0.isoformat()})

    result = run(manifest, at(600), pods=succeeded(result_json(), worker(1, "Succeeded")))

    assert result.status.phase == Phase.SUCCEEDED
    assert result.status.metrics == {"accuracy": 0.91, "loss": 0.3}
    assert result.status.completion_time == at(600)
    assert result.register is None
    assert result.delete_pods == []
    assert events(result) == [("Normal", "Succeeded")]
    assert truths(result) == {
        "Admitted": "True",
        "Running": "False",
        "Succeeded": "True",
        "Failed": "False",
        "Suspended": "False",
        "Ready": "True",
    }


def test_a_container_job_registers_its_model_version_from_the_result() -> None:
    output = {**OUTPUT, "gates": [{"metric": "accuracy", "min": 0.9}], "requiredApprovals": 2}
    manifest = body(Phase.RUNNING, state={"startTime": T0.isoformat()}, output=output)
    reported = result_json(artifact=ARTIFACT, framework="pytorch", frameworkVersion="2.3.1")

    result = run(manifest, at(600), pods=succeeded(reported, worker(1, "Succeeded")))
    version = result.register

    assert result.status.phase == Phase.SUCCEEDED
    assert result.status.model_version == "resnet-2.0.0"
    assert "registered ModelVersion resnet-2.0.0" in (result.status.message or "")
    assert version is not None
    assert version["kind"] == "ModelVersion"
    assert version["metadata"]["name"] == "resnet-2.0.0"
    assert version["metadata"]["namespace"] == fx.NAMESPACE
    assert version["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "kiln",
        "kiln.dev/trainingjob": "resnet",
        "kiln.dev/model": "resnet",
    }
    assert [(ref["kind"], ref["uid"], ref["controller"]) for ref in version["metadata"]["ownerReferences"]] == [
        ("TrainingJob", fx.UID, True)
    ]
    spec = version["spec"]
    assert (spec["modelName"], spec["version"], spec["framework"], spec["frameworkVersion"]) == (
        "resnet",
        "2.0.0",
        "pytorch",
        "2.3.1",
    )
    assert spec["artifact"] == ARTIFACT
    assert spec["metrics"] == {"accuracy": 0.91, "loss": 0.3}
    assert spec["gates"] == [{"metric": "accuracy", "min": 0.9, "higherIsBetter": True}]
    assert spec["requiredApprovals"] == 2
    assert spec["lineage"]["trainingJob"] == "resnet"


@pytest.mark.parametrize(
    ("message", "model_version", "phase", "reason"),
    [
        pytest.param(
            result_json(artifact=ARTIFACT),
            {"metadata": {"name": "resnet-2.0.0", "ownerReferences": [{"kind": "TrainingJob", "uid": fx.UID}]}},
            Phase.SUCCEEDED,
            "Succeeded",
            id="registered-by-this-job-already",
        ),
        pytest.param(
            result_json(artifact=ARTIFACT),
            {"metadata": {"name": "resnet-2.0.0", "ownerReferences": [{"kind": "TrainingJob", "uid": "other-uid"}]}},
            Phase.FAILED,
            "VersionTaken",
            id="taken-by-another-job",
        ),
        pytest.param(
            result_json(artifact=ARTIFACT),
            {"metadata": {"name": "resnet-2.0.0"}},
            Phase.FAILED,
            "VersionTaken",
            id="taken-by-hand",
        ),
        pytest.param(result_json(), None, Phase.FAILED, "NoArtifact", id="result-without-artifact"),
        pytest.param("", None, Phase.FAILED, "NoArtifact", id="no-result-at-all"),
        pytest.param("training done, bye", None, Phase.FAILED, "InvalidResult", id="not-json"),
        pytest.param(
            json.dumps({"metrics": {"accuracy": "high"}}), None, Phase.FAILED, "InvalidResult", id="bad-metric"
        ),
        pytest.param(json.dumps({"accuracy": 0.9}), None, Phase.FAILED, "InvalidResult", id="unknown-field"),
    ],
)
def test_what_rank_0_reports_decides_the_outcome(
    message: str, model_version: Object | None, phase: Phase, reason: str
) -> None:
    manifest = body(Phase.RUNNING, state={"startTime": T0.isoformat()}, output=OUTPUT)

    result = run(manifest, at(600), pods=succeeded(message, worker(1, "Succeeded")), model_version=model_version)

    assert result.status.phase == phase
    assert condition(result, "Ready").reason == reason
    assert result.register is None
    assert events(result) == [("Warning" if phase is Phase.FAILED else "Normal", reason)]


def test_an_invalid_result_fails_even_without_output() -> None:
    result = run(body(Phase.RUNNING), at(600), pods=succeeded("{not json", worker(1, "Succeeded")))

    assert result.status.phase == Phase.FAILED
    assert (result.status.message or "").startswith("resnet-worker-0 wrote a result that is not a TrainingResult: ")


def test_a_failed_worker_beats_rank_0_succeeding() -> None:
    result = run(body(Phase.RUNNING), at(600), pods=succeeded(result_json(), worker(1, "Failed", exit_code=1)))

    assert result.status.phase == Phase.ADMITTED
    assert result.status.restarts == 1


# -- suspend and resume -----------------------------------------------------------------------------


def test_suspending_deletes_every_pod_and_keeps_the_state() -> None:
    manifest = body(Phase.RUNNING, state={"restarts": 2, "startTime": T0.isoformat()}, suspend=True, workers=3)
    pods = (
        worker(0, "Running", attempt=2),
        worker(1, "Succeeded", attempt=2),
        worker(2, "Running", attempt=2, deleting=True),
    )

    result = run(manifest, at(30), pods=pods)

    assert result.status.phase == Phase.SUSPENDED
    assert result.delete_pods == ["resnet-worker-0", "resnet-worker-1"]
    assert result.status.restarts == 2
    assert result.create == []
    assert not result.needs_admission
    assert events(result) == [("Normal", "Suspended")]
    assert truths(result)["Suspended"] == "True"
    assert truths(result)["Admitted"] == "False"


def test_a_suspended_job_wants_no_workers() -> None:
    manifest = body(Phase.RUNNING, state={"workers": {"desired": 2, "active": 2, "ready": 2}}, suspend=True)

    result = run(manifest, at(30), pods=running())

    assert result.status.workers.desired == 0


@pytest.mark.parametrize(
    "phase", [pytest.param(Phase.QUEUED, id="queued"), pytest.param(Phase.ADMITTED, id="restarting")]
)
def test_suspending_forgets_the_queue_and_the_back_off(phase: Phase) -> None:
    state = {"queuedTime": T0.isoformat(), "nextRestartTime": at(60).isoformat()}

    result = run(body(phase, state=state, suspend=True), at(30))

    assert result.status.phase == Phase.SUSPENDED
    assert (result.status.queued_time, result.status.next_restart_time) == (None, None)


def test_a_suspended_job_stays_quiet() -> None:
    manifest = body(Phase.SUSPENDED, state={"restarts": 1}, suspend=True)

    result = run(manifest, at(300))

    assert result.events == []
    assert result.delete_pods == []
    assert not result.needs_admission


def test_resuming_goes_back_through_admission_with_the_start_time_reset() -> None:
    manifest = body(Phase.SUSPENDED, state={"restarts": 1, "startTime": T0.isoformat()})

    asked = run(manifest, at(300))
    admitted = run(manifest, at(300), admission=ADMIT)
    making = started(manifest, at(300))

    assert asked.needs_admission
    assert asked.status.phase == Phase.PENDING
    assert asked.status.start_time is None
    assert asked.status.restarts == 1
    assert admitted.status.phase == Phase.ADMITTED
    assert admitted.status.start_time is None
    assert [pod["metadata"]["labels"]["kiln.dev/attempt"] for pod in created_pods(making)] == ["1", "1"]
    assert truths(admitted)["Suspended"] == "False"


# -- finished jobs and their time to live ------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "ttl", "seconds", "delete"),
    [
        pytest.param(Phase.SUCCEEDED, None, 10**6, False, id="no-ttl-keeps-forever"),
        pytest.param(Phase.SUCCEEDED, 300, 299, False, id="before-expiry"),
        pytest.param(Phase.SUCCEEDED, 300, 300, True, id="at-expiry"),
        pytest.param(Phase.FAILED, 300, 301, True, id="failed-job-expires-too"),
        pytest.param(Phase.FAILED, 0, 0, True, id="zero-ttl"),
    ],
)
def test_ttl_after_finished(phase: Phase, ttl: int | None, seconds: int, delete: bool) -> None:
    spec = {} if ttl is None else {"ttlSecondsAfterFinished": ttl}
    manifest = body(phase, state={"completionTime": at(1000).isoformat()}, **spec)

    result = run(manifest, at(1000 + seconds))

    assert result.delete_job is delete
    assert result.status.phase == phase
    assert result.events == []
    assert not result.needs_admission


def test_a_finished_job_ignores_suspend_and_cleans_up_stray_workers() -> None:
    manifest = body(Phase.FAILED, state={"completionTime": T0.isoformat()}, suspend=True)

    result = run(manifest, at(5), pods=(worker(0, "Running"), worker(1, "Failed")))

    assert result.status.phase == Phase.FAILED
    assert result.delete_pods == ["resnet-worker-0"]
    assert result.create == []


# -- status ------------------------------------------------------------------------------------------


def test_conditions_move_their_transition_time_only_when_they_flip() -> None:
    admitted = run(body(generation=1), T0, admission=ADMIT)
    started = run(applied(body(generation=1), admitted), at(60), pods=running())
    steady = run(applied(body(generation=2), started), at(120), pods=running())

    assert condition(started, "Admitted").last_transition_time == T0
    assert condition(started, "Running").last_transition_time == at(60)
    assert condition(steady, "Running").last_transition_time == at(60)
    assert condition(steady, "Ready").last_transition_time == T0
    assert condition(steady, "Running").reason == "Running"
    assert steady.status.observed_generation == 2
    assert {c.observed_generation for c in steady.status.conditions} == {2}


@pytest.mark.parametrize(
    ("phase", "true"),
    [
        (Phase.PENDING, set()),
        (Phase.QUEUED, set()),
        (Phase.ADMITTED, {"Admitted"}),
        (Phase.RUNNING, {"Admitted", "Running"}),
        (Phase.SUCCEEDED, {"Admitted", "Succeeded", "Ready"}),
        (Phase.FAILED, {"Failed"}),
        (Phase.SUSPENDED, {"Suspended"}),
    ],
)
def test_conditions_for_each_phase(phase: Phase, true: set[str]) -> None:
    state = {"completionTime": T0.isoformat(), "queuedTime": T0.isoformat(), "startTime": T0.isoformat()}
    suspend = phase is Phase.SUSPENDED
    pods = running() if phase is Phase.RUNNING else ()

    answer = None if phase is Phase.PENDING else WAIT

    result = run(body(phase, state=state, suspend=suspend), at(1), pods=pods, admission=answer)

    assert result.status.phase == phase
    assert {c.type for c in result.status.conditions} == {
        "Admitted",
        "Running",
        "Succeeded",
        "Failed",
        "Suspended",
        "Ready",
    }
    assert {c.type for c in result.status.conditions if c.status.value == "True"} == true


# -- reading worker pods -----------------------------------------------------------------------------


def worker_pod(phase: str, *, labels: Object | None = None, **status: Any) -> Object:
    return {
        "metadata": {
            "name": "resnet-worker-1",
            "labels": {"kiln.dev/trainingjob": "resnet", "kiln.dev/rank": "1", "kiln.dev/attempt": "2"}
            if labels is None
            else labels,
            "creationTimestamp": "2024-06-11T10:00:00Z",
        },
        "status": {"phase": phase, **status},
    }


def test_a_terminated_trainer_is_read_from_its_container_status() -> None:
    pod = worker_pod(
        "Failed",
        containerStatuses=[
            {"name": "istio-proxy", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "trainer", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "killed"}}},
        ],
    )

    assert plan.Worker.from_pod(pod) == plan.Worker(
        name="resnet-worker-1",
        rank=1,
        attempt=2,
        phase="Failed",
        created=T0,
        exit_code=137,
        reason="OOMKilled",
        message="killed",
    )


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(
            worker_pod(
                "Pending",
                conditions=[
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
                ],
            ),
            ("Pending", "0/3 nodes", False),
            id="unschedulable",
        ),
        pytest.param(worker_pod("Failed", reason="Evicted"), ("Failed", "Evicted", False), id="evicted"),
        pytest.param(
            {**worker_pod("Running"), "metadata": {**worker_pod("Running")["metadata"], "deletionTimestamp": "x"}},
            ("Running", "", True),
            id="terminating",
        ),
        pytest.param({**worker_pod("Running"), "status": {}}, ("Pending", "", False), id="no-status-yet"),
    ],
)
def test_reading_a_worker_pod(pod: Object, expected: tuple[str, str, bool]) -> None:
    seen = plan.Worker.from_pod(pod)

    assert seen is not None
    assert (seen.phase, seen.reason, seen.deleting) == expected


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param({"app": "resnet"}, id="not-a-kiln-worker"),
        pytest.param({"kiln.dev/rank": "zero", "kiln.dev/attempt": "0"}, id="bad-rank"),
    ],
)
def test_pods_kiln_did_not_make_are_not_workers(labels: Object) -> None:
    assert plan.Worker.from_pod(worker_pod("Running", labels=labels)) is None


# -- when time alone moves the job -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "pods", "admitted", "now", "wake_at"),
    [
        pytest.param(
            body(Phase.QUEUED, state={"queuedTime": T0.isoformat()}, gangScheduling={"timeoutSeconds": 300}),
            (),
            WAIT,
            at(10),
            at(300),
            id="queued-until-its-gang-timeout",
        ),
        pytest.param(
            body(Phase.ADMITTED, state={"restarts": 1, "nextRestartTime": at(40).isoformat()}),
            (),
            None,
            at(10),
            at(40),
            id="backing-off-until-the-restart",
        ),
        pytest.param(
            body(Phase.RUNNING, state={"startTime": T0.isoformat()}, activeDeadlineSeconds=3600),
            running(),
            None,
            at(10),
            at(3600),
            id="running-until-its-deadline",
        ),
        pytest.param(
            body(Phase.ADMITTED, activeDeadlineSeconds=3600),
            running(),
            None,
            at(10),
            at(3610),
            id="starting-to-run-until-its-deadline",
        ),
        pytest.param(
            body(Phase.RUNNING, state={"startTime": T0.isoformat()}), running(), None, at(10), None, id="running"
        ),
        pytest.param(
            body(Phase.ADMITTED, gangScheduling={"timeoutSeconds": 120}),
            (worker(0, "Running", created=T0), worker(1, "Pending", created=T0, reason="0/2 nodes are available")),
            None,
            at(10),
            at(120),
            id="unscheduled-until-the-gang-timeout",
        ),
        pytest.param(
            body(Phase.SUCCEEDED, state={"completionTime": T0.isoformat()}, ttlSecondsAfterFinished=600),
            (),
            None,
            at(10),
            at(600),
            id="finished-until-its-time-to-live",
        ),
        pytest.param(
            body(Phase.SUCCEEDED, state={"completionTime": T0.isoformat()}), (), None, at(10), None, id="done"
        ),
        pytest.param(
            body(
                Phase.RUNNING, state={"startTime": T0.isoformat()}, activeDeadlineSeconds=60, ttlSecondsAfterFinished=30
            ),
            running(),
            None,
            at(60),
            at(90),
            id="a-deadline-failure-wakes-for-its-time-to-live",
        ),
    ],
)
def test_a_job_wakes_only_when_time_alone_changes_it(
    manifest: Object,
    pods: tuple[plan.Worker, ...],
    admitted: admission.Admission | None,
    now: datetime.datetime,
    wake_at: datetime.datetime | None,
) -> None:
    result = run(manifest, now, pods=pods, admission=admitted)

    assert result.wake_at == wake_at


# -- preemption ----------------------------------------------------------------------------------------


def test_a_preempted_job_stops_its_workers_and_queues_again_keeping_its_restarts() -> None:
    manifest = body(Phase.RUNNING, state={"restarts": 1, "startTime": T0.isoformat()})

    result = run(manifest, at(30), pods=running(attempt=1), preempted_by="ml/urgent")

    assert sorted(result.delete_pods) == ["resnet-worker-0", "resnet-worker-1"]
    assert (result.status.phase, result.status.restarts, result.status.preemptions) == (Phase.QUEUED, 1, 1)
    assert result.status.preempted_by == "ml/urgent"
    assert result.status.queued_time == at(30)
    assert condition(result, "Ready").reason == "Preempted"
    assert events(result) == [("Normal", "Preempted")]
    assert result.events[0].message.startswith("preempted by ml/urgent: the workers were told to checkpoint")


def test_a_preempted_job_s_workers_are_told_who_preempted_them_before_they_are_deleted() -> None:
    manifest = body(Phase.RUNNING, state={"startTime": T0.isoformat()})
    pods = (*running(), worker(2, "Running", deleting=True))  # on its way out already: left alone

    result = run(manifest, at(30), pods=pods, preempted_by="ml/urgent")

    told = {"kiln.dev/preempted": "ml/urgent"}
    assert result.annotate_pods == {"resnet-worker-0": told, "resnet-worker-1": told}
    assert sorted(result.delete_pods) == sorted(result.annotate_pods)


@pytest.mark.parametrize("deleting", [pytest.param(False, id="not-deleted-yet"), pytest.param(True, id="deleting")])
def test_a_preempted_job_asks_for_admission_only_once_its_told_workers_are_gone(deleting: bool) -> None:
    told = dataclasses.replace(worker(0, "Running", deleting=deleting), preempted=True)
    queued = body(Phase.QUEUED, state={"queuedTime": T0.isoformat(), "preemptions": 1})

    result = run(queued, at(1), pods=(told,))

    assert not result.needs_admission  # its pods still hold what admission would count as placed
    assert result.delete_pods == ([] if deleting else ["resnet-worker-0"])
    assert result.status.phase == Phase.QUEUED
    assert run(queued, at(2)).needs_admission  # gone: admission is asked


def test_an_admitted_gang_a_quota_refused_a_worker_of_queues_again_whole() -> None:
    refusal = (
        'pods "resnet-worker-1" is forbidden: exceeded quota: gpus, requested: requests.nvidia.com/gpu=4,'
        " used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4"
    )
    admitted = body(Phase.ADMITTED, state={"startTime": T0.isoformat()})

    result = run(admitted, at(30), pods=(worker(0, "Pending"),), quota_refused=refusal)  # made before the refusal

    assert result.delete_pods == ["resnet-worker-0"]
    assert not result.create
    assert (result.status.phase, result.status.queued_time) == (Phase.QUEUED, at(30))
    assert result.status.message == f"quota: a worker was refused: {refusal}"
    assert events(result) == [("Normal", "QuotaExceeded")]
    assert not run(body(Phase.QUEUED), at(30), quota_refused=refusal).delete_pods  # queued: nothing to stop


def test_a_worker_pod_annotated_preempted_is_seen_as_told() -> None:
    pod = worker_pod("Running", labels={"kiln.dev/rank": "0", "kiln.dev/attempt": "0"})
    pod["metadata"]["annotations"] = {"kiln.dev/preempted": "ml/urgent"}

    found = plan.Worker.from_pod(pod)
    assert found is not None
    assert found.preempted


def test_a_job_that_is_not_preempted_annotates_no_pod() -> None:
    result = run(body(Phase.RUNNING, suspend=True, state={"startTime": T0.isoformat()}), at(30), pods=running())

    assert sorted(result.delete_pods) == ["resnet-worker-0", "resnet-worker-1"]
    assert result.annotate_pods == {}


@pytest.mark.parametrize("phase", [Phase.QUEUED, Phase.SUCCEEDED])
def test_only_a_job_holding_admission_can_be_preempted(phase: Phase) -> None:
    result = run(body(phase, state={"queuedTime": T0.isoformat()}), at(5), admission=WAIT, preempted_by="ml/urgent")

    assert result.status.preemptions == 0
    assert result.delete_pods == []
    assert result.annotate_pods == {}


def test_the_job_that_preempts_says_whom() -> None:
    reason = (
        "preempting ml/low (lower priority than 1000) to make room: waiting for their workers to checkpoint and stop"
    )
    answer = admission.Admission(False, reason, preempt=(("ml", "low"),), preempting=(("ml", "low"),))

    result = run(body(), at(5), admission=answer)

    assert result.status.phase == Phase.QUEUED
    assert result.status.message == reason
    assert [(event.reason, event.message) for event in result.events] == [("Preempting", reason), ("Queued", reason)]
    again = run(applied(body(), result), at(6), admission=dataclasses.replace(answer, preempt=()))
    assert again.events == []


# -- elastic jobs ----------------------------------------------------------------------------------------

ELASTIC = {"workers": 2, "elastic": {"minWorkers": 2, "maxWorkers": 4, "scaleUpCooldownSeconds": 60}}


def world_size(pod: Object) -> str:
    return next(v["value"] for v in pod["spec"]["containers"][0]["env"] if v["name"] == "WORLD_SIZE")


def test_an_elastic_job_starts_with_the_workers_admission_sized_it_to() -> None:
    answer = admission.Admission(True, "3 of 4 workers fit the free capacity (elastic, at least 2)", workers=3)

    result = started(body(**ELASTIC), at(1), answer=answer)

    assert result.status.world_size == 3
    assert [world_size(pod) for pod in created_pods(result)] == ["3", "3", "3"]
    assert (result.status.workers.desired, result.status.workers.active, result.status.phase) == (4, 3, Phase.ADMITTED)


def test_a_running_elastic_job_grows_by_restarting_its_gang_with_the_new_world_size() -> None:
    state = {"worldSize": 2, "startTime": T0.isoformat()}
    manifest = body(Phase.RUNNING, state=state, **ELASTIC)

    grown = run(manifest, at(90), pods=running(2), grow_to=4)
    restarted = run(applied(manifest, grown), at(91))

    assert sorted(grown.delete_pods) == ["resnet-worker-0", "resnet-worker-1"]
    assert (grown.status.world_size, grown.status.resizes, grown.status.restarts) == (4, 1, 0)
    assert grown.status.last_resize_time == at(90)
    assert events(grown) == [("Normal", "Resizing")]
    assert grown.events[0].message == (
        "growing from 2 to 4 workers as capacity freed: the gang restarts from its checkpoint with WORLD_SIZE 4"
    )
    pods = created_pods(restarted)
    assert [pod["metadata"]["labels"]["kiln.dev/attempt"] for pod in pods] == ["1"] * 4
    assert {world_size(pod) for pod in pods} == {"4"}


def test_an_elastic_job_shrunk_for_a_higher_priority_one_restarts_with_fewer_workers_told_they_are_preempted() -> None:
    state = {"worldSize": 4, "startTime": T0.isoformat()}
    manifest = body(Phase.RUNNING, state=state, **ELASTIC)

    shrunk = run(manifest, at(90), pods=running(4), shrink_for=("ml/urgent", 2))
    restarted = run(applied(manifest, shrunk), at(91))

    stopping = [f"resnet-worker-{rank}" for rank in range(4)]
    assert sorted(shrunk.delete_pods) == stopping
    assert shrunk.annotate_pods == {name: {"kiln.dev/preempted": "ml/urgent"} for name in stopping}
    assert (shrunk.status.phase, shrunk.status.world_size, shrunk.status.resizes) == (Phase.ADMITTED, 2, 1)
    assert (shrunk.status.preemptions, shrunk.status.preempted_by, shrunk.status.restarts) == (1, "ml/urgent", 0)
    assert events(shrunk) == [("Normal", "Resizing")]
    assert shrunk.events[0].message == (
        "shrinking from 4 to 2 workers to make room for ml/urgent: the gang restarts from its checkpoint with"
        " WORLD_SIZE 2"
    )
    assert {world_size(pod) for pod in created_pods(restarted)} == {"2"}


@pytest.mark.parametrize(
    ("state", "after"),
    [
        pytest.param({"worldSize": 2, "startTime": T0.isoformat()}, at(60), id="cooldown-from-the-start"),
        pytest.param(
            {"worldSize": 3, "startTime": T0.isoformat(), "lastResizeTime": at(100).isoformat()},
            at(160),
            id="cooldown-from-the-last-growth",
        ),
        pytest.param({"worldSize": 4, "startTime": T0.isoformat()}, None, id="at-its-maximum"),
        pytest.param({"worldSize": 2}, None, id="not-started"),
    ],
)
def test_an_elastic_job_may_grow_once_per_cooldown(state: Object, after: datetime.datetime | None) -> None:
    manifest = body(Phase.RUNNING, state=state, **ELASTIC)
    spec = trainingjob.TrainingJobSpec.model_validate(manifest["spec"])

    assert plan.may_grow_after(trainingjob.TrainingJobStatus.model_validate(manifest["status"]), spec) == after


@pytest.mark.parametrize(
    ("cooldown", "after"),
    [
        pytest.param({"scaleUpCooldown": "90s"}, at(90), id="a-duration"),
        pytest.param({"scaleUpCooldown": "1h30m"}, at(5400), id="hours-and-minutes"),
        pytest.param({"scaleUpCooldownSeconds": 45}, at(45), id="in-seconds"),
        pytest.param({"scaleUpCooldown": "2m", "scaleUpCooldownSeconds": 300}, at(120), id="the-duration-counts"),
        pytest.param({}, at(300), id="five-minutes-by-default"),
    ],
)
def test_the_cooldown_is_a_duration_or_seconds(cooldown: Object, after: datetime.datetime) -> None:
    elastic = {"minWorkers": 2, "maxWorkers": 4, **cooldown}
    spec = trainingjob.TrainingJobSpec.model_validate(body(workers=2, elastic=elastic)["spec"])
    running_since = trainingjob.TrainingJobStatus.model_validate(status(Phase.RUNNING, worldSize=2, startTime=T0))

    assert plan.may_grow_after(running_since, spec) == after


def test_a_running_elastic_job_below_its_maximum_wakes_when_its_cooldown_ends() -> None:
    manifest = body(Phase.RUNNING, state={"worldSize": 2, "startTime": T0.isoformat()}, **ELASTIC)

    assert run(manifest, at(10), pods=running(2)).wake_at == at(60)
    assert run(manifest, at(61), pods=running(2)).wake_at is None


# -- progress --------------------------------------------------------------------------------------------


def reporting(step: int, text: str | None = None) -> tuple[plan.Worker, ...]:
    annotation = text if text is not None else json.dumps({"step": step, "totalSteps": 200, "epoch": 1})
    return (dataclasses.replace(worker(0, "Running"), progress=annotation), worker(1, "Running"))


def test_rank_0_s_progress_report_is_folded_into_status() -> None:
    manifest = body(Phase.RUNNING, state={"startTime": T0.isoformat()})

    first = run(manifest, at(10), pods=reporting(50))
    later = run(applied(manifest, first), at(20), pods=reporting(100))

    assert first.status.progress is not None
    assert later.status.progress is not None
    assert (first.status.progress.percent, first.status.progress.epoch) == (25.0, 1)
    assert (later.status.progress.percent, later.status.progress.steps_per_second, later.status.progress.eta) == (
        50.0,
        5.0,
        "20s",
    )


def test_a_report_that_does_not_parse_is_ignored() -> None:
    result = run(body(Phase.RUNNING, state={"startTime": T0.isoformat()}), at(10), pods=reporting(0, "{not json"))

    assert result.status.progress is None
    assert result.status.phase == Phase.RUNNING


def test_a_job_that_succeeds_shows_100_percent() -> None:
    state = {"startTime": T0.isoformat(), "progress": {"step": 190, "totalSteps": 200, "percent": 95.0}}
    done = tuple(worker(rank, "Succeeded") for rank in range(2))

    result = run(body(Phase.RUNNING, state=state), at(30), pods=done)

    assert result.status.phase == Phase.SUCCEEDED
    assert result.status.progress is not None
    assert result.status.progress.percent == 100.0


def test_rank_0_s_last_report_seen_with_its_success_is_folded_in() -> None:
    state = {"startTime": T0.isoformat(), "progress": {"step": 190, "totalSteps": 200, "percent": 95.0}}
    last = json.dumps({"step": 200, "totalSteps": 200, "epoch": 4, "metrics": {"loss": 0.1}})
    done = (dataclasses.replace(worker(0, "Succeeded"), progress=last), worker(1, "Succeeded"))

    result = run(body(Phase.RUNNING, state=state), at(30), pods=done)

    assert result.status.phase == Phase.SUCCEEDED
    assert result.status.progress is not None
    assert (result.status.progress.step, result.status.progress.epoch) == (200, 4)
    assert result.status.progress.metrics == {"loss": 0.1}
    assert result.status.progress.percent == 100.0
