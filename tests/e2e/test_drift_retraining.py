"""Drift monitoring closing the loop end to end: iris 1.0.0 trained by a real TrainingJob (so its
baseline is kiln-trainer's own), real kiln-server pods exporting their input features on the
baseline's bins, a real Prometheus scraping them, and `kiln run` comparing the live window with the
baseline and retraining through a TrainingJob on shifted data the test provides.

Given 1.0.0 serving under versionPolicy LatestValidated, with drift checked every 5 s over a 20 s
window: traffic drawn from the training data keeps drift under the threshold; traffic with the same
features at shifted means raises DriftDetected and starts exactly one TrainingJob, which trains on
the shifted data and registers 1.0.1; the canary rolls 1.0.1 out to stable, against whose baseline
the shifted traffic is no drift; when the traffic moves back inside the cooldown, that is drift
again, and nothing starts: status and an Event say why. A person's `kiln retrain` still may.
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
from test_canary_rollout import error_rate

IRIS = load_iris()
SHIFT = np.array([1.0, 0.8, 2.0, 0.8])
"""The shifted traffic's means move by this much per feature: past the training range's top bins."""
TRAINING_DATA, SHIFTED_DATA = "data/iris.csv", "data/iris-shifted.csv"
RETRAINING_JOBS = "kiln.dev/retraining-for=iris"
WAIT = 180.0


def trainer(dataset: str) -> dict[str, Any]:
    """A TrainingJob spec fitting iris 1.0.0 from a CSV on the model store claim."""
    return {
        "sklearn": {
            "estimator": "sklearn.linear_model.LogisticRegression",
            "params": {"max_iter": 500},
            "dataset": {"uri": f"pvc://kiln-models/{dataset}"},
            "targetColumn": "target",
        },
        "output": {"modelName": "iris", "version": "1.0.0"},
    }


DEPLOYMENT = {
    "model": "iris",
    "versionPolicy": "LatestValidated",
    "replicas": 1,
    "strategy": {"canary": {"steps": [{"setWeight": 50}, {"analysis": {}}], "scaleDownDelaySeconds": 5}},
    "analysis": {"metrics": [error_rate()]},
    "progressDeadlineSeconds": 120,
    "monitoring": {
        "drift": {"interval": "5s", "window": "20s", "minSamples": 200},
        "retraining": {"cooldown": "1h", "triggers": [{"type": "Drift"}], "template": trainer(SHIFTED_DATA)},
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
                tensor = {"name": "input-0", "shape": [25, 4], "datatype": "FP64", "data": rows.ravel().tolist()}
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


def csv(features: np.ndarray) -> bytes:
    header = ",".join([*IRIS.feature_names, "target"])
    rows = "\n".join(",".join(f"{value:g}" for value in row) for row in np.column_stack([features, IRIS.target]))
    return f"{header}\n{rows}\n".encode()


def retraining_jobs(world: World, namespace: str) -> list[dict[str, Any]]:
    api = world.kiln.api()
    found = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", label_selector=RETRAINING_JOBS)
    return list(found["items"])


def trained(world: World, namespace: str, job: str) -> dict[str, Any]:
    """The TrainingJob's status once it succeeded; a failure fails the test at once, with its reason."""

    def succeeded() -> dict[str, Any] | None:
        status = dict(world.custom(namespace, "trainingjobs", job).get("status") or {})
        assert status.get("phase") != "Failed", status
        return status if status.get("phase") == "Succeeded" else None

    found: dict[str, Any] = eventually(succeeded, f"TrainingJob {job} to succeed (see {world.kiln.operator_log})", WAIT)
    return found


def drift_detected(status: dict[str, Any]) -> str | None:
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == "DriftDetected"), None)


def judged(version: str, count: int = 1) -> Callable[[dict[str, Any]], bool]:
    """Holds once `count` drift checks of `version` have scored its features."""
    return lambda s: (
        s.get("drift", {}).get("version") == version
        and len([c for c in s["drift"].get("history", []) if c.get("score") is not None]) >= count
    )


@pytest.fixture
def serving(world: World, namespace: str) -> Iterator[Sender]:
    world.kiln.artifact(namespace, "kiln-models", TRAINING_DATA, csv(IRIS.data))
    world.kiln.artifact(namespace, "kiln-models", SHIFTED_DATA, csv(IRIS.data + SHIFT))
    first = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": "iris-first"}}
    world.kiln.apply(namespace, {**first, "spec": trainer(TRAINING_DATA)})
    world.kiln.wait_for_phase(namespace, trained(world, namespace, "iris-first")["modelVersion"], "Validated")
    world.deploy(namespace, DEPLOYMENT)
    world.wait_for(
        namespace, "1.0.0 Healthy", lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "1.0.0"
    )
    with Sender(world.url(namespace)) as sender:
        yield sender


