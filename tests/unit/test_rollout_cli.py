"""The rollout commands: how they name a ModelDeployment, how they render its status, and the
requests they write, driven against the in-memory FakeApi instead of a cluster."""

from __future__ import annotations

import datetime
import json
from typing import Any

import click
import pytest
import rich.console
from click.testing import CliRunner

from kiln import cli, rollout_cli
from kiln.api import modeldeployment
from kiln.api.modeldeployment import ModelDeployment, RolloutActionName
from kiln.delivery import rollout
from kiln.kube import client, fake
from kiln.rollout_cli import StepState

Object = dict[str, Any]
NAME = "iris"
NAMESPACE = "ml"
T0 = datetime.datetime(2024, 6, 11, 10, 0, tzinfo=datetime.UTC)
STEPS: list[Object] = [
    {"setWeight": 20},
    {"pause": {"duration": "30s"}},
    {"analysis": {"metrics": ["error-rate"]}},
    {"setWeight": 50},
    {"pause": {}},
]
ERROR_RATE: Object = {
    "name": "error-rate",
    "provider": "prometheus",
    "query": "sum(rate(errors[1m]))",
    "successCondition": "result <= 0.01",
}
LATENCY: Object = {**ERROR_RATE, "name": "latency", "query": "p99"}


def stamp(seconds: float) -> str:
    return client.timestamp(T0 + datetime.timedelta(seconds=seconds))


def canary_status(**overrides: Any) -> Object:
    """A canary of 1.1.0 over stable 1.0.0 at its second step (the 30s pause), 20% on the candidate."""
    return {
        "phase": "Paused",
        "message": "paused at step 1 for 30s (12s left)",
        "stableVersion": "1.0.0",
        "candidateVersion": "1.1.0",
        "currentStepIndex": 1,
        "weights": {"stable": 80, "canary": 20},
        "url": "http://iris.ml.svc:8080",
        "conditions": [
            {
                "type": "Paused",
                "status": "True",
                "reason": "PauseStep",
                "message": "paused",
                "lastTransitionTime": stamp(0),
            }
        ],
        "history": [
            {
                "version": "1.0.0",
                "startTime": stamp(-3600),
                "endTime": stamp(-3555),
                "outcome": "Deployed",
                "reason": "serving version 1.0.0",
            },
            {"version": "1.1.0", "previousVersion": "1.0.0", "startTime": stamp(-90)},
        ],
        **overrides,
    }


def body(status: Object | None = None, *, steps: list[Object] | None = None, **spec: Any) -> Object:
    canary = {"steps": STEPS if steps is None else steps}
    found: Object = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "model": NAME,
            "strategy": {"canary": canary},
            "analysis": {"metrics": [ERROR_RATE, LATENCY]},
            **spec,
        },
    }
    if status is not None:
        found["status"] = status
    return found


def parsed(status: Object | None = None, **spec: Any) -> ModelDeployment:
    return ModelDeployment.model_validate(body(status, **spec))


@pytest.mark.parametrize(
    "reference",
    [
        "md/iris",
        "modeldeployment/iris",
        "modeldeployments/iris",
        "ModelDeployment/iris",
        "modeldeployment.kiln.dev/iris",
        "modeldeployments.kiln.dev/iris",
        "iris",
    ],
)
def test_a_model_deployment_is_named_as_kubectl_names_it(reference: str) -> None:
    assert rollout_cli.model_deployment_name(reference) == "iris"


@pytest.mark.parametrize(
    ("reference", "message"),
    [("mv/iris", "'mv/iris' is not a ModelDeployment"), ("md/", "'md/' names no ModelDeployment")],
)
def test_anything_else_is_refused_with_the_form_to_use(reference: str, message: str) -> None:
    with pytest.raises(click.BadParameter, match=message):
        rollout_cli.model_deployment_name(reference)


def test_steps_before_the_current_one_are_done_and_those_after_pending() -> None:
    rows = rollout_cli.step_rows(parsed(canary_status()))

    assert [(row.number, row.text, row.state) for row in rows] == [
        (1, "setWeight 20", StepState.DONE),
        (2, "pause 30s", StepState.CURRENT),
        (3, "analysis [error-rate]", StepState.PENDING),
        (4, "setWeight 50", StepState.PENDING),
        (5, "pause (until resumed)", StepState.PENDING),
    ]


