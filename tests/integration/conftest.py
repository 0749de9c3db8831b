"""Kiln's operator (`kiln run`, a real subprocess) against a dev cluster with Kiln's CRDs.

One cluster and one operator serve a whole test module; every test works in a namespace of its
own, so tests never see each other's ModelVersions. The operator is always stopped, and a
traceback in its log fails the module.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest
from kiln_cluster import CRDS, Kiln
from polling import eventually

from kiln.devcluster import cluster


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def kiln(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiln]:
    """A dev cluster with the CRDs applied and `kiln run` watching every namespace."""
    root = tmp_path_factory.mktemp("kiln")
    with cluster.ThreadedDevCluster(root / "devcluster") as devcluster:
        pvc_root = devcluster.state_dir / "volumes"
        env = {**os.environ, "KUBECONFIG": str(devcluster.kubeconfig_path), "KILN_PVC_ROOT": str(pvc_root)}
        log = root / "operator.log"
        setup = Kiln(devcluster, env, pvc_root, log)
        setup.kubectl("apply", "-f", str(CRDS))
        setup.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        command = [sys.executable, "-m", "kiln", "run", "--verbose", "--liveness", liveness]
        with log.open("w") as output:
            operator = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            eventually(lambda: _healthy(liveness), "the operator's liveness probe", 30)
            yield setup
        finally:
            operator.send_signal(signal.SIGINT)
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
    text = log.read_text()
    assert "Traceback" not in text, f"the operator logged a traceback:\n{text[-6000:]}"


@pytest.fixture
def namespace(kiln: Kiln, request: pytest.FixtureRequest) -> str:
    """A namespace of the test's own."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    kiln.kubectl("create", "namespace", name)
    return name
