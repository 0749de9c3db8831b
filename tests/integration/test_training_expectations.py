"""Data validation gates on the dev cluster: `kiln run` starts kiln-trainer on a dataset that breaks
its expectations (too few rows, empty values, a value out of range, a wrong type, drift from the
ModelVersion it retrains); the trainer refuses it before fitting, the job fails at once (no restart)
with every broken expectation in its status, and no ModelVersion is registered."""

from __future__ import annotations

import csv
import pathlib

import numpy as np
from kiln_cluster import Kiln
from sklearn.datasets import load_iris
from test_training import logs_of, pods_of, wait_for_phase

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def retrained_version(kiln: Kiln, namespace: str) -> None:
    """ModelVersion iris-1.0.0 with a baseline of the iris features, as kiln-trainer records one."""
    features = load_iris().data
    histograms = []
    for column, name in enumerate(COLUMNS):
        counts, edges = np.histogram(features[:, column], bins=10)
        histograms.append({"name": name, "bins": edges.tolist(), "counts": counts.tolist()})
    manifest = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "iris-1.0.0"},
        "spec": {
            "modelName": "iris",
            "version": "1.0.0",
            "artifact": {"uri": "pvc://kiln-models/iris/1.0.0/model.skops", "sha256": "0" * 64},
            "baseline": {"features": histograms, "sampleSize": len(features)},
        },
    }
    kiln.apply(namespace, manifest)


def corrupted_dataset(path: pathlib.Path) -> None:
    """Every third iris row (50) with petal_length shifted by 3 cm, three petal widths missing, one
    negative sepal length, and the species as numbers."""
    iris = load_iris()
    rows = iris.data[::3].copy()
    rows[:, 2] += 3.0
    rows[0, 0] = -1.0
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([*COLUMNS, "species"])
        for position, (row, label) in enumerate(zip(rows, iris.target[::3], strict=True)):
            values = [f"{value:.2f}" for value in row]
            if position in (3, 7, 11):
                values[3] = ""
            writer.writerow([*values, int(label)])


def test_a_dataset_breaking_its_expectations_fails_the_job_before_fitting(
    kiln: Kiln, namespace: str, tmp_path: pathlib.Path
) -> None:
    retrained_version(kiln, namespace)
    dataset = tmp_path / "iris-corrupted.csv"
    corrupted_dataset(dataset)
    expectations = {
        "minRows": 100,
        "columns": [
            {"name": "sepal_length", "type": "float", "min": 0},
            {"name": "petal_width", "maxNulls": 0},
            {"name": "species", "type": "string"},
        ],
        "drift": {"modelVersion": "iris-1.0.0", "maxPSI": 0.5},
    }
    job = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "retrain-iris"},
        "spec": {
            "sklearn": {
                "estimator": "sklearn.linear_model.LogisticRegression",
                "dataset": {"uri": f"file://{dataset}", "expectations": expectations},
                "targetColumn": "species",
            },
            "backoffLimit": 3,
            "output": {"modelName": "iris", "version": "1.1.0"},
        },
    }

    kiln.apply(namespace, job)
    status = wait_for_phase(kiln, namespace, "retrain-iris", "Failed")

    message = status["message"]
    assert message.startswith("retrain-iris-worker-0 refused its dataset (exit code 65): kiln-trainer: failed: ")
    assert "the dataset breaks 5 expectations" in message
    for broken in (
        "minRows: the dataset has 50 rows, fewer than 100",
        "columns[sepal_length].min: values as low as -1, below 0",
        "columns[petal_width].maxNulls: 3 empty values, more than 0",
        "columns[species].type: the column is int64, not string",
        "drift (against modelversion iris-1.0.0).maxPSI: feature petal_length has PSI",
    ):
        assert broken in message, message
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "DatasetRejected")
    assert status["restarts"] == 0
    assert "modelVersion" not in status
    versions = kiln.api().list_namespaced_custom_object("kiln.dev", "v1alpha1", namespace, "modelversions")["items"]
    assert [version["metadata"]["name"] for version in versions] == ["iris-1.0.0"]
    [pod] = pods_of(kiln, namespace, "retrain-iris")
    logs = logs_of(kiln, namespace, pod.metadata.name)
    assert "loading dataset" in logs
    assert "fitted" not in logs.replace("nothing was fitted", "")
    kiln.wait_for_events(namespace, "retrain-iris", ("Warning", "DatasetRejected"))
