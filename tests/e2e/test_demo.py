"""`make demo` end to end: `python -m kiln.demo` from a clean state, non-interactively
(KILN_DEMO_PLAIN=1), kept running (`KEEP=1`) so that each stage's outcome is read from the
cluster's objects, then `python -m kiln.demo down` (`make demo-down`), after which no process of
the demo is left: not the dev cluster, Prometheus, the operator nor any pod's process."""

from __future__ import annotations

import datetime
import os
import pathlib
import re
import subprocess
import sys
from typing import Any

import kubernetes
import pytest
from kiln_cluster import REPO
from rollout_world import GROUP, VERSION

DEMO_TIMEOUT_SECONDS = 600


def processes_of(data_dir: pathlib.Path) -> list[str]:
    """The command lines of running processes that name the demo's data directory in their
    arguments or environment (the kubeconfig, the claims, Prometheus' storage live there)."""
    needle = str(data_dir).encode()
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z" and (needle in cmdline or needle in environ):
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "KILN_DEMO_PLAIN": "1"}
    command = [sys.executable, "-m", "kiln.demo", *args]
    return subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=DEMO_TIMEOUT_SECONDS, check=False
    )


@pytest.fixture(scope="module")
def kept_demo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data_dir = tmp_path_factory.mktemp("demo") / "demo"
    try:
        ran = demo("--keep", "--data-dir", str(data_dir))
        yield data_dir, ran
    finally:
        demo("down", "--data-dir", str(data_dir))


def test_the_demo_walks_the_lifecycle_and_leaves_nothing_running(kept_demo: Any) -> None:
    data_dir, ran = kept_demo
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}"
    client = kubernetes.config.new_client_from_config(config_file=str(data_dir / "kubeconfig"))
    api, core = kubernetes.client.CustomObjectsApi(client), kubernetes.client.CoreV1Api(client)

    def get(plural: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, "default", plural, name)
        return found

    # Every version trained by a TrainingJob passed its gates.
    versions = api.list_namespaced_custom_object(GROUP, VERSION, "default", "modelversions")["items"]
    assert {mv["spec"]["version"]: mv["status"]["phase"] for mv in versions} == {
        "1.0.0": "Validated",
        "1.1.0": "Validated",
        "1.2.0": "Validated",
        "1.2.1": "Validated",
    }

    # 1.1.0 promoted by canary, then the fault-injected 1.2.0 rolled back by the analysis of its
    # error rate, then the retrained 1.2.1 promoted by canary in place of 1.1.0: all traffic on it.
    status = get("modeldeployments", "iris")["status"]
    history = status["history"]
    assert [(r["version"], r.get("previousVersion"), r["outcome"]) for r in history] == [
        ("1.0.0", None, "Deployed"),
        ("1.1.0", "1.0.0", "Promoted"),
        ("1.2.0", "1.1.0", "RolledBack"),
        ("1.2.1", "1.1.0", "Promoted"),
    ]
    rolled_back = history[2]["reason"]
    failed = re.search(r"metric error-rate failed: value ([0-9.]+)", rolled_back)
    assert failed is not None, rolled_back
    assert float(failed.group(1)) > 0.2, rolled_back
    assert (status["phase"], status["stableVersion"], status["weights"]["stable"]) == ("Healthy", "1.2.1", 100)

    # Drift was detected on the shifted traffic to 1.1.0 after the rollback, and retrained: one
    # TrainingJob, replacing 1.1.0, on the shifted data, registered 1.2.1 (the patch after the
    # highest version registered), whose lineage names the job.
    (run,) = status["retraining"]["runs"]
    assert (run["trigger"], run["trainingJob"], run["version"]) == ("Drift", "iris-retrain-1-2-1", "1.2.1")
    assert run["reason"].startswith("drift detected: psi "), run["reason"]
    # The rollback ended, then retraining started, then the retrained version's rollout began.
    moments = [history[2]["endTime"], run["time"], history[3]["startTime"]]
    assert sorted(moments, key=datetime.datetime.fromisoformat) == moments, (history, run)
    about_iris = [e for e in core.list_namespaced_event("default").items if e.involved_object.name == "iris"]
    assert {"DriftDetected", "RetrainingStarted"} <= {event.reason for event in about_iris}
    job = get("trainingjobs", "iris-retrain-1-2-1")
    assert job["metadata"]["labels"]["kiln.dev/retraining-for"] == "iris"
    assert job["metadata"]["annotations"]["kiln.dev/retrained-from"] == "1.1.0"
    assert job["status"]["phase"] == "Succeeded"
    retrained = get("modelversions", "iris-1.2.1")["spec"]["lineage"]
    assert retrained["trainingJob"] == "iris-retrain-1-2-1"
    assert retrained["dataset"]["uri"] == "pvc://kiln-models/data/iris-shifted.csv"

    # Kept running, the cluster, Prometheus, the operator and the pods are there; once down, none is.
    running = processes_of(data_dir)
    assert any("prometheus" in line for line in running), running
    assert any("-m kiln run" in line for line in running), running
    assert len(running) >= 5, running
    stopped = demo("down", "--data-dir", str(data_dir))
    assert stopped.stdout.strip() == "demo stopped", stopped.stdout + stopped.stderr
    assert processes_of(data_dir) == []
