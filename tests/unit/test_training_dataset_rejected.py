"""A trainer that refuses its dataset (exit code 65) fails the job at once, with the reason it
logged, instead of restarting a run that cannot succeed on the same data."""

from __future__ import annotations

from test_training_plan import Phase, body, condition, events, run, worker
from training_fixtures import at

from kiln.api import trainingjob

REJECTED = trainingjob.DATASET_REJECTED_EXIT_CODE
SAID = (
    "kiln-trainer: failed: the dataset breaks 2 expectations, so nothing was fitted: "
    "minRows: the dataset has 12 rows, fewer than 100; columns[petal_width].maxNulls: 3 empty values, more than 0"
)


def test_a_rejected_dataset_fails_the_job_without_a_restart_naming_each_expectation() -> None:
    logs = f"kiln-trainer: loading dataset pvc://data/iris.csv\n{SAID}\n"
    pods = (worker(0, "Failed", exit_code=REJECTED, reason="Error", message=logs),)

    result = run(body(Phase.RUNNING, workers=1, backoffLimit=3), at(5), pods=pods)

    assert result.status.phase == Phase.FAILED
    assert result.status.restarts == 0
    assert condition(result, "Failed").reason == "DatasetRejected"
    assert events(result) == [("Warning", "DatasetRejected")]
    assert result.status.message == f"resnet-worker-0 refused its dataset (exit code 65): {SAID}"
    assert result.status.completion_time == at(5)


def test_without_a_termination_message_the_logs_are_read_first() -> None:
    pods = (worker(0, "Failed", exit_code=REJECTED),)

    asked = run(body(Phase.RUNNING, workers=1), at(5), pods=pods)
    answered = run(body(Phase.RUNNING, workers=1), at(5), pods=pods, logs=f"{SAID}\n")

    assert (asked.needs_logs, asked.status.phase) == ("resnet-worker-0", Phase.RUNNING)
    assert answered.status.phase == Phase.FAILED
    assert "columns[petal_width].maxNulls: 3 empty values, more than 0" in (answered.status.message or "")


def test_another_exit_code_still_restarts_the_gang() -> None:
    pods = (worker(0, "Failed", exit_code=1, reason="Error", message=SAID),)

    result = run(body(Phase.RUNNING, workers=1, backoffLimit=3), at(5), pods=pods)

    assert (result.status.phase, result.status.restarts) == (Phase.ADMITTED, 1)
