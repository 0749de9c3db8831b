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
