"""`kiln run` starts the kopf operator against a cluster, answers its liveness probe, and stops cleanly."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from kiln_cluster import OperatorProcess, cluster_with_crds, model_version
from polling import eventually

from kiln.devcluster import cluster


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def devcluster(tmp_path: pathlib.Path) -> Iterator[cluster.DevCluster]:
    with cluster.ThreadedDevCluster(tmp_path / "devcluster") as running:
        yield running


def test_kiln_run_serves_liveness_configures_kopf_and_stops_on_sigint(devcluster: cluster.DevCluster) -> None:
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(devcluster.kubeconfig_path)}
    command = [sys.executable, "-m", "kiln", "run", "-n", "default", "--liveness", f"http://127.0.0.1:{port}/healthz"]
    command += ["--metrics-port", "0"]  # not the default 9090: tests run side by side
    operator = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        healthy = False
        while time.monotonic() < deadline and not healthy:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                time.sleep(0.2)
        assert healthy, "the operator never answered its liveness probe"
        operator.send_signal(signal.SIGINT)
        output, _ = operator.communicate(timeout=30)
    finally:
        if operator.poll() is None:
            operator.kill()
            operator.communicate()
    assert operator.returncode == 0, output
    assert "Activity 'configure' succeeded" in output
    assert "Operator is stopping" in output
    assert "Traceback" not in output


def test_kiln_run_serves_its_metrics_after_reconciling(tmp_path: pathlib.Path) -> None:
    port = free_port()
    with cluster_with_crds(tmp_path) as setup:
        operator = OperatorProcess(setup, metrics_port=port)
        operator.start()
        try:
            artifact = setup.artifact("default", "models", "iris/1.0.0/model.skops", b"a model, serialized")
            setup.apply("default", model_version("iris-1-0-0", "1.0.0", artifact))
            setup.wait_for_phase("default", "iris-1-0-0", "Validated")

            def reconciled() -> str | None:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                wanted = 'kiln_reconciles_total{kind="ModelVersion",result="success"}'
                return text if wanted in text else None

            text = eventually(reconciled, "kiln_reconciles_total on /metrics", 20)
        finally:
            operator.stop()
    assert 'kiln_reconcile_duration_seconds_bucket{kind="ModelVersion"' in text
    assert 'kiln_rollouts_total{outcome="RolledBack"} 0.0' in text
    assert "kiln_queued_gpu_demand 0.0" in text
    setup.assert_no_traceback()
