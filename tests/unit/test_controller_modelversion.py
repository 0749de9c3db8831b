"""The ModelVersion controller's observe → act, driven against the in-memory API server: the real
artifact check on a file in tmp_path, status through the status subresource, then Events."""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

import pytest

from kiln import artifacts
from kiln.api.modelversion import Artifact, ModelVersionPhase
from kiln.controllers import modelversion
from kiln.kube import client, fake
from kiln.registry import reasons

MODEL_VERSIONS = modelversion.MODEL_VERSIONS
DATA = b"a model, serialised"
Object = dict[str, Any]


def version(name: str, uri: str, sha256: str, **spec: Any) -> Object:
    return {
        "apiVersion": MODEL_VERSIONS.api_version,
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"modelName": "iris", "version": "1.0.0", "artifact": {"uri": uri, "sha256": sha256}, **spec},
    }


@pytest.fixture
def artifact(tmp_path: pathlib.Path) -> str:
    path = tmp_path / "iris.skops"
    path.write_bytes(DATA)
    return f"file://{path}"


@pytest.fixture
def api() -> fake.FakeApi:
    return fake.FakeApi(namespace="ml", clock=fake.ManualClock())


def controller(api: fake.FakeApi, root: pathlib.Path) -> modelversion.Controller:
    return modelversion.Controller(
        kube=api, artifact_settings=artifacts.Settings(file_root=root), artifact_timeout=5, clock=api.clock
    )


def phase_of(api: fake.FakeApi, name: str) -> str | None:
    found = api.get(MODEL_VERSIONS, "ml", name)
    assert found is not None
    return (found.get("status") or {}).get("phase")


GOOD_DIGEST = hashlib.sha256(DATA).hexdigest()
GATED = {"metrics": {"accuracy": 0.95}, "gates": [{"metric": "accuracy", "min": 0.9}]}


def test_a_version_whose_artifact_matches_its_digest_is_validated_with_events(
    api: fake.FakeApi, artifact: str, tmp_path: pathlib.Path
) -> None:
    api.add(MODEL_VERSIONS, version("iris-1", artifact, GOOD_DIGEST, **GATED))

    controller(api, tmp_path).reconcile("ml", "iris-1")

    assert phase_of(api, "iris-1") == ModelVersionPhase.VALIDATED
    assert [event["reason"] for event in api.events(about="iris-1")] == [reasons.GATE_PASSED, reasons.GATES_PASSED]


def test_the_validating_phase_is_recorded_before_the_artifact_is_read(
    api: fake.FakeApi, artifact: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.add(MODEL_VERSIONS, version("iris-1", artifact, GOOD_DIGEST))
    phases_while_reading: list[str | None] = []
    verify = artifacts.verify

    def noting_the_phase(*args: Any) -> None:
        phases_while_reading.append(phase_of(api, "iris-1"))
        verify(*args)

    monkeypatch.setattr(artifacts, "verify", noting_the_phase)
    controller(api, tmp_path).reconcile("ml", "iris-1")

    assert phases_while_reading == [ModelVersionPhase.VALIDATING]
    assert phase_of(api, "iris-1") == ModelVersionPhase.VALIDATED


def test_events_are_posted_after_status(api: fake.FakeApi, artifact: str, tmp_path: pathlib.Path) -> None:
    api.add(MODEL_VERSIONS, version("iris-1", artifact, GOOD_DIGEST, **GATED))

    controller(api, tmp_path).reconcile("ml", "iris-1")

    kinds = [(action.kind, action.subresource) for action in api.actions]
    assert kinds == [("ModelVersion", "status"), ("ModelVersion", "status"), ("Event", None), ("Event", None)]


def test_a_digest_that_does_not_match_rejects_the_version_with_a_warning(
    api: fake.FakeApi, artifact: str, tmp_path: pathlib.Path
) -> None:
    api.add(MODEL_VERSIONS, version("iris-1", artifact, "0" * 64))

    controller(api, tmp_path).reconcile("ml", "iris-1")

    assert phase_of(api, "iris-1") == ModelVersionPhase.REJECTED
    warnings = [event["reason"] for event in api.events(about="iris-1") if event["type"] == "Warning"]
    assert reasons.DIGEST_MISMATCH in warnings


def test_a_decided_version_reconciled_again_writes_nothing(
    api: fake.FakeApi, artifact: str, tmp_path: pathlib.Path
) -> None:
    api.add(MODEL_VERSIONS, version("iris-1", artifact, GOOD_DIGEST, **GATED))
    controller(api, tmp_path).reconcile("ml", "iris-1")
    written = list(api.actions)

    controller(api, tmp_path).reconcile("ml", "iris-1")

    assert api.actions == written


def test_a_deleted_version_is_left_alone(api: fake.FakeApi, tmp_path: pathlib.Path) -> None:
    controller(api, tmp_path).reconcile("ml", "gone")

    assert api.actions == []


class EditedWhileReading(fake.FakeApi):
    """Someone edits every ModelVersion right after the controller lists them."""

    def list(self, resource: client.Resource, namespace: str | None, label_selector: str | None = None) -> list[Object]:
        found = super().list(resource, namespace, label_selector)
        for item in found:
            self.patch(resource, namespace, item["metadata"]["name"], {"metadata": {"labels": {"edited": "yes"}}})
        return found


def test_status_write_over_a_newer_object_is_refused_and_posts_no_event(artifact: str, tmp_path: pathlib.Path) -> None:
    api = EditedWhileReading(namespace="ml")
    api.add(MODEL_VERSIONS, version("iris-1", artifact, GOOD_DIGEST, **GATED))

    with pytest.raises(client.ConflictError):
        controller(api, tmp_path).reconcile("ml", "iris-1")

    assert phase_of(api, "iris-1") is None
    assert api.events() == []


def test_a_large_artifact_gets_the_time_to_be_read() -> None:
    small = Artifact(uri="s3://models/m", sha256="a" * 64)
    large = Artifact(uri="s3://models/m", sha256="a" * 64, size_bytes=100 << 30)
    assert modelversion.read_timeout(small, 60) == 60
    assert modelversion.read_timeout(large, 60) == 60 + 3200