def test_an_analysis_step_naming_no_metric_runs_every_defined_one() -> None:
    rows = rollout_cli.step_rows(parsed(canary_status(), steps=[{"analysis": {}}]))

    assert rows[0].text == "analysis [error-rate, latency]"


@pytest.mark.parametrize(
    ("status", "states", "summary"),
    [
        (canary_status(), None, "step 2 of 5"),
        (canary_status(currentStepIndex=5), [StepState.DONE] * 5, "all 5 steps done, promoting"),
        (
            {"phase": "Healthy", "stableVersion": "1.0.0"},
            [StepState.PENDING] * 5,
            "no rollout in progress",
        ),
    ],
)
def test_the_step_summary_says_where_the_rollout_is(
    status: Object, states: list[StepState] | None, summary: str
) -> None:
    deployment = parsed(status)

    assert rollout_cli.step_summary(deployment) == summary
    if states is not None:
        assert [row.state for row in rollout_cli.step_rows(deployment)] == states


@pytest.mark.parametrize(
    ("status", "steps", "context"),
    [
        (canary_status(), None, "step 2 of 5, candidate 1.1.0"),
        (canary_status(), [], "candidate 1.1.0"),
        ({"phase": "Healthy", "stableVersion": "1.0.0"}, None, "no rollout in progress, stable 1.0.0"),
        ({}, None, "no rollout in progress"),
    ],
)
def test_a_request_says_what_it_acts_on(status: Object, steps: list[Object] | None, context: str) -> None:
    assert rollout_cli.request_context(parsed(status, steps=steps)) == context


def test_analysis_rows_show_counts_and_the_last_value_or_error() -> None:
    analysis = [
        {
            "metric": "error-rate",
            "step": 2,
            "phase": "Successful",
            "successful": 2,
            "measurements": [
                {"phase": "Successful", "value": "0.02", "time": stamp(0)},
                {"phase": "Successful", "value": "0.004", "time": stamp(30)},
            ],
        },
        {
            "metric": "latency",
            "phase": "Running",
            "successful": 1,
            "errors": 1,
            "measurements": [{"phase": "Error", "error": "connection refused", "time": stamp(30)}],
        },
        {"metric": "latency", "step": 4, "phase": "Running"},
    ]
    status = modeldeployment.ModelDeploymentStatus.model_validate(canary_status(analysis=analysis))

    assert rollout_cli.analysis_rows(status) == [
        ("error-rate", "step 3", "Successful", "2", "0", "0", "0", "0.004"),
        ("latency", "background", "Running", "1", "0", "0", "1", "error: connection refused"),
        ("latency", "step 5", "Running", "0", "0", "0", "0", ""),
    ]


def test_history_rows_run_newest_last_and_a_running_rollout_lasts_until_now() -> None:
    status = modeldeployment.ModelDeploymentStatus.model_validate(canary_status())

    assert rollout_cli.history_rows(status, now=T0) == [
        ("1.0.0", "-", "2024-06-11 09:00:00", "2024-06-11 09:00:45", "45s", "Deployed", "serving version 1.0.0"),
        ("1.1.0", "1.0.0", "2024-06-11 09:58:30", "running", "1m30s", "Running", ""),
    ]


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59, "59s"), (65, "1m05s"), (3600 + 240 + 5, "1h04m"), (-3, "0s")]
)
def test_durations_are_coarse_as_kubectl_prints_ages(seconds: int, text: str) -> None:
    assert rollout_cli.format_duration(datetime.timedelta(seconds=seconds)) == text


def test_the_status_view_shows_versions_weights_steps_analysis_and_conditions() -> None:
    analysis = [{"metric": "error-rate", "phase": "Running", "successful": 1}]
    console = rich.console.Console(record=True, width=160)
    console.print(rollout_cli.status_view(parsed(canary_status(analysis=analysis))))
    text = console.export_text()

    for expected in (
        "Paused — paused at step 1 for 30s (12s left)",
        "Candidate  1.1.0",
        "stable 80%, canary 20%",
        "step 2 of 5",
        "✔  1  setWeight 20",
        "▶  2  pause 30s",
        "○  5  pause (until resumed)",
        "background",
        "PauseStep",
        "http://iris.ml.svc:8080",
    ):
        assert expected in text


