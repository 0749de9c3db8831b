"""kiln-server's pure parts: what it is told, which version a request reaches, what its metrics count."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kiln.api import modelversion
from kiln.runtime.server import metrics, protocol, repository, settings


def manifest(version: str = "1.0.0", name: str = "iris", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": f"{name}-{version}"},
        "spec": {
            "modelName": name,
            "version": version,
            "artifact": {"uri": "file:///models/iris.skops", "sha256": "a" * 64},
            **spec,
        },
    }


def parsed(*manifests: dict[str, Any]) -> list[modelversion.ModelVersion]:
    return [modelversion.ModelVersion.model_validate(document) for document in manifests]


def test_model_versions_come_from_multi_document_files_and_the_env(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "versions.yaml"
    path.write_text("---\n" + json.dumps(manifest("1.0.0")) + "\n---\n" + json.dumps(manifest("1.1.0")) + "\n")

    versions = settings.model_versions([path], json.dumps([manifest("2.0.0", name="roses")]))

    assert [(v.spec.model_name, v.spec.version) for v in versions] == [
        ("iris", "1.0.0"),
        ("iris", "1.1.0"),
        ("roses", "2.0.0"),
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (None, "no ModelVersion to serve"),
        ("{", "not JSON"),
        (json.dumps(manifest()), "JSON list"),
        (json.dumps([manifest(), manifest()]), "declared more than once"),
        (json.dumps([{"kind": "ModelVersion", "spec": {}}]), "document 0 is not a ModelVersion"),
    ],
)
def test_what_cannot_be_served_is_refused_at_start(env: str | None, message: str) -> None:
    with pytest.raises(settings.SettingsError, match=message):
        settings.model_versions([], env)


def test_fault_injection_is_off_by_default_and_parsed_from_camel_case_json() -> None:
    assert not settings.FaultInjection.parse(None).active
    faults = settings.FaultInjection.parse('{"errorRate": 0.3, "delayRate": 0.5, "delaySeconds": 0.2}')
    assert faults == settings.FaultInjection(error_rate=0.3, delay_rate=0.5, delay_seconds=0.2)
    assert faults.active


@pytest.mark.parametrize(
    "text",
    ['{"errorRate": 2}', '{"oops": 1}', '{"errorRate": "x"}', '{"errorStatus": 200}', "[]", "{", '{"delayRate": true}'],
)
def test_bad_fault_injection_is_refused(text: str) -> None:
    with pytest.raises(settings.SettingsError):
        settings.FaultInjection.parse(text)


def test_versions_sort_as_semver_does() -> None:
    versions = ["1.10.0", "1.9.0", "2.0.0-rc.1", "2.0.0", "2.0.0-rc.10", "2.0.0-rc.2", "2.0.0-alpha", "1.9.0+build.1"]

    ordered = sorted(versions, key=repository.semver_key)

    assert ordered == [
        "1.9.0",
        "1.9.0+build.1",
        "1.10.0",
        "2.0.0-alpha",
        "2.0.0-rc.1",
        "2.0.0-rc.2",
        "2.0.0-rc.10",
        "2.0.0",
    ]


def test_a_request_without_a_version_reaches_the_newest_ready_version() -> None:
    models = repository.Repository(parsed(manifest("1.9.0"), manifest("1.10.0"), manifest("1.2.0")))
    by_number = {slot.number: slot for slot in models.slots}

    assert models.find("iris", None).number == "1.10.0"
    by_number["1.9.0"].state = repository.State.READY
    assert models.find("iris", None).number == "1.9.0"
    by_number["1.10.0"].state = repository.State.READY
    assert models.find("iris", None).number == "1.10.0"
    assert models.find("iris", "1.2.0").number == "1.2.0"
    assert not models.ready


@pytest.mark.parametrize(("name", "version"), [("roses", None), ("iris", "3.0.0")])
def test_an_unknown_model_or_version_is_404(name: str, version: str | None) -> None:
    models = repository.Repository(parsed(manifest("1.0.0")))

    with pytest.raises(protocol.RequestError) as refused:
        models.find(name, version)

    assert refused.value.status == 404


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(key) == value for key, value in labels.items()):
                return float(found.value)
    raise AssertionError(f"no {name} {labels}")


def test_feature_values_are_binned_on_the_baseline_edges_as_le_buckets() -> None:
    server_metrics = metrics.ServerMetrics()
    baseline = {"features": [{"name": "petal", "bins": [0.0, 1.0, 2.0], "counts": [5, 5]}], "sampleSize": 10}
    signature = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 2]}], "featureNames": ["sepal", "petal"]}
    version = parsed(manifest(baseline=baseline, signature=signature))[0]
    _, observed = server_metrics.for_version(version)
    observed.track_classes(np.array(["a", "b", "c"]))

    observed.observe(np.array([[9.0, -1.0], [9.0, 0.0], [9.0, 0.5]]), np.array(["a", "a", "b"]))
    observed.observe(np.array([[9.0, 1.0], [9.0, 3.0]]), np.array(["b", "b"]))
    text = server_metrics.render().decode()

    petal = {"model": "iris", "version": "1.0.0", "feature": "petal"}
    assert [sample(text, "kiln_server_feature_values_bucket", le=le, **petal) for le in ("0.0", "1.0", "2.0")] == [
        2,
        4,
        4,
    ]
    assert sample(text, "kiln_server_feature_values_bucket", le="+Inf", **petal) == 5
    assert sample(text, "kiln_server_feature_values_sum", **petal) == 3.5
    assert [sample(text, "kiln_server_predictions_total", **{"class": label}) for label in "abc"] == [2, 3, 0]
    assert "sepal" not in text


def test_queued_observations_are_binned_once_the_queue_grows_long() -> None:
    server_metrics = metrics.ServerMetrics()
    baseline = {"features": [{"name": "f", "bins": [0.0, 1.0], "counts": [1]}], "sampleSize": 1}
    _, observed = server_metrics.for_version(parsed(manifest(baseline=baseline))[0])

    observed.observe(np.zeros((metrics.FOLD_ROWS + 1, 1)), None)

    assert observed.bin_counts[0].tolist() == [metrics.FOLD_ROWS + 1, 0, 0]


def test_request_counts_and_latency_are_recorded_per_version_and_code() -> None:
    server_metrics = metrics.ServerMetrics()
    recorder, _ = server_metrics.for_version(parsed(manifest())[0])

    recorder.record(200, 0.00012)
    recorder.record(200, 0.0004)
    recorder.record(400, 0.00003)
    text = server_metrics.render().decode()

    labels = {"model": "iris", "version": "1.0.0"}
    assert sample(text, "kiln_server_requests_total", code="200", **labels) == 2
    assert sample(text, "kiln_server_requests_total", code="400", **labels) == 1
    assert sample(text, "kiln_server_requests_total", code="500", **labels) == 0
    assert sample(text, "kiln_server_request_duration_seconds_bucket", le="5e-05", **labels) == 1
    assert sample(text, "kiln_server_request_duration_seconds_bucket", le="0.00015", **labels) == 2
    assert sample(text, "kiln_server_request_duration_seconds_bucket", le="0.0004", **labels) == 3
