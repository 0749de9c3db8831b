"""Real kiln-server processes on loopback, serving real scikit-learn models written to tmp dirs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import skops.io
from polling import eventually

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SERVER = pathlib.Path(sys.executable).with_name("kiln-server")


def write_skops(estimator: object, path: pathlib.Path) -> str:
    skops.io.dump(estimator, path)
    return sha256(path)


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def baseline(features: np.ndarray[Any, Any], bins: int = 5) -> dict[str, Any]:
    histograms = []
    for column, name in enumerate(FEATURES):
        counts, edges = np.histogram(features[:, column], bins=bins)
        histograms.append({"name": name, "bins": edges.tolist(), "counts": counts.tolist()})
    return {"features": histograms, "sampleSize": len(features)}


def model_version(
    path: pathlib.Path,
    digest: str,
    *,
    name: str = "iris",
    version: str = "1.0.0",
    artifact_format: str = "skops",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": f"{name}-{version.replace('.', '-')}"},
        "spec": {
            "modelName": name,
            "version": version,
            "artifact": {"uri": f"file://{path}", "sha256": digest, "format": artifact_format},
            **(extra or {}),
        },
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    url: str
    log: pathlib.Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def infer(self, body: Any, path: str = "/v2/models/iris/infer") -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=10)

    def logs(self) -> str:
        return self.log.read_text()

    def wait_ready(self) -> None:
        eventually(lambda: self._answers("/v2/health/ready") == 200, "the server to be ready", timeout=30)

    def wait_live(self) -> None:
        eventually(lambda: self._answers("/v2/health/live") == 200, "the server to listen", timeout=30)

    def _answers(self, path: str) -> int | None:
        if self.process.poll() is not None:
            raise AssertionError(f"kiln-server exited with {self.process.returncode}:\n{self.logs()}")
        try:
            return self.get(path).status_code
        except httpx.TransportError:
            return None


@contextlib.contextmanager
def kiln_server(
    directory: pathlib.Path,
    versions: list[dict[str, Any]],
    *args: str,
    env: dict[str, str] | None = None,
    through_env: bool = False,
) -> Iterator[RunningServer]:
    """kiln-server on 127.0.0.1, told its models by manifest files (or KILN_MODEL_VERSIONS), killed
    at the end whatever happens."""
    port = free_port()
    environ = {**os.environ, **(env or {})}
    command = [str(SERVER), "--host", "127.0.0.1", "--port", str(port), "--drain-delay", "0", *args]
    if through_env:
        environ["KILN_MODEL_VERSIONS"] = json.dumps(versions)
    else:
        for position, version in enumerate(versions):
            manifest = directory / f"modelversion-{position}.json"
            manifest.write_text(json.dumps(version))
            command += ["--model-version", str(manifest)]
    log = directory / f"kiln-server-{port}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(command, env=environ, stdout=sink, stderr=subprocess.STDOUT, text=True)
    server = RunningServer(process, f"http://127.0.0.1:{port}", log)
    try:
        server.wait_live()
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
