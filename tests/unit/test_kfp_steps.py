"""The Kubeflow components' steps against the in-memory API: each creates or patches its Kiln object,
waits while the operator (played by the waiter's sleep) moves it, and ends on the object's outcome,
raising with its status message when it is not the hoped-for one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kiln.kfp import steps
from kiln.kube import client, fake

NS = "ml"
SPEC = {
    "sklearn": {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "dataset": {"builtin": "iris"},
        "randomSeed": 7.0,
    },
    "output": {"modelName": "iris", "version": "1.1.0"},
}


Status = dict[str, Any] | Callable[[], dict[str, Any]]


def operator_acts(kube: fake.FakeApi, resource: client.Resource, name: str, *statuses: Status) -> steps.Waiter:
    """A waiter whose every sleep is the operator writing the next of `statuses` (a status, or a
    function giving one when it is written)."""
    pending = list(statuses)

    def sleep(_: float) -> None:
        found = kube.get(resource, NS, name)
        assert found is not None
        assert pending, "the step waited longer than the operator moved"
        status = pending.pop(0)
        kube.patch_status(resource, found, status() if callable(status) else status)

    return steps.Waiter(timeout=60, poll=1, sleep=sleep)


def test_a_training_job_that_succeeds_gives_its_model_version() -> None:
    kube = fake.FakeApi(NS)
    waiter = operator_acts(
        kube,
        steps.TRAINING_JOBS,
        "iris-1-1-0",
        {"phase": "Running"},
        {"phase": "Succeeded", "modelVersion": "iris-1.1.0"},
    )

    registered = steps.submit_training_job(kube, NS, "iris-1-1-0", SPEC, waiter)

    created = kube.get(steps.TRAINING_JOBS, NS, "iris-1-1-0")
    assert registered == "iris-1.1.0"
    assert created is not None
    assert created["spec"]["sklearn"]["randomSeed"] == 7  # the Struct's 7.0, an int again


def test_a_retried_task_waits_on_the_job_its_first_attempt_created() -> None:
    kube = fake.FakeApi(NS)
    kube.add(
        steps.TRAINING_JOBS,
        {
            "apiVersion": "kiln.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "tj", "namespace": NS},
            "spec": SPEC,
            "status": {"phase": "Succeeded", "modelVersion": "iris-1.1.0"},
        },
    )

    assert steps.submit_training_job(kube, NS, "tj", SPEC, steps.Waiter(timeout=1)) == "iris-1.1.0"


def test_a_failed_training_job_fails_the_step_with_its_message() -> None:
    kube = fake.FakeApi(NS)
    message = (
        "iris-1-1-0-worker-0 refused its dataset, nothing was fitted: minRows: the dataset has 50 rows, fewer than 100"
    )
    waiter = operator_acts(kube, steps.TRAINING_JOBS, "iris-1-1-0", {"phase": "Failed", "message": message})

    with pytest.raises(
        steps.StepFailedError, match="trainingjob ml/iris-1-1-0 failed: iris-1-1-0-worker-0 refused its dataset"
    ):
        steps.submit_training_job(kube, NS, "iris-1-1-0", SPEC, waiter)


def test_a_spec_the_api_refuses_is_refused_before_anything_is_created() -> None:
    kube = fake.FakeApi(NS)

    with pytest.raises(ValueError, match="exactly one of container or sklearn"):
        steps.submit_training_job(kube, NS, "tj", {"output": SPEC["output"]}, steps.Waiter(timeout=1))
    assert kube.get(steps.TRAINING_JOBS, NS, "tj") is None


def model_version(kube: fake.FakeApi, **status: Any) -> None:
    spec = {
        "modelName": "iris",
        "version": "1.1.0",
        "artifact": {"uri": "pvc://kiln-models/iris/1.1.0/model.skops", "sha256": "0" * 64},
    }
    kube.add(
        steps.MODEL_VERSIONS,
        {
            "apiVersion": "kiln.dev/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": "iris-1.1.0", "namespace": NS},
            "spec": spec,
            "status": status,
        },
    )


def test_a_validated_model_version_gives_its_version() -> None:
    kube = fake.FakeApi(NS)
    model_version(kube, phase="Pending")
    waiter = operator_acts(kube, steps.MODEL_VERSIONS, "iris-1.1.0", {"phase": "Validated"})

    assert steps.gate_model_version(kube, NS, "iris-1.1.0", waiter) == "1.1.0"


def test_a_rejected_model_version_fails_the_step_naming_the_gate() -> None:
    kube = fake.FakeApi(NS)
    model_version(kube, phase="Rejected", message="gate accuracy >= 0.9 failed: 0.62")

    with pytest.raises(steps.StepFailedError, match=r"rejected: gate accuracy >= 0.9 failed: 0.62"):
        steps.gate_model_version(kube, NS, "iris-1.1.0", steps.Waiter(timeout=1))


def deployment(kube: fake.FakeApi) -> None:
    body = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": NS, "generation": 1},
        "spec": {"model": "iris", "version": "1.0.0"},
        "status": {"phase": "Healthy", "stableVersion": "1.0.0", "observedGeneration": 1},
    }
    kube.add(steps.MODEL_DEPLOYMENTS, body)


def observed(kube: fake.FakeApi, **status: Any) -> Callable[[], dict[str, Any]]:
    def status_then() -> dict[str, Any]:
        found = kube.get(steps.MODEL_DEPLOYMENTS, NS, "iris") or {}
        return {**status, "observedGeneration": found["metadata"]["generation"]}

    return status_then


def rolling(kube: fake.FakeApi, *statuses: Status) -> steps.Waiter:
    return operator_acts(kube, steps.MODEL_DEPLOYMENTS, "iris", *statuses)


def test_a_rollout_ends_healthy_on_the_new_version_not_on_the_stale_status() -> None:
    kube = fake.FakeApi(NS)
    deployment(kube)
    waiter = rolling(
        kube,
        observed(kube, phase="Progressing", stableVersion="1.0.0"),
        observed(kube, phase="Healthy", stableVersion="1.1.0"),
    )

    outcome = steps.roll_out(kube, NS, "iris", "1.1.0", waiter)

    assert outcome == "Healthy"
    assert (kube.get(steps.MODEL_DEPLOYMENTS, NS, "iris") or {})["spec"]["version"] == "1.1.0"


def ended(outcome: str, message: str) -> dict[str, Any]:
    record = {"version": "1.1.0", "previousVersion": "1.0.0", "outcome": outcome, "reason": message}
    deployed = {"version": "1.0.0", "outcome": "Deployed"}
    phase = "RolledBack" if outcome == "RolledBack" else "Degraded"
    return {"phase": phase, "stableVersion": "1.0.0", "history": [deployed, record], "message": message}


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ("RolledBack", "metric live-accuracy failed: value 0.35"),
        ("Refused", "version 1.1.0's inputs differ from stable version 1.0.0's"),
    ],
)
def test_a_rollout_that_ends_otherwise_fails_the_step_with_the_reason(outcome: str, message: str) -> None:
    kube = fake.FakeApi(NS)
    deployment(kube)

    with pytest.raises(steps.StepFailedError) as failed:
        steps.roll_out(kube, NS, "iris", "1.1.0", rolling(kube, observed(kube, **ended(outcome, message))))

    assert str(failed.value) == f"modeldeployment ml/iris did not ship 1.1.0: {outcome}: {message}"


def test_a_rollback_can_be_an_outcome_rather_than_a_failure() -> None:
    kube = fake.FakeApi(NS)
    deployment(kube)
    waiter = rolling(kube, observed(kube, **ended("RolledBack", "metric error-rate failed")))

    assert steps.roll_out(kube, NS, "iris", "1.1.0", waiter, fail_on_rollback=False) == "RolledBack"


def test_waiting_is_bounded_and_names_what_did_not_happen() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    waiter = steps.Waiter(timeout=10, poll=3, clock=lambda: now[0], sleep=sleep)

    with pytest.raises(steps.StepFailedError, match="the thing did not happen within 10s"):
        waiter.until(lambda: None, "the thing")
    assert now[0] == 12


def test_a_missing_object_is_named() -> None:
    with pytest.raises(steps.StepFailedError, match="ModelVersion ml/nope does not exist"):
        steps.gate_model_version(fake.FakeApi(NS), NS, "nope", steps.Waiter(timeout=1))


def test_struct_numbers_that_are_whole_become_ints() -> None:
    assert steps.from_struct({"a": 7.0, "b": [1.0, 0.5], "c": {"d": 2.0}, "e": "x"}) == {
        "a": 7,
        "b": [1, 0.5],
        "c": {"d": 2},
        "e": "x",
    }


def test_validating_a_dataset_reports_its_rows_or_every_broken_expectation() -> None:
    good = {"sklearn": {**SPEC["sklearn"], "dataset": {"builtin": "iris", "expectations": {"minRows": 100.0}}}}
    bad = {
        "sklearn": {
            **SPEC["sklearn"],
            "dataset": {"builtin": "iris", "expectations": {"minRows": 1000, "columns": [{"name": "x"}]}},
        }
    }

    assert steps.validate_dataset(NS, good) == 150
    with pytest.raises(
        steps.StepFailedError, match=r"breaks 2 expectations.*minRows: the dataset has 150 rows.*columns\[x\]: required"
    ):
        steps.validate_dataset(NS, bad)
