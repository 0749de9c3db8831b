"""Fixtures for driving the dev cluster with real clients."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable, Iterator

import kopf
import pytest

from kiln.devcluster import cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def fresh_kopf_registry() -> Iterator[None]:
    """Each test's kopf operator registers its handlers into a registry of its own: `kopf run FILE`
    in-process (KopfRunner) adds them to kopf's default registry, where an earlier test's would
    still be handling the same kinds."""
    previous = kopf.get_default_registry()
    fresh = kopf.OperatorRegistry()
    kopf.on.login(registry=fresh)(kopf.login_via_client)  # what kopf puts in its own default registry
    kopf.set_default_registry(fresh)
    yield
    kopf.set_default_registry(previous)


@pytest.fixture
def devcluster(tmp_path: pathlib.Path) -> Iterator[cluster.DevCluster]:
    """A fresh dev cluster on a free loopback port, persisting under tmp_path."""
    with cluster.ThreadedDevCluster(tmp_path / "devcluster") as running:
        yield running


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def kubectl_binary(version: str | None = None) -> str:
    """kubectl, or a versioned `kubectl.1.NN` from PATH or beside the real kubectl binary."""
    name = f"kubectl.{version}" if version else "kubectl"
    found = shutil.which(name)
    default = shutil.which("kubectl")
    if found is None and default is not None:
        beside = pathlib.Path(os.path.realpath(default)).parent / name
        found = str(beside) if beside.exists() else None
    if found is None:
        raise RuntimeError(f"{name} is not on PATH; `make test` installs kubectl where it is missing")
    return found


def available_kubectl_versions() -> list[str]:
    """The versioned kubectl binaries this machine has, oldest first (e.g. ["1.28", "1.33"])."""
    default = shutil.which("kubectl")
    if default is None:
        return []
    folder = pathlib.Path(os.path.realpath(default)).parent
    versions = {path.name.removeprefix("kubectl.") for path in folder.glob("kubectl.1.*")}
    return sorted(versions, key=lambda v: tuple(int(n) for n in v.split(".")))


def make_kubectl(devcluster: cluster.DevCluster, binary: str) -> Kubectl:
    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        # A discovery cache of the cluster's own: ports are reused across clusters, and a cache left
        # by another cluster (or kubectl version) at the same address can miss the scale subresource.
        cache = str(devcluster.state_dir / "kubectl-cache")
        env = {**os.environ, "KUBECONFIG": str(devcluster.kubeconfig_path), "KUBECACHEDIR": cache}
        result = subprocess.run(
            [binary, *args], input=input, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


@pytest.fixture
def kubectl(devcluster: cluster.DevCluster) -> Kubectl:
    """Run the machine's kubectl against the dev cluster; check=False to inspect failures."""
    return make_kubectl(devcluster, kubectl_binary())


# Workload tests: dev clusters with chosen settings, the clients that drive them, and the
# processes their pods run.


class Kube:
    """A running dev cluster and the clients a test drives it with: kubectl and the `kubernetes` package."""

    def __init__(self, dev: cluster.DevCluster) -> None:
        from kubernetes import client
        from kubernetes import config as kube_config

        self.cluster = dev
        self.api = kube_config.new_client_from_config(config_file=str(dev.kubeconfig_path))
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.scheduling = client.SchedulingV1Api(self.api)
        self.kubectl = make_kubectl(dev, kubectl_binary())

    def close(self) -> None:
        self.api.close()


@pytest.fixture
def kube(devcluster: cluster.DevCluster) -> Iterator[Kube]:
    """The default dev cluster (one 8-cpu node), with its clients."""
    driver = Kube(devcluster)
    yield driver
    driver.close()


StartKube = Callable[[dict[str, object]], Kube]


@pytest.fixture
def start_kube(tmp_path: pathlib.Path) -> Iterator[StartKube]:
    """Start a dev cluster from config overrides in `config.load`'s camelCase
    (`{"nodePools": [{"count": 2, "gpus": 4}]}`); every one started is stopped after the test."""
    from kiln.devcluster import config

    running: list[tuple[cluster.ThreadedDevCluster, Kube]] = []

    def start(overrides: dict[str, object]) -> Kube:
        threaded = cluster.ThreadedDevCluster(
            tmp_path / f"devcluster-{len(running)}", settings=config.load(None, overrides)
        )
        driver = Kube(threaded.__enter__())
        running.append((threaded, driver))
        return driver

    try:
        yield start
    finally:
        for threaded, driver in reversed(running):
            driver.close()
            threaded.__exit__(None, None, None)


def container_pids(pod: object) -> list[int]:
    """The process ids of a pod's containers (`kiln-process://<pid>`), from a `kubernetes` V1Pod."""
    statuses = getattr(getattr(pod, "status", None), "container_statuses", None) or []
    prefix = "kiln-process://"
    return [int(s.container_id.removeprefix(prefix)) for s in statuses if (s.container_id or "").startswith(prefix)]


def process_alive(pid: int) -> bool:
    """Whether a process still runs: it exists and is not a zombie waiting to be reaped."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, /proc was read
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def process_exists(pid: int) -> bool:
    """Whether the pid is taken at all, zombies included (a reaped child is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


SERVER_SCRIPT = '''\
"""A pod's HTTP server. GET / answers "<POD_NAME> <GREETING>"; /healthz answers 200, /fail 500,
/ready 200 while the file READY_FILE names exists (always, without READY_FILE)."""
import http.server
import os
import socketserver


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200
        if self.path == "/fail":
            code = 500
        elif self.path == "/ready" and os.environ.get("READY_FILE"):
            code = 200 if os.path.exists(os.environ["READY_FILE"]) else 503
        body = f"{os.environ.get('POD_NAME', '')} {os.environ.get('GREETING', '')}".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):  # without HTTPServer's reverse DNS lookup of the address
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


server = Server(("", int(os.environ.get("PORT", "8080"))), Handler)
print("serving on %s:%s" % server.server_address[:2], flush=True)
server.serve_forever()
'''


def server_script(directory: pathlib.Path) -> pathlib.Path:
    """The pod HTTP server above, written to a file a pod's `python` can run."""
    path = directory / "server.py"
    if not path.exists():
        path.write_text(SERVER_SCRIPT)
    return path