class Operator(fake.FakeApi):
    """The fake API server with a stand-in operator: every read first handles a pending rollout
    action (records its id, as the real operator does) and reflects the spec's generation."""

    handles = True

    def get(self, resource: client.Resource, namespace: str | None, name: str) -> Object | None:
        found = super().get(resource, namespace, name)
        if found is None or not self.handles:
            return found
        action, _ = rollout.parse_action(found["metadata"].get("annotations") or {})
        status = {**(found.get("status") or {}), "observedGeneration": found["metadata"]["generation"]}
        status.update({"phase": "Progressing", "message": "at step 2"})
        if action is not None:
            status["handledAction"] = action.id
        self.patch_status(resource, found, status)
        return super().get(resource, namespace, name)


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Operator:
    api = Operator(namespace=NAMESPACE, user="alice@example.com")
    api.handles = False
    api.add(rollout_cli.MODEL_DEPLOYMENTS, body(canary_status()))
    monkeypatch.setattr(client, "connect", lambda *args, **kwargs: api)
    monkeypatch.setattr(rollout_cli, "POLL_SECONDS", 0.01)
    return api


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def stored(kube: fake.FakeApi) -> Object:
    found = kube.get(rollout_cli.MODEL_DEPLOYMENTS, NAMESPACE, NAME)
    assert found is not None
    return found


def written_action(kube: fake.FakeApi) -> modeldeployment.RolloutAction:
    action, error = rollout.parse_action(stored(kube)["metadata"]["annotations"])
    assert error is None
    assert action is not None
    return action


def test_promote_full_asks_the_operator_to_skip_every_step_as_the_authenticated_user(kube: Operator) -> None:
    result = run("promote", "md/iris", "--full")

    assert result.exit_code == 0, result.output
    assert result.output == "promote-full requested for md/iris (step 2 of 5, candidate 1.1.0)\n"
    action = written_action(kube)
    assert action.action is RolloutActionName.PROMOTE_FULL
    assert action.user == "alice@example.com"
    assert action.time.tzinfo is not None
    assert [(write.verb, write.subresource) for write in kube.actions] == [("patch", None)]


@pytest.mark.parametrize(
    ("command", "action"),
    [
        ("promote", RolloutActionName.PROMOTE),
        ("abort", RolloutActionName.ABORT),
        ("rollback", RolloutActionName.ROLLBACK),
        ("retry", RolloutActionName.RETRY),
    ],
)
def test_each_request_writes_its_action_with_a_fresh_id(kube: Operator, command: str, action: str) -> None:
    first = run(command, "iris")
    first_id = written_action(kube).id
    second = run(command, "modeldeployment/iris")

    assert (first.exit_code, second.exit_code) == (0, 0)
    assert first.output.startswith(f"{action} requested for md/iris (")
    assert written_action(kube).action == action
    assert written_action(kube).id != first_id
    assert stored(kube)["spec"].get("paused") is None


def test_pause_sets_spec_paused_and_writes_no_action(kube: Operator) -> None:
    result = run("pause", "md/iris")

    assert result.exit_code == 0, result.output
    assert result.output == "pause requested for md/iris (step 2 of 5, candidate 1.1.0)\n"
    assert stored(kube)["spec"]["paused"] is True
    assert modeldeployment.ROLLOUT_ACTION_ANNOTATION not in (stored(kube)["metadata"].get("annotations") or {})


def test_resume_unpauses_and_asks_for_a_resume_in_one_patch(kube: Operator) -> None:
    run("pause", "md/iris")
    result = run("resume", "md/iris")

    assert result.exit_code == 0, result.output
    assert stored(kube)["spec"]["paused"] is False
    assert written_action(kube).action is RolloutActionName.RESUME
    assert [write.verb for write in kube.actions] == ["patch", "patch"]


@pytest.mark.parametrize("command", ["promote", "abort", "resume", "pause", "rollback", "retry", "status", "history"])
def test_a_missing_model_deployment_is_a_clear_error(kube: Operator, command: str) -> None:
    result = CliRunner().invoke(cli.main, [command, "md/missing"])

    assert result.exit_code == 1
    assert 'modeldeployment "missing" not found in namespace "ml"' in result.output


def test_namespace_option_overrides_the_contexts(kube: Operator) -> None:
    result = CliRunner().invoke(cli.main, ["abort", "md/iris", "-n", "elsewhere"])

    assert result.exit_code == 1
    assert 'not found in namespace "elsewhere"' in result.output


def test_wait_reports_the_phase_once_the_operator_handled_the_request(kube: Operator) -> None:
    kube.handles = True
    result = run("promote", "md/iris", "--wait", "5")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "md/iris Progressing: at step 2"
    assert stored(kube)["status"]["handledAction"] == written_action(kube).id


