"""The registry's pure plan, with time injected: validation, duplicates, approvals, stages,
supersession, and the promise that a plan run again on its own result plans nothing new."""

from __future__ import annotations

import datetime
from typing import Any

from kiln.api import modelversion
from kiln.api.modelversion import ModelVersionPhase, Stage
from kiln.registry import observed, plan, reasons, timeline

T0 = datetime.datetime(2024, 6, 11, 10, 0, tzinfo=datetime.UTC)
VERIFIED = observed.ArtifactCheck(observed.ArtifactOutcome.VERIFIED, "pvc://models/m has sha256 aaa")


def at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def body(
    name: str, version: str, *, created: int = 0, status: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": "ml", "generation": 1, "creationTimestamp": at(created).isoformat()},
        "spec": {
            "modelName": "iris",
            "version": version,
            "artifact": {"uri": "pvc://models/m", "sha256": "a" * 64},
            **spec,
        },
    }
    if status is not None:
        manifest["status"] = status
    return manifest


def settle(manifest: dict[str, Any], others: list[dict[str, Any]], now: datetime.datetime = T0) -> plan.Plan:
    """Plan as the controller does: read the artifact when asked, then plan again on the recorded status."""
    first = plan.plan(observed.observe(manifest, others), now)
    if not first.check_artifact:
        return first
    recorded = {**manifest, "status": first.status.to_wire()}
    return plan.plan(observed.observe(recorded, others, VERIFIED), now)


def applied(manifest: dict[str, Any], result: plan.Plan) -> dict[str, Any]:
    return {**manifest, "status": result.status.to_wire()}


def test_a_new_version_is_validating_until_its_artifact_is_read() -> None:
    first = plan.plan(observed.observe(body("iris-1", "1.0.0"), []), T0)

    assert first.check_artifact
    assert first.status.phase == ModelVersionPhase.VALIDATING
    assert first.events == ()
    assert [c.type for c in first.status.conditions] == [reasons.READY, reasons.VALIDATED]


def test_a_version_is_decided_once_and_planning_again_changes_nothing() -> None:
    manifest = body("iris-1", "1.0.0", metrics={"accuracy": 0.95}, gates=[{"metric": "accuracy", "min": 0.9}])
    decided = settle(manifest, [])
    again = plan.plan(observed.observe(applied(manifest, decided), []), at(5))

    assert decided.status.phase == ModelVersionPhase.VALIDATED
    assert [event.reason for event in decided.events] == [reasons.GATE_PASSED, reasons.GATES_PASSED]
    assert not again.check_artifact
    assert again.events == ()
    assert again.status == decided.status


def test_a_wrong_digest_rejects_and_an_unreachable_store_does_not() -> None:
    manifest = body("iris-1", "1.0.0")
    validating = applied(manifest, plan.plan(observed.observe(manifest, []), T0))
    mismatch = observed.ArtifactCheck(observed.ArtifactOutcome.MISMATCH, "the sha256 of pvc://models/m is bbb")
    unreachable = observed.ArtifactCheck(observed.ArtifactOutcome.UNREACHABLE, "KILN_PVC_ROOT is not set")

    rejected = plan.plan(observed.observe(validating, [], mismatch), T0).status
    unchecked = plan.plan(observed.observe(validating, [], unreachable), T0).status

    assert (rejected.phase, rejected.message) == (ModelVersionPhase.REJECTED, "the sha256 of pvc://models/m is bbb")
    assert unchecked.phase == ModelVersionPhase.VALIDATED
    verified = next(c for c in unchecked.conditions if c.type == reasons.ARTIFACT_VERIFIED)
    assert (verified.status, verified.reason) == ("Unknown", reasons.ARTIFACT_UNREACHABLE)


def test_the_version_validated_first_keeps_it_even_when_a_duplicate_was_created_in_the_same_second() -> None:
    holder = body("iris-b", "1.0.0")
    holder = applied(holder, settle(holder, []))
    newcomer = body("iris-a", "1.0.0+rebuild")

    result = plan.plan(observed.observe(newcomer, [holder]), T0)

    assert not result.check_artifact
    assert result.status.phase == ModelVersionPhase.REJECTED
    assert result.status.duplicate_of == "iris-b"
    assert "already registered by ModelVersion iris-b (1.0.0), created first" in (result.status.message or "")


def test_between_two_new_versions_the_first_created_holds_the_version() -> None:
    older, newer = body("iris-z", "1.0.0", created=0), body("iris-a", "1.0.0", created=1)

    assert settle(older, [newer]).status.phase == ModelVersionPhase.VALIDATED
    assert settle(newer, [older]).status.duplicate_of == "iris-z"


def test_approvals_count_each_approver_once_and_are_audited_once() -> None:
    approvals = [
        {"approver": "alice", "comment": "ok", "time": at(1).isoformat()},
        {"approver": "alice", "time": at(2).isoformat()},
        {"approver": "bob", "time": at(3).isoformat()},
    ]
    manifest = body("iris-1", "1.0.0", requiredApprovals=3, approvals=approvals)
    result = settle(manifest, [])
    again = plan.plan(observed.observe(applied(manifest, result), []), at(9))

    assert result.status.approved_by == ["alice", "bob"]
    assert [(entry.action, entry.user, entry.time) for entry in result.status.history] == [
        ("Approved", "alice", at(1)),
        ("Approved", "bob", at(3)),
    ]
    approved = next(c for c in result.status.conditions if c.type == reasons.APPROVED)
    assert (approved.status, approved.message) == ("False", "approved by alice, bob (2 of 3 required)")
    assert again.events == ()


