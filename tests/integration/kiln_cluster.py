"""Driving a dev cluster that runs Kiln's operator: kubectl, the `kiln` command, the `kubernetes`
client, and ModelVersion manifests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import kubernetes
import yaml
from polling import eventually

from kiln.devcluster import cluster, config

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
GROUP, VERSION, PLURAL = "kiln.dev", "v1alpha1", "modelversions"
TIMEOUT = 20.0

PEOPLE = ("alice", "bob", "carol", "dana", "erin")
"""The users tests act as (`kiln ... --as carol`): the dev cluster authorizes with RBAC, so, as on a
real cluster, they are bound to a role that lets them work with Kiln's resources."""
PEOPLE_RBAC = f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: kiln-user}}
rules:
  - apiGroups: [kiln.dev]
    resources: ["*"]
    verbs: ["*"]
  - apiGroups: [""]
    resources: [events, namespaces, pods, pods/log, persistentvolumeclaims, services, configmaps]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: kiln-users}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kiln-user}}
subjects: {[{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": person} for person in PEOPLE]}
"""


@dataclass
class Kiln:
    """A dev cluster with Kiln's CRDs and a running operator, and ways to drive both."""

    devcluster: cluster.DevCluster
    env: dict[str, str]
    pvc_root: pathlib.Path
    operator_log: pathlib.Path

    def api(self, user: str | None = None) -> kubernetes.client.CustomObjectsApi:
        api_client = kubernetes.config.new_client_from_config(config_file=str(self.devcluster.kubeconfig_path))
        if user:
            api_client.set_default_header("Impersonate-User", user)
        return kubernetes.client.CustomObjectsApi(api_client)

    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(
            kubernetes.config.new_client_from_config(config_file=str(self.devcluster.kubeconfig_path))
        )

    def apps(self) -> kubernetes.client.AppsV1Api:
        return kubernetes.client.AppsV1Api(
            kubernetes.config.new_client_from_config(config_file=str(self.devcluster.kubeconfig_path))
        )

    def run(
        self,
        *command: str,
        input: str | None = None,
        check: bool = True,
        columns: int | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "COLUMNS": str(columns)} if columns else self.env
        result = subprocess.run(
            command, input=input, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check, timeout=timeout)

    def kiln(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The `kiln` command; rich lays its tables out 200 columns wide, so no line wraps."""
        return self.run(sys.executable, "-m", "kiln", *args, check=check, columns=200)

    def apply(self, namespace: str, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))

    def model_version(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.api().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return result

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.model_version(namespace, name).get("status") or {})

    def wait_for(self, namespace: str, name: str, what: str, check: Any) -> dict[str, Any]:
        """Poll the ModelVersion's status until `check(status)` holds; the status then."""

        def satisfied() -> dict[str, Any] | None:
            status = self.status(namespace, name)
            return status if check(status) else None

        result: dict[str, Any] = eventually(satisfied, f"mv/{name} {what} (see {self.operator_log})", TIMEOUT)
        return result

    def wait_for_phase(self, namespace: str, name: str, phase: str) -> dict[str, Any]:
        return self.wait_for(namespace, name, f"to be {phase}", lambda status: status.get("phase") == phase)

    def wait_for_stage(self, namespace: str, name: str, stage: str) -> dict[str, Any]:
        return self.wait_for(namespace, name, f"to be in stage {stage}", lambda status: status.get("stage") == stage)

    def wait_for_stage_reason(self, namespace: str, name: str, reason: str) -> dict[str, Any]:
        """Until the StageGranted condition gives `reason` (a refusal or a wait, say)."""
        return self.wait_for(
            namespace, name, f"StageGranted {reason}", lambda status: reason_of(status, "StageGranted") == reason
        )

    def events(self, namespace: str, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about the object, oldest first."""
        events = self.core().list_namespaced_event(namespace).items
        about = [event for event in events if event.involved_object.name == name]
        about.sort(key=lambda event: event.metadata.resource_version and int(event.metadata.resource_version))
        return [(event.type, event.reason, event.message) for event in about]

    def wait_for_events(self, namespace: str, name: str, *expected: tuple[str, ...]) -> list[tuple[str, str, str]]:
        """Poll until an Event matches each of `expected`, a (type, reason, message) tuple or a prefix
        of one; all the Events about the object then. The operator posts Events after it writes
        status, so a test that saw the status must still wait for them."""

        def all_posted() -> list[tuple[str, str, str]] | None:
            events = self.events(namespace, name)
            found = all(any(event[: len(wanted)] == wanted for event in events) for wanted in expected)
            return events if found else None

        result: list[tuple[str, str, str]] = eventually(all_posted, f"Events {expected} about {name}", TIMEOUT)
        return result

    def assert_no_traceback(self) -> None:
        """The operator's own tracebacks start a line; a worker's, quoted in a logged status
        message, does not."""
        text = self.operator_log.read_text()
        found = re.search(r"^Traceback", text, re.MULTILINE)
        if found is not None:  # the lines before it say what the operator was doing when it raised
            start = found.start()
            raise AssertionError(f"the operator logged a traceback:\n{text[max(start - 3000, 0) : start + 5000]}")

    def artifact(self, namespace: str, claim: str, path: str, data: bytes) -> tuple[str, str]:
        """Write an artifact onto a claim's directory; its pvc:// URI and sha256."""
        target = self.pvc_root / namespace / claim / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"pvc://{claim}/{path}", hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def bare_cluster(root: pathlib.Path, settings: config.ClusterConfig | None = None) -> Iterator[Kiln]:
    """A dev cluster under `root`, nothing of Kiln's installed."""
    with cluster.ThreadedDevCluster(root / "devcluster", settings=settings) as devcluster:
        pvc_root = devcluster.state_dir / "volumes"
        env = {
            **os.environ,
            "KUBECONFIG": str(devcluster.kubeconfig_path),
            "KUBECACHEDIR": str(devcluster.state_dir / "kubectl-cache"),
            "KILN_PVC_ROOT": str(pvc_root),
        }
        yield Kiln(devcluster, env, pvc_root, root / "operator.log")


@contextlib.contextmanager
def cluster_with_crds(root: pathlib.Path, settings: config.ClusterConfig | None = None) -> Iterator[Kiln]:
    """A dev cluster under `root` with Kiln's CRDs established; the operator not started."""
    with bare_cluster(root, settings) as setup:
        setup.kubectl("apply", "-f", str(CRDS))
        setup.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
        setup.kubectl("apply", "-f", "-", input=PEOPLE_RBAC)
        yield setup


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


class OperatorProcess:
    """`kiln run` over every namespace, its output appended to the log; it can be killed and started
    again, as a crashed operator is. Its metrics are served on `metrics_port` (none when 0, so
    operators of tests running side by side never contend for one port). With `peering`, it runs
    `kiln run --peering` as kopf peer `peer_id` (kopf's POD_ID), for a replica of an HA install;
    `log` then gives it a log of its own."""

    def __init__(
        self,
        setup: Kiln,
        metrics_port: int = 0,
        *,
        peering: bool = False,
        peer_id: str | None = None,
        log: pathlib.Path | None = None,
    ) -> None:
        self.setup = setup
        self.metrics_port = metrics_port
        self.peering = peering
        self.peer_id = peer_id
        self.log = log or setup.operator_log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        liveness = f"http://127.0.0.1:{_free_port()}/healthz"
        command = [sys.executable, "-m", "kiln", "run", "--verbose", "--liveness", liveness]
        command += ["--metrics-port", str(self.metrics_port)]
        env = dict(self.setup.env)
        if self.peering:
            command.append("--peering")
            if self.peer_id:
                env["POD_ID"] = self.peer_id
        with self.log.open("a") as output:
            self.process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        eventually(lambda: _healthy(liveness), "the operator's liveness probe", 30)

    def kill(self) -> None:
        """SIGKILL, as the kernel's OOM killer or a lost node ends it: no chance to tidy up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def running_operator(setup: Kiln) -> Iterator[None]:
    """`kiln run` over every namespace until the block ends, its output appended to the log."""
    operator = OperatorProcess(setup)
    operator.start()
    try:
        yield
    finally:
        operator.stop()


@contextlib.contextmanager
def operated_cluster(
    root: pathlib.Path, settings: config.ClusterConfig | None = None, **operator_env: str
) -> Iterator[Kiln]:
    """A dev cluster with the CRDs and `kiln run` (with `operator_env` added to its environment);
    a traceback in the operator's log fails the block."""
    with cluster_with_crds(root, settings) as setup:
        setup.env.update(operator_env)
        with running_operator(setup):
            yield setup
        setup.assert_no_traceback()


def model_version(
    name: str,
    version: str,
    artifact: tuple[str, str],
    *,
    model: str = "iris",
    metrics: dict[str, float] | None = None,
    gates: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A ModelVersion manifest; `spec` adds or overrides fields (camelCase, as on the wire)."""
    uri, sha256 = artifact
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": {
            "modelName": model,
            "version": version,
            "artifact": {"uri": uri, "sha256": sha256},
            "metrics": metrics or {},
            "gates": gates or [],
            **spec,
        },
    }


def condition(status: dict[str, Any], condition_type: str) -> dict[str, Any]:
    found = [c for c in status.get("conditions", []) if c["type"] == condition_type]
    assert found, f"no {condition_type} condition in {status}"
    return found[0]


def reason_of(status: dict[str, Any], condition_type: str) -> str | None:
    """The reason of a condition, or None before the operator has set it (for polling)."""
    return next((c["reason"] for c in status.get("conditions", []) if c["type"] == condition_type), None)
