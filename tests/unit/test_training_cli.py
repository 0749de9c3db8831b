"""`kiln status tj/NAME [--watch]`: the progress line it renders, and the live watch, driven against
the in-memory FakeApi: each read of the job is the next status of a scripted run."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import Any

import click
import pytest
import rich.console
from click.testing import CliRunner

from kiln import cli, training_cli
from kiln.api import trainingjob
from kiln.kube import client, fake

Object = dict[str, Any]
NAMESPACE = "ml"


def progress(step: int, **more: Any) -> Object:
    return {"step": step, "totalSteps": 300, **more}


RUNNING: Object = {
    "phase": "Running",
    "message": "all 4 workers are running (attempt 0)",
    "progress": progress(150, epoch=2, metrics={"loss": 0.42}, percent=50.0, stepsPerSecond=2.5, eta="1m0s"),
}
SUCCEEDED: Object = {
    "phase": "Succeeded",
    "message": "ddp-worker-0 succeeded",
    "progress": progress(300, epoch=4, metrics={"loss": 0.11}, percent=100.0, eta="0s"),
}
FAILED: Object = {"phase": "Failed", "message": "ddp-worker-2 failed (exit code 1); no restarts left"}


def job(status: Object | None) -> Object:
    body: Object = {"apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "ddp"}}
    if status is not None:
        body["status"] = status
    return {**body, "metadata": {**body["metadata"], "namespace": NAMESPACE}, "spec": {"workers": 4}}


class Run(fake.FakeApi):
    """Each read of the job shows the next of `statuses`; the last one stays."""

    def __init__(self, statuses: Sequence[Object]) -> None:
        super().__init__(namespace=NAMESPACE)
        self.statuses = list(statuses)
        self.reads = 0
        self.add(training_cli.TRAINING_JOBS, job(self.statuses[0]))

    def get(self, resource: client.Resource, namespace: str | None, name: str) -> Object | None:
        found = super().get(resource, namespace, name)
        if found is not None:
            found["status"] = self.statuses[min(self.reads, len(self.statuses) - 1)]
            self.reads += 1
        return found


def connected(monkeypatch: pytest.MonkeyPatch, *statuses: Object) -> Run:
    api = Run(statuses)
    monkeypatch.setattr(client, "connect", lambda *args, **kwargs: api)
    monkeypatch.setattr(training_cli, "WATCH_SECONDS", 0.0)
    return api


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def rendered(status: Object) -> str:
    console = rich.console.Console(width=200, record=True, color_system=None, file=io.StringIO())
    console.print(training_cli.progress_view("ddp", trainingjob.TrainingJobStatus.model_validate(status)))
    return console.export_text()


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        pytest.param("tj/ddp", "ddp", id="short-name"),
        pytest.param("TrainingJob/ddp", "ddp", id="kind"),
        pytest.param("trainingjobs.kiln.dev/ddp", "ddp", id="qualified-plural"),
        pytest.param("md/iris", None, id="a-model-deployment"),
        pytest.param("iris", None, id="bare-name-is-a-model-deployment"),
    ],
)
def test_a_reference_names_a_training_job_by_any_kubectl_spelling(reference: str, name: str | None) -> None:
    assert training_cli.training_job_name(reference) == name


def test_a_reference_without_a_name_is_refused() -> None:
    with pytest.raises(click.BadParameter, match="names no TrainingJob"):
        training_cli.training_job_name("tj/")


def test_the_line_shows_percent_step_epoch_rate_eta_phase_and_metrics() -> None:
    text = rendered(RUNNING)

    line = text.splitlines()[0]
    for expected in ("tj/ddp", " 50.0%", "step 150/300", "epoch 2", "2.5 steps/s", "ETA 1m0s", "Running", "loss=0.42"):
        assert expected in line
    assert line.index("50.0%") < line.index("step 150/300") < line.index("Running")
    assert text.splitlines()[1].rstrip() == "all 4 workers are running (attempt 0)"


def test_a_job_that_reported_nothing_says_so() -> None:
    line = rendered({"phase": "Queued", "message": "waiting for capacity"}).splitlines()[0]

    assert "-%" in line
    assert "no progress reported yet" in line
    assert "Queued" in line


def test_status_without_watch_prints_the_line_once(monkeypatch: pytest.MonkeyPatch) -> None:
    api = connected(monkeypatch, RUNNING, SUCCEEDED)
    result = run("status", "tj/ddp")

    assert result.exit_code == 0, result.output
    assert "step 150/300" in result.output
    assert api.reads == 1


def test_watch_follows_the_job_until_it_succeeds_and_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    queued = {"phase": "Queued", "message": "waiting for capacity"}
    api = connected(monkeypatch, queued, RUNNING, RUNNING, SUCCEEDED, FAILED)
    result = run("status", "tj/ddp", "--watch")

    assert result.exit_code == 0, result.output
    assert api.reads == 4  # it stopped reading once the job finished
    assert "100.0%" in result.output
    assert "step 300/300" in result.output


def test_watch_exits_1_with_the_reason_when_the_job_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    connected(monkeypatch, RUNNING, FAILED)
    result = run("status", "tj/ddp", "--watch")

    assert result.exit_code == 1
    assert "Error: tj/ddp failed: ddp-worker-2 failed (exit code 1)" in result.output


def test_watch_gives_up_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    connected(monkeypatch, RUNNING)
    monkeypatch.setattr(training_cli, "WATCH_SECONDS", 0.01)
    result = run("status", "tj/ddp", "--watch", "--timeout", "0.05")

    assert result.exit_code == 1
    assert "Error: tj/ddp is still Running after 0.05s" in result.output


def test_ctrl_c_stops_the_watch_with_exit_code_130(monkeypatch: pytest.MonkeyPatch) -> None:
    connected(monkeypatch, RUNNING)

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupted)
    result = run("status", "tj/ddp", "--watch")

    assert result.exit_code == 130


def test_a_job_that_does_not_exist_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    connected(monkeypatch, RUNNING)
    result = run("status", "tj/missing")

    assert result.exit_code == 1
    assert 'trainingjob "missing" not found in namespace "ml"' in result.output
