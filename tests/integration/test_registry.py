"""The ModelVersion registry on the dev cluster: gates, champion/challenger, approvals, stages,
promotion and its history, duplicates, and digest-pinned artifacts, driven with kubectl and the
`kubernetes` client as a user would."""

from __future__ import annotations

import datetime
import json
import os

import pytest
from kiln_cluster import Kiln, condition, model_version

MODEL_BYTES = b"a model, serialized"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def patch_spec(kiln: Kiln, namespace: str, name: str, spec: dict[str, object]) -> None:
    kiln.kubectl("patch", "mv", name, "-n", namespace, "--type", "merge", "-p", json.dumps({"spec": spec}))


def promote(kiln: Kiln, namespace: str, name: str) -> None:
    """Staging, then Production, with kubectl as a GitOps tool would."""
    patch_spec(kiln, namespace, name, {"stage": "Staging"})
    kiln.wait_for_stage(namespace, name, "Staging")
    patch_spec(kiln, namespace, name, {"stage": "Production"})
    kiln.wait_for_stage(namespace, name, "Production")


def test_a_version_meeting_its_gates_is_validated_with_its_digest_checked(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/1.0.0/model.skops", MODEL_BYTES)
    gates = [{"metric": "accuracy", "min": 0.9}, {"metric": "latency_p99_ms", "max": 20}]
    kiln.apply(
        namespace,
        model_version("iris-1-0-0", "1.0.0", artifact, metrics={"accuracy": 0.96, "latency_p99_ms": 4.1}, gates=gates),
    )

    status = kiln.wait_for_phase(namespace, "iris-1-0-0", "Validated")

    assert [(r["metric"], r["expected"], r["actual"], r["passed"]) for r in status["gateResults"]] == [
        ("accuracy", ">= 0.9", 0.96, True),
        ("latency_p99_ms", "<= 20", 4.1, True),
    ]
    assert condition(status, "ArtifactVerified")["reason"] == "DigestMatches"
    assert condition(status, "Ready")["status"] == "True"
    assert status["observedGeneration"] == kiln.model_version(namespace, "iris-1-0-0")["metadata"]["generation"]
    kiln.wait_for_events(
        namespace,
        "iris-1-0-0",
        ("Normal", "GatePassed", "accuracy = 0.96, expected >= 0.9: passed"),
        ("Normal", "GatePassed", "latency_p99_ms = 4.1, expected <= 20: passed"),
    )


def test_a_version_missing_its_gates_is_rejected_naming_each_failing_gate(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/0.9.0/model.skops", MODEL_BYTES)
    gates = [
        {"metric": "accuracy", "min": 0.9},
        {"metric": "latency_p99_ms", "max": 20},
        {"metric": "f1_macro", "min": 0.5},
    ]
    metrics = {"accuracy": 0.82, "latency_p99_ms": 35.0, "f1_macro": 0.8}
    kiln.apply(namespace, model_version("iris-0-9-0", "0.9.0", artifact, metrics=metrics, gates=gates))

    status = kiln.wait_for_phase(namespace, "iris-0-9-0", "Rejected")

    assert [r["passed"] for r in status["gateResults"]] == [False, False, True]
    assert "accuracy 0.82 < 0.9" in status["message"]
    assert "latency_p99_ms 35 > 20" in status["message"]
    assert "f1_macro" not in status["message"]
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "GatesFailed")
    events = kiln.wait_for_events(namespace, "iris-0-9-0", ("Warning", "GatesFailed"))
    assert [event for event in events if event[1] == "GateFailed"] == [
        ("Warning", "GateFailed", "accuracy = 0.82, expected >= 0.9: failed: accuracy 0.82 < 0.9"),
        ("Warning", "GateFailed", "latency_p99_ms = 35, expected <= 20: failed: latency_p99_ms 35 > 20"),
    ]


def test_a_challenger_is_compared_with_the_production_version(kiln: Kiln, namespace: str) -> None:
    champion_gates = [{"metric": "accuracy", "min": 0.9}]
    artifact = kiln.artifact(namespace, "models", "iris/1.0.0/model.skops", MODEL_BYTES)
    kiln.apply(
        namespace, model_version("iris-1-0-0", "1.0.0", artifact, metrics={"accuracy": 0.95}, gates=champion_gates)
    )
    kiln.wait_for_phase(namespace, "iris-1-0-0", "Validated")
    promote(kiln, namespace, "iris-1-0-0")

    challenger_gates = [{"metric": "accuracy", "min": 0.85, "noWorseThanProductionBy": 0.01}]
    kiln.apply(
        namespace, model_version("iris-1-1-0", "1.1.0", artifact, metrics={"accuracy": 0.9}, gates=challenger_gates)
    )
    kiln.apply(
        namespace, model_version("iris-1-2-0", "1.2.0", artifact, metrics={"accuracy": 0.94}, gates=challenger_gates)
    )

    worse = kiln.wait_for_phase(namespace, "iris-1-1-0", "Rejected")
    close_enough = kiln.wait_for_phase(namespace, "iris-1-2-0", "Validated")
    assert worse["gateResults"][0]["passed"] is True
    assert worse["gateResults"][1] | {"message": ""} == {
        "metric": "accuracy",
        "expected": ">= 0.94 (Production 1.0.0 has 0.95, allowed slack 0.01)",
        "actual": 0.9,
        "passed": False,
        "message": "",
    }
    assert "worse than Production 1.0.0 by more than 0.01" in worse["message"]
    assert [r["passed"] for r in close_enough["gateResults"]] == [True, True]


def test_production_needs_distinct_approvals(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/2.0.0/model.skops", MODEL_BYTES)
    kiln.apply(namespace, model_version("iris-2-0-0", "2.0.0", artifact, requiredApprovals=2, stage="Staging"))
    kiln.wait_for_stage(namespace, "iris-2-0-0", "Staging")

    patch_spec(kiln, namespace, "iris-2-0-0", {"stage": "Production"})
    waiting = kiln.wait_for_stage_reason(namespace, "iris-2-0-0", "AwaitingApprovals")
    assert waiting["stage"] == "Staging"

    twice = [{"approver": "alice", "comment": "looks good", "time": now()}, {"approver": "alice", "time": now()}]
    patch_spec(kiln, namespace, "iris-2-0-0", {"approvals": twice})
    counted = kiln.wait_for(
        namespace, "iris-2-0-0", "to count alice", lambda status: status.get("approvedBy") == ["alice"]
    )
    assert counted["stage"] == "Staging"
    assert (
        condition(counted, "StageGranted")["message"] == "Production needs 2 distinct approvals and the version has 1"
    )

    patch_spec(kiln, namespace, "iris-2-0-0", {"approvals": [*twice, {"approver": "bob", "time": now()}]})
    promoted = kiln.wait_for_stage(namespace, "iris-2-0-0", "Production")

    assert promoted["approvedBy"] == ["alice", "bob"]
    assert [(entry["action"], entry["user"]) for entry in promoted["history"]] == [
        ("StageChanged", "unknown"),
        ("Approved", "alice"),
        ("Approved", "bob"),
        ("StageChanged", "unknown"),
    ]
    events = kiln.wait_for_events(namespace, "iris-2-0-0", ("Normal", "Approved", "approved by bob (2 of 2 required)"))
    approvals = [message for _, reason, message in events if reason == "Approved"]
    assert approvals == ["approved by alice (1 of 2 required): looks good", "approved by bob (2 of 2 required)"]


def test_promotion_archives_the_previous_production_version_and_keeps_both_in_history(
    kiln: Kiln, namespace: str
) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    kiln.apply(namespace, model_version("iris-1-0-0", "1.0.0", artifact))
    kiln.apply(namespace, model_version("iris-1-1-0", "1.1.0", artifact))
    promote(kiln, namespace, "iris-1-0-0")

    promote(kiln, namespace, "iris-1-1-0")

    old = kiln.wait_for_stage(namespace, "iris-1-0-0", "Archived")
    new = kiln.status(namespace, "iris-1-1-0")
    assert kiln.model_version(namespace, "iris-1-0-0")["spec"]["stage"] == "Archived"
    moves = [(entry["fromStage"], entry["toStage"]) for entry in old["history"]]
    assert moves == [("None", "Staging"), ("Staging", "Production"), ("Production", "Archived")]
    assert old["history"][-1]["comment"] == "superseded in Production by iris-1-1-0 (1.1.0)"
    assert new["history"][-1]["toStage"] == "Production"
    promoted, archived = (datetime.datetime.fromisoformat(s["history"][-1]["time"]) for s in (new, old))
    assert promoted <= archived
    superseded = ("Normal", "Superseded", "archiving iris-1-0-0 (1.0.0), the previous Production version")
    kiln.wait_for_events(namespace, "iris-1-1-0", superseded)


def test_a_duplicate_version_is_rejected_naming_the_version_registered_first(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    kiln.apply(namespace, model_version("iris-first", "3.0.0", artifact))
    kiln.wait_for_phase(namespace, "iris-first", "Validated")

    kiln.apply(namespace, model_version("iris-again", "3.0.0+rebuild.2", artifact))

    status = kiln.wait_for_phase(namespace, "iris-again", "Rejected")
    assert condition(status, "Validated")["reason"] == "DuplicateVersion"
    assert "already registered by ModelVersion iris-first (3.0.0)" in status["message"]
    assert kiln.status(namespace, "iris-first")["phase"] == "Validated"
    kiln.wait_for_events(namespace, "iris-again", ("Warning", "DuplicateVersion"))


def test_stage_changes_of_a_rejected_version_are_refused_with_a_reason(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    gates = [{"metric": "accuracy", "min": 0.9}]
    kiln.apply(namespace, model_version("iris-bad", "0.1.0", artifact, metrics={"accuracy": 0.5}, gates=gates))
    kiln.wait_for_phase(namespace, "iris-bad", "Rejected")

    patch_spec(kiln, namespace, "iris-bad", {"stage": "Staging"})

    status = kiln.wait_for_stage_reason(namespace, "iris-bad", "VersionRejected")
    assert status["stage"] == "None"
    assert (
        condition(status, "StageGranted")["message"]
        == "the version is Rejected, so it may only be archived, not moved to Staging"
    )
    refusal = "stage Staging: the version is Rejected, so it may only be archived, not moved to Staging"
    kiln.wait_for_events(namespace, "iris-bad", ("Warning", "VersionRejected", refusal))

    patch_spec(kiln, namespace, "iris-bad", {"stage": "Archived"})
    kiln.wait_for_stage(namespace, "iris-bad", "Archived")


def test_a_stage_the_transition_table_forbids_is_refused(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    kiln.apply(namespace, model_version("iris-skip", "1.0.0", artifact, stage="Production"))

    status = kiln.wait_for_stage_reason(namespace, "iris-skip", "InvalidStageTransition")
    assert status["phase"] == "Validated"
    assert status["stage"] == "None"
    assert condition(status, "Ready")["status"] == "False"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("digest", "DigestMismatch"),
        ("dotdot", "UnsafeArtifactURI"),
        ("symlink", "UnsafeArtifactURI"),
        ("missing", "ArtifactNotFound"),
    ],
)
def test_an_artifact_that_is_not_the_one_pinned_is_rejected(kiln: Kiln, namespace: str, case: str, reason: str) -> None:
    uri, sha256 = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    secret = kiln.pvc_root / namespace / "other-claim" / "secret.bin"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(MODEL_BYTES)
    os.symlink(secret, kiln.pvc_root / namespace / "models" / "escape.skops")
    artifact = {
        "digest": (uri, "0" * 64),
        "dotdot": ("pvc://models/../other-claim/secret.bin", sha256),
        "symlink": ("pvc://models/escape.skops", sha256),
        "missing": ("pvc://models/iris/absent.skops", sha256),
    }[case]

    kiln.apply(namespace, model_version("iris-artifact", "1.0.0", artifact))

    status = kiln.wait_for_phase(namespace, "iris-artifact", "Rejected")
    assert condition(status, "ArtifactVerified") | {"lastTransitionTime": None, "message": None} == {
        "type": "ArtifactVerified",
        "status": "False",
        "reason": reason,
        "message": None,
        "lastTransitionTime": None,
        "observedGeneration": 1,
    }
    assert artifact[0] in status["message"]


def test_an_artifact_store_this_operator_cannot_read_leaves_the_digest_unchecked(kiln: Kiln, namespace: str) -> None:
    kiln.apply(namespace, model_version("iris-s3", "1.0.0", ("s3://models/iris/model.skops", "a" * 64)))

    status = kiln.wait_for_phase(namespace, "iris-s3", "Validated")

    verified = condition(status, "ArtifactVerified")
    assert (verified["status"], verified["reason"]) == ("Unknown", "ArtifactUnreachable")
    # the operator runs without AWS_* settings here: the message names what to set
    assert "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in verified["message"]
    assert verified["message"].endswith("the digest was not checked")


def test_changing_the_gates_validates_the_version_again(kiln: Kiln, namespace: str) -> None:
    artifact = kiln.artifact(namespace, "models", "iris/model.skops", MODEL_BYTES)
    kiln.apply(namespace, model_version("iris-regate", "1.0.0", artifact, metrics={"accuracy": 0.92}))
    kiln.wait_for_phase(namespace, "iris-regate", "Validated")

    patch_spec(kiln, namespace, "iris-regate", {"gates": [{"metric": "accuracy", "min": 0.95}]})

    status = kiln.wait_for_phase(namespace, "iris-regate", "Rejected")
    assert status["message"] == "1 gate check(s) failed: accuracy 0.92 < 0.95"
