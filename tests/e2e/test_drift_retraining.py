"""Drift monitoring closing the loop end to end: real kiln-server pods export their input features
on the baseline's bins, a real Prometheus scrapes them, and `kiln run` compares the live window
with the ModelVersion's baseline (recorded by kiln-trainer's own code) and retrains through a real
TrainingJob on shifted data the test provides.

Given iris 1.0.0 serving with drift checked every 5 s over a 20 s window: traffic drawn from the
training data keeps drift under the threshold; traffic with the same features at shifted means
raises DriftDetected and starts exactly one TrainingJob, which registers 1.0.1; once the traffic is
back to normal and shifts again inside the cooldown, nothing starts and status and an Event say why.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from polling import eventually
from rollout_world import GROUP, INFER, VERSION, World
from sklearn.datasets import load_iris

from kiln.runtime.trainer import baseline

IRIS = load_iris()
SHIFT = np.array([1.0, 0.8, 2.0, 0.8])
"""The shifted traffic's means move by this much per feature: past the training range's top bins."""
DATASET = "data/iris-shifted.csv"
WAIT = 180.0
MONITORING = {
    "drift": {"interval": "5s", "window": "20s", "minSamples": 200},
    "retraining": {
        "cooldown": "1h",
        "triggers": [{"type": "Drift"}],
        "template": {
            "sklearn": {
                "estimator": "sklearn.linear_model.LogisticRegression",
                "params": {"max_iter": 500},
                "dataset": {"uri": f"pvc://kiln-models/{DATASET}"},
                "targetColumn": "target",
            },
            "output": {"modelName": "iris", "version": "0.0.0"},
        },
    },
}


class Sender:
    """Batches of iris rows (moved by `shift`) through the router, one after another, until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shift = np.zeros(4)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drift-traffic", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                rows = IRIS.data[(self.sent + np.arange(25)) % len(IRIS.data)] + self.shift
                tensor = {"name": "features", "shape": [25, 4], "datatype": "FP64", "data": rows.ravel().tolist()}
                with contextlib.suppress(httpx.HTTPError):  # a pod restarting; the next batch goes on
                    client.post(self.url + INFER, json={"inputs": [tensor]})
                self.sent += 25
                self._stop.wait(0.05)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def jobs(world: World, namespace: str) -> list[dict[str, Any]]:
    found = world.kiln.api().list_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs")
    return list(found["items"])


def drift_detected(status: dict[str, Any]) -> str | None:
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == "DriftDetected"), None)


def checks_since(status: dict[str, Any], count: int) -> Callable[[dict[str, Any]], bool]:
    """Holds once `count` more judged drift checks have run than `status` had."""
    before = len(status.get("drift", {}).get("history", []))
    return lambda s: (
        len([c for c in s.get("drift", {}).get("history", []) if c.get("score") is not None]) >= before + count
    )


@pytest.fixture
def serving(world: World, namespace: str) -> Iterator[Sender]:
    features = IRIS.data.astype(np.float64)
    recorded = baseline.compute(features, list(IRIS.feature_names)).to_wire()
    world.register(namespace, "1.0.0", baseline=recorded)
    shifted = np.column_stack([features + SHIFT, IRIS.target])
    header = ",".join([*IRIS.feature_names, "target"])
    rows = "\n".join(",".join(f"{value:g}" for value in row) for row in shifted)
    world.kiln.artifact(namespace, "kiln-models", DATASET, f"{header}\n{rows}\n".encode())
    world.deploy(namespace, {"model": "iris", "version": "1.0.0", "monitoring": MONITORING})
    world.wait_for(namespace, "Healthy", lambda s: s.get("phase") == "Healthy")
    with Sender(world.url(namespace)) as sender:
        yield sender


