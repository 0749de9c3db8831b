"""`kiln approve`, `kiln stage`, `kiln models` and `kiln lineage` against the dev cluster, run as a
user runs them: the `kiln` command in a subprocess, `--as` to be someone else."""

from __future__ import annotations

import json
import re

from kiln_cluster import Kiln, condition, model_version, reason_of
from polling import eventually

MODEL_BYTES = b"weights"


def test_approvals_and_stage_requests_carry_the_user_the_api_server_reports(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    kiln.apply(namespace, model_version("iris-2-0-0", "2.0.0", artifact, requiredApprovals=2))
    kiln.wait_for_phase(namespace, "iris-2-0-0", "Validated")

    staged = kiln.kiln("stage", "mv/iris-2-0-0", "Staging", "-n", namespace, "--as", "carol", "-m", "for the A/B test")
    assert staged.stdout.splitlines() == [
        "carol asked for mv/iris-2-0-0 to move to Staging",
        "the version is in stage Staging",
    ]
    waiting = kiln.kiln("stage", "mv/iris-2-0-0", "production", "-n", namespace, "--as", "carol")
    assert "Production needs 2 distinct approvals and the version has 0" in waiting.stdout

    first = kiln.kiln("approve", "mv/iris-2-0-0", "-n", namespace, "--as", "alice", "--comment", "offline eval ok")
    again = kiln.kiln("approve", "modelversion/iris-2-0-0", "-n", namespace, "--as", "alice")
    assert first.stdout == "alice approved mv/iris-2-0-0: 1 of 2 required distinct approvals\n"
    assert (
        again.stdout
        == "alice approved mv/iris-2-0-0 again (an approver counts once): 1 of 2 required distinct approvals\n"
    )
    counted = kiln.wait_for(namespace, "iris-2-0-0", "to count alice once", lambda s: s.get("approvedBy") == ["alice"])
    assert counted["stage"] == "Staging"

    kiln.kiln("approve", "mv/iris-2-0-0", "-n", namespace, "--as", "bob")

    status = kiln.wait_for_stage(namespace, "iris-2-0-0", "Production")
    audit = [(e["action"], e["user"], e.get("toStage"), e.get("comment", "")) for e in status["history"]]
    assert audit == [
        ("StageChanged", "carol", "Staging", "for the A/B test"),
        ("Approved", "alice", None, "offline eval ok"),
        ("Approved", "bob", None, ""),
        ("StageChanged", "carol", "Production", ""),
    ]
    approvals = kiln.model_version(namespace, "iris-2-0-0")["spec"]["approvals"]
    assert [approval["approver"] for approval in approvals] == ["alice", "alice", "bob"]


def test_without_as_the_kubeconfig_user_is_recorded(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    kiln.apply(namespace, model_version("iris-1-0-0", "1.0.0", artifact))

    approved = kiln.kiln("approve", "iris-1-0-0", "-n", namespace)

    assert approved.stdout.startswith("kiln-admin approved mv/iris-1-0-0")
    kiln.wait_for(namespace, "iris-1-0-0", "to record the admin", lambda s: s.get("approvedBy") == ["kiln-admin"])


def test_kiln_stage_refuses_to_move_a_rejected_version_and_says_why(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    gates = [{"metric": "accuracy", "min": 0.9}]
    kiln.apply(namespace, model_version("iris-bad", "0.1.0", artifact, metrics={"accuracy": 0.4}, gates=gates))
    kiln.wait_for_phase(namespace, "iris-bad", "Rejected")

    refused = kiln.kiln("stage", "mv/iris-bad", "Staging", "-n", namespace, check=False)

    assert refused.returncode == 1
    assert (
        "the registry refused: the version is Rejected, so it may only be archived, not moved to Staging"
        in refused.stderr
    )
    status = kiln.status(namespace, "iris-bad")
    assert status["stage"] == "None"
    assert reason_of(status, "StageGranted") == "VersionRejected"


def test_kiln_models_lists_versions_in_semver_order_and_the_production_timeline(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    gates = [{"metric": "accuracy", "min": 0.5}]
    for name, version in [("iris-a", "1.9.0"), ("iris-b", "1.10.0"), ("iris-c", "2.0.0-rc.1"), ("iris-d", "2.0.0")]:
        kiln.apply(
            namespace, model_version(name, version, artifact, metrics={"accuracy": 0.9, "loss": 0.3}, gates=gates)
        )
        kiln.wait_for_phase(namespace, name, "Validated")
    kiln.apply(namespace, model_version("wine-a", "0.1.0", artifact, model="wine", metrics={"rmse": 1.5}))
    for name in ("iris-a", "iris-b"):
        kiln.kiln("stage", f"mv/{name}", "Staging", "-n", namespace, "--as", "dana")
        kiln.kiln("stage", f"mv/{name}", "Production", "-n", namespace, "--as", "dana")
    kiln.wait_for_stage(namespace, "iris-a", "Archived")

    listed = kiln.kiln("models", "-n", namespace).stdout
    rows = [line.split() for line in listed.splitlines()[1:]]
    assert [row[:3] for row in rows] == [
        ["iris", "2.0.0", "iris-d"],
        ["iris", "2.0.0-rc.1", "iris-c"],
        ["iris", "1.10.0", "iris-b"],
        ["iris", "1.9.0", "iris-a"],
        ["wine", "0.1.0", "wine-a"],
    ]
    assert rows[2][3:] == ["Validated", "Production", "0/0", "accuracy=0.9", "-", artifact[0]]
    assert rows[3][3:5] == ["Validated", "Archived"]
    assert rows[4][6] == "rmse=1.5"

    timeline = kiln.kiln("models", "iris", "-n", namespace).stdout
    periods = [line.split() for line in timeline.split("iris in Production")[1].splitlines()[2:]]
    assert [(p[0], p[1], p[-1]) for p in periods] == [("1.9.0", "iris-a", "dana"), ("1.10.0", "iris-b", "dana")]
    assert periods[1][-2] == "now"


def test_kiln_lineage_shows_the_training_job_its_inputs_and_the_deployments_serving_it(
    kiln: Kiln, namespace: str
) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    lineage = {
        "trainingJob": "iris-rf",
        "dataset": {"uri": "pvc://datasets/iris.csv", "sha256": "b" * 64},
        "code": {"repository": "https://git.example.com/iris", "commit": "3f9c2e1a7b4d"},
        "parameters": {"n_estimators": "200"},
    }
    kiln.apply(namespace, model_version("iris-1-2-0", "1.2.0", artifact, lineage=lineage))
    job = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "iris-rf"},
        "spec": {
            "sklearn": {"estimator": "sklearn.ensemble.RandomForestClassifier", "dataset": {"builtin": "iris"}},
            "output": {"modelName": "iris", "version": "1.2.0"},
            "suspend": True,  # the version is registered by hand here; the job must not train
        },
    }
    deployment = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris-pinned"},
        "spec": {"model": "iris", "version": "1.2.0"},
    }
    elsewhere = {**deployment, "metadata": {"name": "wine"}, "spec": {"model": "wine"}}
    for manifest in (job, deployment, elsewhere):
        kiln.apply(namespace, manifest)

    def lineage() -> str | None:
        # The operator serves the pinned version as stable once the ModelVersion is Validated.
        text = kiln.kiln("lineage", "mv/iris-1-2-0", "-n", namespace).stdout
        return text if "ModelDeployment iris-pinned (stable, pinned)" in text else None

    shown: str = eventually(lineage, "the lineage to show iris-pinned serving 1.2.0 as stable", 60)

    assert "ModelVersion iris-1-2-0: iris 1.2.0" in shown
    assert f"artifact {artifact[0]} sha256:{artifact[1]} (skops)" in shown
    assert re.search(r"TrainingJob iris-rf \((Pending|Suspended)\)", shown), shown
    assert "dataset pvc://datasets/iris.csv sha256:bbbbbbbbbbbb" in shown
    assert "code https://git.example.com/iris @ 3f9c2e1a7b4d" in shown
    assert "n_estimators = 200" in shown
    assert "ModelDeployment iris-pinned (stable, pinned)" in shown
    assert "wine" not in shown


def test_the_commands_say_clearly_what_they_cannot_do(kiln: Kiln, namespace: str) -> None:
    missing = kiln.kiln("approve", "mv/nothing-here", "-n", namespace, check=False)
    wrong_kind = kiln.kiln("lineage", "tj/iris-rf", "-n", namespace, check=False)
    bad_stage = kiln.kiln("stage", "mv/x", "Live", "-n", namespace, check=False)

    assert missing.returncode == 1
    assert f'ModelVersion "nothing-here" not found in namespace {namespace}' in missing.stderr
    assert wrong_kind.returncode == 2
    assert "'tj/iris-rf' is not a ModelVersion; name one as mv/NAME" in wrong_kind.stderr
    assert bad_stage.returncode == 2
    assert (
        "Invalid value for 'STAGE': 'Live' is not one of 'none', 'staging', 'production', 'archived'"
        in bad_stage.stderr
    )


def test_the_stage_request_annotation_records_who_asked(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    kiln.apply(namespace, model_version("iris-1-0-0", "1.0.0", artifact))

    kiln.kiln(
        "stage", "mv/iris-1-0-0", "Staging", "-n", namespace, "--as", "erin", "-m", "canary next week", "--wait", "0"
    )

    body = kiln.model_version(namespace, "iris-1-0-0")
    request = json.loads(body["metadata"]["annotations"]["kiln.dev/stage-request"])
    assert (request["stage"], request["user"], request["comment"]) == ("Staging", "erin", "canary next week")
    assert body["spec"]["stage"] == "Staging"
    status = kiln.wait_for_stage(namespace, "iris-1-0-0", "Staging")
    assert condition(status, "Ready")["status"] == "True"
