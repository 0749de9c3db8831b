"""The demo's processes: a background dev cluster with its Prometheus, and `kiln run` beside it,
both detached so that `--keep` can leave them up; `stop` (and `python -m kiln.demo down`) ends
them, the cluster's pods with it."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import httpx

from kiln.demo import manifests
from kiln.devcluster import cluster, config, prometheus

TOOLS = {"prometheus": "prometheus", "kubectl": "kubernetes-client"}
"""The commands the demo runs, and the Debian/Ubuntu packages that have them."""
STOP_TIMEOUT_SECONDS = 30.0


class DemoError(Exception):
    """The demo cannot go on; the message says why and what to do."""


def missing_packages() -> list[str]:
    return [package for command, package in TOOLS.items() if shutil.which(command) is None]


def ensure_tools() -> list[str]:
    """Install the missing tools with apt when root; otherwise stop with the one command to run.
    The packages installed."""
    missing = missing_packages()
    if not missing:
        return []
    if os.geteuid() != 0:
        command = f"sudo sh -c 'apt-get update && apt-get install -y {' '.join(missing)}'"
        raise DemoError(f"the demo needs the Debian packages {', '.join(missing)}: run `{command}`, then `make demo`")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=environment)
    return missing


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it if this process started it
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Stack:
    """The dev cluster, Prometheus and the operator of one demo, all under `data_dir`."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.data_dir = data_dir.resolve()

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.data_dir / "kubeconfig"

    @property
    def volumes(self) -> pathlib.Path:
        return self.data_dir / "volumes"

    @property
    def operator_log(self) -> pathlib.Path:
        return self.data_dir / "operator.log"

    @property
    def _operator_pid_file(self) -> pathlib.Path:
        return self.data_dir / "operator.pid"

    @property
    def prometheus_url(self) -> str:
        return (self.data_dir / "prometheus-url").read_text().strip()

    @property
    def env(self) -> dict[str, str]:
        """What kubectl and `kiln run` need to find this cluster and its claims."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.data_dir / "kubectl-cache"),
            "KILN_PVC_ROOT": str(self.volumes),
        }

    def start_cluster(self) -> str:
        """A fresh dev cluster (a previous demo's stopped and removed first); its URL."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        settings = config.load(None, manifests.CLUSTER)
        return cluster.start_background(self.data_dir, 0, settings=settings)

    def start_operator(self) -> None:
        liveness = f"http://127.0.0.1:{prometheus.free_port('127.0.0.1')}/healthz"
        command = [sys.executable, "-m", "kiln", "run", "--prometheus-url", self.prometheus_url]
        command += ["--liveness", liveness, "--metrics-port", "0"]
        with self.operator_log.open("ab") as log:
            process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self._operator_pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + 60
        while not _answers(liveness):
            if process.poll() is not None:
                raise DemoError(f"kiln run exited with {process.returncode}; see {self.operator_log}")
            if time.monotonic() > deadline:
                raise DemoError(f"kiln run did not become live within 60s; see {self.operator_log}")
            time.sleep(0.2)

    def operator_pid(self) -> int | None:
        if not self._operator_pid_file.exists():
            return None
        pid = int(self._operator_pid_file.read_text())
        return pid if _alive(pid) else None

    def stop(self) -> bool:
        """Stop the operator (SIGINT, as kopf expects), then the cluster with Prometheus and every
        pod's process; False when nothing ran."""
        stopped = False
        pid = self.operator_pid()
        if pid is not None:
            stopped = True
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._operator_pid_file.unlink(missing_ok=True)
        return cluster.stop_background(self.data_dir) or stopped


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False