def test_shifted_traffic_retrains_once_and_a_second_drift_in_the_cooldown_says_why(
    world: World, namespace: str, serving: Sender
) -> None:
    # Given traffic drawn from the training data, drift stays under the threshold.
    status = world.wait_for(namespace, "three judged drift checks", judged("1.0.0", 3), WAIT)
    assert drift_detected(status) == "False", status["drift"]
    assert status["drift"]["score"] < status["drift"]["threshold"] == 0.2
    assert status["drift"]["samples"] >= 200
    assert retraining_jobs(world, namespace) == []

    # When the traffic shifts, DriftDetected rises and exactly one TrainingJob starts.
    serving.shift = SHIFT
    detected = world.wait_for(namespace, "DriftDetected", lambda s: drift_detected(s) == "True", WAIT)
    assert detected["drift"]["score"] > 0.2
    (job,) = eventually(lambda: retraining_jobs(world, namespace), "the retraining TrainingJob", 30)
    name = job["metadata"]["name"]
    assert name == "iris-retrain-1-0-1"
    assert job["metadata"]["labels"]["kiln.dev/retraining-trigger"] == "Drift"
    assert job["metadata"]["annotations"]["kiln.dev/retraining-reason"].startswith("drift detected: psi ")
    assert job["spec"]["output"]["version"] == "1.0.1"
    world.kiln.wait_for_events(namespace, "iris", ("Warning", "DriftDetected"), ("Normal", "RetrainingStarted"))

    # The job trains on the shifted data and registers 1.0.1, whose lineage names it.
    version = world.kiln.model_version(namespace, trained(world, namespace, name)["modelVersion"])
    assert (version["spec"]["version"], version["spec"]["lineage"]["trainingJob"]) == ("1.0.1", name)
    assert version["spec"]["lineage"]["dataset"]["uri"] == f"pvc://kiln-models/{SHIFTED_DATA}"

    # The canary rolls 1.0.1 out; the shifted traffic is its training data, so no drift from its baseline.
    promoted = world.wait_for(
        namespace, "1.0.1 promoted", lambda s: s.get("stableVersion") == "1.0.1" and s.get("phase") == "Healthy", WAIT
    )
    outcomes = [(record["version"], record.get("outcome")) for record in promoted["history"]]
    assert outcomes == [("1.0.0", "Deployed"), ("1.0.1", "Promoted")]
    settled = world.wait_for(namespace, "1.0.1 judged", judged("1.0.1"), WAIT)
    assert drift_detected(settled) == "False", settled["drift"]
    assert settled["drift"]["score"] < 0.2

    # Traffic back where 1.0.0 was trained is drift from 1.0.1, inside the cooldown: no job, and status
    # and an Event say why.
    serving.shift = np.zeros(4)
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
    assert [j["metadata"]["name"] for j in retraining_jobs(world, namespace)] == [name]
    assert [run["trainingJob"] for run in again["retraining"]["runs"]] == [name]
    told = eventually(
        lambda: [m for _, r, m in world.kiln.events(namespace, "iris") if r == "RetrainingSkipped" and "Cooldown" in m],
        "a RetrainingSkipped Event naming the cooldown",
        30,
    )
    assert f"the cooldown of 1h after TrainingJob {name}" in told[-1]

    # A person may retrain inside the cooldown; `kiln lineage` shows each retraining to its outcome.
    asked = world.kiln.kiln("retrain", "md/iris", "-n", namespace, "--reason", "labels arrived", "--wait", "60")
    assert "md/iris: started TrainingJob iris-retrain-1-0-2, which registers iris 1.0.2" in asked.stdout, asked.stdout
    lineage = world.kiln.kiln("lineage", "md/iris", "-n", namespace).stdout
    for shown in (
        "ModelDeployment iris: iris 1.0.1",
        "DriftDetected True",
        "trigger Drift at",
        "drift detected: psi",
        f"TrainingJob {name} (Succeeded)",
        "ModelVersion iris-1.0.1: 1.0.1 (Validated)",
        "rollout Promoted",
        "trigger manual at",
        "kiln retrain by",
        "last skipped: trigger Drift, ",  # RetrainingInFlight, or Cooldown once the manual job is done
    ):
        assert shown in lineage, lineage