def test_a_stage_change_is_granted_and_attributed_to_who_kiln_stage_says_asked() -> None:
    request = modelversion.StageRequest(stage=Stage.STAGING, user="carol", time=T0, comment="A/B test")
    manifest = body("iris-1", "1.0.0", stage="Staging")
    manifest["metadata"]["annotations"] = {
        modelversion.STAGE_REQUEST_ANNOTATION: request.model_dump_json(by_alias=True)
    }

    status = settle(manifest, [], at(2)).status

    assert (status.stage, status.stage_since) == (Stage.STAGING, at(2))
    [entry] = status.history
    assert (entry.user, entry.from_stage, entry.to_stage, entry.comment, entry.time) == (
        "carol",
        "None",
        "Staging",
        "A/B test",
        at(2),
    )


def test_a_request_for_another_stage_than_spec_stage_does_not_attribute_it() -> None:
    request = modelversion.StageRequest(stage=Stage.ARCHIVED, user="carol", time=T0)
    manifest = body("iris-1", "1.0.0", stage="Staging")
    manifest["metadata"]["annotations"] = {
        modelversion.STAGE_REQUEST_ANNOTATION: request.model_dump_json(by_alias=True)
    }
    garbled = body("iris-2", "2.0.0", stage="Staging")
    garbled["metadata"]["annotations"] = {modelversion.STAGE_REQUEST_ANNOTATION: "{not json"}

    for version in (manifest, garbled):
        [entry] = settle(version, []).status.history
        assert entry.user == plan.UNATTRIBUTED


def test_a_refusal_is_announced_once() -> None:
    manifest = body("iris-1", "1.0.0", stage="Production")
    first = settle(manifest, [])
    again = plan.plan(observed.observe(applied(manifest, first), []), at(1))

    refusals = [e for e in first.events if e.reason == reasons.INVALID_STAGE_TRANSITION]
    assert [(e.type, e.message) for e in refusals] == [
        (
            "Warning",
            "stage Production: None → Production is not allowed; from None a version may move to Archived, Staging",
        )
    ]
    assert again.events == ()
    assert first.status.stage == Stage.NONE


def production(name: str, version: str, since: datetime.datetime, **spec: Any) -> dict[str, Any]:
    """A version already in Production since `since`, promoted by dana."""
    status = {
        "phase": "Validated",
        "validatedInputs": "x",
        "stage": "Production",
        "stageSince": since.isoformat(),
        "history": [
            {
                "action": "StageChanged",
                "user": "dana",
                "time": since.isoformat(),
                "fromStage": "Staging",
                "toStage": "Production",
            }
        ],
    }
    return body(name, version, status=status, stage="Production", **spec)


def test_promotion_supersedes_every_older_production_version_and_only_those() -> None:
    older = production("iris-1", "1.0.0", at(0))
    newer = production("iris-3", "3.0.0", at(20))
    promoted = production("iris-2", "2.0.0", at(10))

    result = settle(promoted, [older, newer], at(11))

    assert [(s.name, s.request.stage, s.request.user) for s in result.supersede] == [("iris-1", Stage.ARCHIVED, "dana")]
    assert result.supersede[0].request.comment == "superseded in Production by iris-2 (2.0.0)"


def test_a_version_already_asked_to_step_down_is_not_asked_again() -> None:
    stepping_down = production("iris-1", "1.0.0", at(0))
    stepping_down["spec"]["stage"] = "Archived"

    result = settle(production("iris-2", "2.0.0", at(10)), [stepping_down], at(11))

    assert result.supersede == ()


def test_a_challenger_is_judged_against_the_latest_production_version() -> None:
    champion = production("iris-1", "1.0.0", at(0), metrics={"accuracy": 0.97})
    manifest = body(
        "iris-2", "2.0.0", metrics={"accuracy": 0.9}, gates=[{"metric": "accuracy", "noWorseThanProductionBy": 0.05}]
    )

    result = settle(manifest, [champion])

    assert result.status.phase == ModelVersionPhase.REJECTED
    assert result.status.gate_results[0].expected == ">= 0.92 (Production 1.0.0 has 0.97, allowed slack 0.05)"


def test_the_audit_trail_is_bounded_keeping_the_newest() -> None:
    approvals = [{"approver": f"user-{n}", "time": at(n).isoformat()} for n in range(modelversion.HISTORY_LIMIT + 5)]
    manifest = body("iris-1", "1.0.0")
    manifest["spec"]["approvals"] = approvals[:64]
    first = settle(manifest, [])
    manifest["spec"]["approvals"] = approvals[64:128]
    status = plan.plan(observed.observe(applied(manifest, first), []), at(1)).status

    assert len(status.history) == modelversion.HISTORY_LIMIT
    assert status.history[-1].user == f"user-{len(approvals) - 1}"


def test_the_production_timeline_follows_the_audit_trails() -> None:
    first = production("iris-1", "1.0.0", at(0))
    first["status"]["history"].append(
        {
            "action": "StageChanged",
            "user": "dana",
            "time": at(10).isoformat(),
            "fromStage": "Production",
            "toStage": "Archived",
        }
    )
    second = production("iris-2", "2.0.0", at(10))

    periods = timeline.production_periods(modelversion.ModelVersion.model_validate(v) for v in (second, first))

    assert [(p.version, p.since, p.until, p.promoted_by) for p in periods] == [
        ("1.0.0", at(0), at(10), "dana"),
        ("2.0.0", at(10), None, "dana"),
    ]
