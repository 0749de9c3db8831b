"""How the registry's commands name a ModelVersion, the way kubectl names objects, and what `kiln lineage`
shows of a deployment's retrainings."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from kiln import cli, registry_cli
from kiln.api import modeldeployment
from kiln.kube import client, fake


@pytest.mark.parametrize(
    "reference",
    [
        "mv/iris-1",
        "modelversion/iris-1",
        "modelversions/iris-1",
        "ModelVersion/iris-1",
        "modelversions.kiln.dev/iris-1",
        "iris-1",
    ],
)
def test_a_model_version_is_named_as_kubectl_names_it(reference: str) -> None:
    assert registry_cli.model_version_name(reference) == "iris-1"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("tj/iris-1", "'tj/iris-1' is not a ModelVersion"),
        ("mv/", "'mv/' names no ModelVersion"),
        ("", "'' names no ModelVersion"),
    ],
)
def test_anything_else_is_refused_with_the_form_to_use(reference: str, message: str) -> None:
    with pytest.raises(click.BadParameter, match=message):
        registry_cli.model_version_name(reference)


T0 = "2026-12-01T12:00:00Z"
TEMPLATE = {
    "sklearn": {"estimator": "sklearn.linear_model.LogisticRegression", "dataset": {"builtin": "iris"}},
    "output": {"modelName": "iris", "version": "0.0.0"},
}


def retrained_world() -> fake.FakeApi:
    """iris 1.0.0 deployed, drift-retrained as 1.0.1 by iris-retrain-1-0-1, which was then promoted."""
    api = fake.FakeApi(namespace="ml")
    job = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {
            "name": "iris-retrain-1-0-1",
            "namespace": "ml",
            "creationTimestamp": T0,
            "labels": {modeldeployment.RETRAINING_FOR_LABEL: "iris", modeldeployment.RETRAINING_TRIGGER_LABEL: "Drift"},
            "annotations": {modeldeployment.RETRAINING_REASON_ANNOTATION: "drift detected: psi 0.8 on petal"},
        },
        "spec": TEMPLATE,
        "status": {"phase": "Succeeded", "modelVersion": "iris-1.0.1"},
    }
    version = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "iris-1.0.1", "namespace": "ml"},
        "spec": {
            "modelName": "iris",
            "version": "1.0.1",
            "artifact": {"uri": "pvc://kiln-models/iris/1.0.1/model.skops", "sha256": "a" * 64},
            "lineage": {"trainingJob": "iris-retrain-1-0-1"},
        },
        "status": {"phase": "Validated"},
    }
    history = [
        {"version": "1.0.0", "startTime": T0, "endTime": T0, "outcome": "Deployed"},
        {"version": "1.0.1", "previousVersion": "1.0.0", "startTime": T0, "endTime": T0, "outcome": "Promoted",
         "reason": "version 1.0.1 promoted to stable"},
    ]  # fmt: skip
    skipped = {"trigger": "Drift", "reason": "Cooldown", "message": "cooldown until 13:00", "time": T0}
    deployment = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"model": "iris", "versionPolicy": "LatestValidated", "monitoring": {"drift": {}}},
        "status": {
            "phase": "Healthy",
            "stableVersion": "1.0.1",
            "history": history,
            "retraining": {"skipped": skipped},
        },
    }
    api.add(registry_cli.TRAINING_JOBS, job)
    api.add(registry_cli.MODEL_VERSIONS, version)
    api.add(registry_cli.MODEL_DEPLOYMENTS, deployment)
    return api


def test_lineage_of_a_deployment_walks_trigger_job_version_and_rollout(monkeypatch: pytest.MonkeyPatch) -> None:
    api = retrained_world()
    monkeypatch.setattr(client, "connect", lambda *args, **kwargs: api)
    monkeypatch.setenv("COLUMNS", "200")

    result = CliRunner().invoke(cli.main, ["lineage", "md/iris"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line.strip(" │├└─") for line in result.output.splitlines()]
    assert lines == [
        "ModelDeployment iris: iris 1.0.1 (Healthy)",
        f"trigger Drift at {T0}: drift detected: psi 0.8 on petal",
        "TrainingJob iris-retrain-1-0-1 (Succeeded)",
        "ModelVersion iris-1.0.1: 1.0.1 (Validated)",
        "rollout Promoted: version 1.0.1 promoted to stable",
        "last skipped: trigger Drift, Cooldown: cooldown until 13:00",
    ]

    version = CliRunner().invoke(cli.main, ["lineage", "mv/iris-1.0.1"], catch_exceptions=False)
    assert "retraining of ModelDeployment iris (Drift)" in version.output