def test_shifted_traffic_retrains_once_and_a_second_drift_in_the_cooldown_says_why(
    world: World, namespace: str, serving: Sender
) -> None:
    # Given traffic drawn from the training data, drift stays under the threshold.
    status = world.wait_for(namespace, "three judged drift checks", checks_since({}, 3), WAIT)
    assert drift_detected(status) == "False", status["drift"]
    assert status["drift"]["score"] < status["drift"]["threshold"] == 0.2
    assert status["drift"]["samples"] >= 200
    assert jobs(world, namespace) == []

    # When the traffic shifts, DriftDetected rises and exactly one TrainingJob starts.
    serving.shift = SHIFT
    detected = world.wait_for(namespace, "DriftDetected", lambda s: drift_detected(s) == "True", WAIT)
    assert detected["drift"]["score"] > 0.2
    (job,) = eventually(lambda: jobs(world, namespace), "the retraining TrainingJob", 30)
    name = job["metadata"]["name"]
    assert name == "iris-retrain-1-0-1"
    assert job["metadata"]["labels"]["kiln.dev/retraining-for"] == "iris"
    assert job["metadata"]["annotations"]["kiln.dev/retraining-reason"].startswith("drift detected: psi ")
    assert job["spec"]["output"]["version"] == "1.0.1"
    world.kiln.wait_for_events(namespace, "iris", ("Warning", "DriftDetected"), ("Normal", "RetrainingStarted"))

    # The job trains on the shifted data and registers 1.0.1, whose lineage names it.
    trained = eventually(
        lambda: (
            (s := world.custom(namespace, "trainingjobs", name).get("status", {})).get("phase") in ("Succeeded",) and s
        ),
        f"TrainingJob {name} to succeed (see {world.kiln.operator_log})",
        WAIT,
    )
    version = world.kiln.model_version(namespace, trained["modelVersion"])
    assert (version["spec"]["version"], version["spec"]["lineage"]["trainingJob"]) == ("1.0.1", name)
    assert version["spec"]["lineage"]["dataset"]["uri"] == f"pvc://kiln-models/{DATASET}"

    # Back to normal traffic, then a second shift inside the cooldown: no job, and status and an Event say why.
    serving.shift = np.zeros(4)
    world.wait_for(namespace, "the drift to end", lambda s: drift_detected(s) == "False", WAIT)
    serving.shift = -SHIFT
    again = world.wait_for(
        namespace,
        "a second drift held by the cooldown",
        lambda s: (
            drift_detected(s) == "True" and (s.get("retraining", {}).get("skipped") or {}).get("reason") == "Cooldown"
        ),
        WAIT,
    )
    skipped = again["retraining"]["skipped"]
    assert f"the cooldown of 1h after TrainingJob {name} lasts until" in skipped["message"]
    assert [j["metadata"]["name"] for j in jobs(world, namespace)] == [name]
    assert [run["trainingJob"] for run in again["retraining"]["runs"]] == [name]
    events = world.kiln.wait_for_events(namespace, "iris", ("Warning", "RetrainingSkipped"))
    assert any("Cooldown" in message for _, reason, message in events if reason == "RetrainingSkipped")

    # A person may retrain inside the cooldown; `kiln lineage` shows each retraining to its outcome.
    asked = world.kiln.kiln("retrain", "md/iris", "-n", namespace, "--reason", "labels arrived", "--wait", "60")
    assert "md/iris: started TrainingJob iris-retrain-1-0-2, which registers iris 1.0.2" in asked.stdout, asked.stdout
    lineage = world.kiln.kiln("lineage", "md/iris", "-n", namespace).stdout
    for shown in (
        "DriftDetected True",
        "trigger Drift at",
        "drift detected: psi",
        f"TrainingJob {name} (Succeeded)",
        "ModelVersion iris-1.0.1: 1.0.1 (Validated)",
        "not rolled out",
        "trigger manual at",
        "kiln retrain by",
        "last skipped: trigger Drift, ",  # RetrainingInFlight, or Cooldown once the manual job is done
    ):
        assert shown in lineage, lineage