def test_wait_for_a_pause_ends_once_status_reflects_the_new_generation(kube: Operator) -> None:
    kube.handles = True
    result = run("pause", "md/iris", "--wait", "5")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "md/iris Progressing: at step 2"


def test_wait_times_out_when_no_operator_handles_the_request(kube: Operator) -> None:
    result = CliRunner().invoke(cli.main, ["abort", "md/iris", "--wait", "0.05"])

    assert result.exit_code == 1
    assert "the operator did not handle the abort request on md/iris within 0.05s" in result.output


def test_status_prints_once_and_exits(kube: Operator) -> None:
    result = run("status", "md/iris")

    assert result.exit_code == 0, result.output
    assert "step 2 of 5" in result.output
    assert "setWeight 20" in result.output


def test_status_watch_stops_at_the_timeout(kube: Operator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout_cli, "WATCH_SECONDS", 0.01)
    result = run("status", "md/iris", "--watch", "--timeout", "0.05")

    assert result.exit_code == 0, result.output
    assert "setWeight 20" in result.output


def test_history_lists_the_rollouts(kube: Operator) -> None:
    result = run("history", "md/iris")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["VERSION", "PREVIOUS", "STARTED"]
    assert lines[1].split()[:2] == ["1.0.0", "-"]
    assert lines[2].split()[:2] == ["1.1.0", "1.0.0"]


def test_the_annotation_is_the_json_the_operator_reads(kube: Operator) -> None:
    run("retry", "md/iris")

    text = stored(kube)["metadata"]["annotations"][modeldeployment.ROLLOUT_ACTION_ANNOTATION]
    assert set(json.loads(text)) == {"action", "id", "user", "time"}


RETRAINING: Object = {
    "retraining": {
        "template": {
            "sklearn": {"estimator": "sklearn.linear_model.LogisticRegression", "dataset": {"builtin": "iris"}},
            "output": {"modelName": NAME, "version": "0.0.0"},
        }
    }
}


class Retrainer(fake.FakeApi):
    """The fake API server with a stand-in operator that starts a retraining for each new request."""

    def get(self, resource: client.Resource, namespace: str | None, name: str) -> Object | None:
        found = super().get(resource, namespace, name)
        text = ((found or {}).get("metadata", {}).get("annotations") or {}).get(
            modeldeployment.RETRAIN_REQUEST_ANNOTATION
        )
        if found is None or text is None:
            return found
        request = modeldeployment.RetrainRequest.model_validate_json(text)
        run = {
            "trainingJob": "iris-retrain-1-0-1",
            "version": "1.0.1",
            "trigger": "manual",
            "reason": "r",
            "time": stamp(0),
        }
        self.patch_status(
            resource,
            found,
            {**(found.get("status") or {}), "retraining": {"handledRequest": request.id, "runs": [run]}},
        )
        return super().get(resource, namespace, name)


@pytest.fixture
def retrainer(monkeypatch: pytest.MonkeyPatch) -> Retrainer:
    api = Retrainer(namespace=NAMESPACE, user="alice@example.com")
    api.add(rollout_cli.MODEL_DEPLOYMENTS, body(canary_status(), monitoring=RETRAINING))
    monkeypatch.setattr(client, "connect", lambda *args, **kwargs: api)
    monkeypatch.setattr(rollout_cli, "POLL_SECONDS", 0.01)
    return api


def test_retrain_writes_a_request_as_the_authenticated_user_and_reports_the_job(retrainer: Retrainer) -> None:
    result = run("retrain", "md/iris", "--reason", "new labels", "--wait", "5")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "retraining requested for md/iris",
        "md/iris: started TrainingJob iris-retrain-1-0-1, which registers iris 1.0.1",
    ]
    text = stored(retrainer)["metadata"]["annotations"][modeldeployment.RETRAIN_REQUEST_ANNOTATION]
    request = modeldeployment.RetrainRequest.model_validate_json(text)
    assert (request.user, request.reason) == ("alice@example.com", "new labels")


def test_retrain_without_a_retraining_template_is_refused(kube: Operator) -> None:
    result = CliRunner().invoke(cli.main, ["retrain", "md/iris"])

    assert result.exit_code == 1
    assert "md/iris has no spec.monitoring.retraining to retrain from" in result.output
    assert modeldeployment.RETRAIN_REQUEST_ANNOTATION not in (stored(kube)["metadata"].get("annotations") or {})
