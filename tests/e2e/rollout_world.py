"""A dev cluster running Kiln's operator, a real Prometheus scraping the cluster's pods, iris models
that really train, and a client sending live traffic through a ModelDeployment's router Service.

The operator and Prometheus are processes the tests may kill and start again; everything started
here is stopped when the world is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import pathlib
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import skops.io
import yaml
from kiln_cluster import Kiln, OperatorProcess, cluster_with_crds
from polling import eventually
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from kiln.devcluster import prometheus as devcluster_prometheus

GROUP, VERSION = "kiln.dev", "v1alpha1"
INFER = "/v2/models/iris/infer"
BODY = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
SIGNATURE = {"inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 4]}]}
WAIT = 90.0


class PrometheusProcess:
    """The Debian `prometheus` scraping the dev cluster's file_sd targets every second, on a fixed
    port so that it can be stopped and started again at the same address."""

    def __init__(self, directory: pathlib.Path, targets_file: pathlib.Path) -> None:
        self.directory = directory
        self.targets_file = targets_file
        self.port = devcluster_prometheus.free_port("127.0.0.1")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("prometheus")
        assert binary, devcluster_prometheus.INSTALL_HINT
        self.directory.mkdir(parents=True, exist_ok=True)
        config_file = self.directory / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(devcluster_prometheus.configuration(self.targets_file)))
        with (self.directory / "prometheus.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        eventually(self._ready, "prometheus to be ready", 30)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclasses.dataclass(frozen=True)
class Answer:
    time: float
    status: int
    variant: str | None
    version: str | None
    row: int = 0
    """Which of the iris rows was sent."""


IRIS_ROWS: list[list[float]] = load_iris().data.tolist()


class Traffic:
    """Live requests through the router, one after another, each answer recorded. With `rows`, the
    requests cycle through that many iris rows and ask for the `predict` output only."""

    def __init__(
        self, url: str, input_name: str = "features", headers: dict[str, str] | None = None, rows: int = 0
    ) -> None:
        self.url = url
        self.input_name = input_name
        self.headers = headers or {}
        self.rows = rows
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _body(self, sent: int) -> tuple[int, dict[str, Any]]:
        if not self.rows:
            return 0, {"inputs": [{**BODY["inputs"][0], "name": self.input_name}]}
        row = sent % self.rows
        tensor = {"name": self.input_name, "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROWS[row]}
        return row, {"inputs": [tensor], "outputs": [{"name": "predict"}]}

    def _run(self) -> None:
        with httpx.Client(timeout=10, headers=self.headers) as client:
            sent = 0
            while not self._stop.is_set():
                row, body = self._body(sent)
                sent += 1
                try:
                    response = client.post(self.url + INFER, json=body)
                    version = response.json().get("model_version") if response.status_code == 200 else None
                    variant = response.headers.get("x-kiln-variant")
                    answer = Answer(time.time(), response.status_code, variant, version, row)
                except httpx.HTTPError as error:
                    answer = Answer(time.time(), 0, type(error).__name__, None, row)
                self.answers.append(answer)
                self._stop.wait(0.01)

    def since(self, moment: float) -> list[Answer]:
        return [answer for answer in self.answers if answer.time >= moment]

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def served_versions(answers: list[Answer]) -> Counter[str | None]:
    return Counter(answer.version for answer in answers if answer.status == 200)


@dataclasses.dataclass
class Serving:
    """ModelDeployments of iris models on a dev cluster whose operator runs elsewhere (one `kiln run`,
    or several peering replicas): registering versions, deploying them, and reading what serves."""

    kiln: Kiln

    def custom(self, namespace: str, plural: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.kiln.api().get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        return found

    def md(self, namespace: str, name: str = "iris") -> dict[str, Any]:
        return self.custom(namespace, "modeldeployments", name)

    def status(self, namespace: str, name: str = "iris") -> dict[str, Any]:
        return dict(self.md(namespace, name).get("status") or {})

    def wait_for(self, namespace: str, what: str, check: Any, timeout: float = WAIT) -> dict[str, Any]:
        """Poll the ModelDeployment's status until `check(status)` holds; the status then."""

        def satisfied() -> dict[str, Any] | None:
            status = self.status(namespace)
            return status if check(status) else None

        found: dict[str, Any] = eventually(satisfied, f"md/iris {what} (see {self.kiln.operator_log})", timeout)
        return found

    def register(
        self, namespace: str, version: str, *, model: Any = None, regularization: float = 1.0, **annotations: str
    ) -> Any:
        """Train an iris model (a LogisticRegression unless `model` is another estimator), put it on the
        namespace's model store claim and register it; the fitted model."""
        features, labels = load_iris(return_X_y=True)
        model = (model or LogisticRegression(C=regularization, max_iter=500)).fit(features, labels)
        target = self.kiln.pvc_root / namespace / "kiln-models" / "iris" / f"{version}.skops"
        target.parent.mkdir(parents=True, exist_ok=True)
        skops.io.dump(model, target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelVersion",
            "metadata": {"name": f"iris-{version.replace('.', '-')}", "annotations": annotations},
            "spec": {
                "modelName": "iris",
                "version": version,
                "artifact": {"uri": f"pvc://kiln-models/iris/{version}.skops", "sha256": digest},
                "signature": SIGNATURE,
            },
        }
        self.kiln.apply(namespace, manifest)
        self.kiln.wait_for_phase(namespace, manifest["metadata"]["name"], "Validated")
        return model

    def model_store(self, namespace: str) -> None:
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "kiln-models"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
        }
        self.kiln.apply(namespace, claim)

    def deploy(self, namespace: str, spec: dict[str, Any]) -> None:
        manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": "iris"}}
        self.kiln.apply(namespace, {**manifest, "spec": spec})

    def set_version(self, namespace: str, version: str) -> None:
        self.kiln.kubectl("patch", "md", "iris", "-n", namespace, "--type", "merge", "-p",
                          json.dumps({"spec": {"version": version}}))  # fmt: skip

    def url(self, namespace: str) -> str:
        service = self.kiln.core().read_namespaced_service("iris", namespace)
        return f"http://{service.spec.cluster_ip}:80"

    def router_config(self, namespace: str) -> dict[str, Any]:
        config_map = self.kiln.core().read_namespaced_config_map("iris-router", namespace)
        found: dict[str, Any] = json.loads(config_map.data["router.json"])
        return found

    def replicas(self, namespace: str, deployment: str) -> int:
        apps = self.kiln.apps()
        return int(apps.read_namespaced_deployment(deployment, namespace).spec.replicas)

    def pod_uids(self, namespace: str) -> dict[str, str]:
        pods = self.kiln.core().list_namespaced_pod(namespace, label_selector="kiln.dev/modeldeployment=iris").items
        return {pod.metadata.name: pod.metadata.uid for pod in pods if pod.metadata.deletion_timestamp is None}


@dataclasses.dataclass
class World(Serving):
    """Serving with its one `kiln run` and a real Prometheus, which tests may kill and start again."""

    prometheus: PrometheusProcess
    operator: OperatorProcess


@contextlib.contextmanager
def rollout_world(root: pathlib.Path) -> Iterator[World]:
    with cluster_with_crds(root) as kiln:
        prometheus = PrometheusProcess(root / "prometheus", kiln.devcluster.targets_file)
        prometheus.start()
        try:
            kiln.env["KILN_PROMETHEUS_URL"] = prometheus.url
            operator = OperatorProcess(kiln)
            operator.start()
            try:
                yield World(kiln, prometheus, operator)
            finally:
                operator.stop()
            kiln.assert_no_traceback()
        finally:
            prometheus.stop()
