"""Running the dev cluster: in-process (async or in a thread) or as a background process.

`DevCluster` is an async context manager for asyncio code; `ThreadedDevCluster`
runs one on its own event loop in a thread, for synchronous callers such as
tests that shell out to kubectl. `start_background`/`stop_background` back the
`kiln cluster start|stop` commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from types import TracebackType
from typing import Any

import yaml

from kiln.devcluster import (
    addons,
    admission_plugins,
    aggregation,
    config,
    controllers,
    cronjobs,
    garbage,
    identity,
    jobs,
    kubelet,
    network,
    nodes,
    prometheus,
    registry,
    scheduler,
    server,
    storage,
    store,
    workloads,
)

CONTEXT_NAME = "kiln-dev"
DEFAULT_HOME = pathlib.Path(os.environ.get("KILN_HOME", pathlib.Path.home() / ".kiln")) / "devcluster"


def kubeconfig(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT_NAME, "cluster": {"server": url}}],
        "users": [{"name": "admin", "user": {"token": identity.ADMIN_TOKEN}}],
        "contexts": [
            {
                "name": CONTEXT_NAME,
                "context": {"cluster": CONTEXT_NAME, "user": "admin", "namespace": "default"},
            }
        ],
        "current-context": CONTEXT_NAME,
        "preferences": {},
    }


class DevCluster:
    """An embedded control plane serving the Kubernetes API on a loopback address.

    With `data_dir`, objects persist in SQLite there and the kubeconfig and audit
    log are written there; without, objects live in memory and the files go to a
    temporary directory removed on exit.
    """

    def __init__(
        self,
        data_dir: pathlib.Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        persist: bool = True,
        settings: config.ClusterConfig | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.requested_port = port
        self.persist = persist and data_dir is not None
        self.settings = settings or config.ClusterConfig()
        self.port = 0
        self._stack = contextlib.AsyncExitStack()
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self.registry: registry.Registry | None = None
        self.api: server.ApiServer | None = None
        self.kubelet: kubelet.Kubelet | None = None
        self.prometheus: prometheus.Prometheus | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def state_dir(self) -> pathlib.Path:
        if self.data_dir is not None:
            return self.data_dir
        assert self._scratch is not None
        return pathlib.Path(self._scratch.name)

    @property
    def kubeconfig_path(self) -> pathlib.Path:
        return self.state_dir / "kubeconfig"

    @property
    def audit_path(self) -> pathlib.Path:
        return self.state_dir / "audit.jsonl"

    @property
    def targets_file(self) -> pathlib.Path:
        """The Prometheus file_sd targets of scrapeable pods."""
        return self.state_dir / "prometheus-targets.json"

    @property
    def volumes_dir(self) -> pathlib.Path:
        """PersistentVolumeClaim `c` of namespace `ns` is the directory `<volumes_dir>/ns/c`."""
        return self.state_dir / "volumes"

    async def __aenter__(self) -> DevCluster:
        if self.data_dir is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="kiln-devcluster-")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        objects_store = store.Store(self.data_dir / "objects" if self.persist and self.data_dir else None)
        self._stack.callback(objects_store.close)
        self.registry = registry.Registry(objects_store)
        self.registry.admission.extend([network.allocate_cluster_ip, jobs.default_selector, cronjobs.validate])
        quota_usages = admission_plugins.install(self.registry)
        self.api = server.ApiServer(self.registry, self.audit_path, self.settings.authorization, self.settings.faults)
        self.port = await self._stack.enter_async_context(server.serving(self.api, self.host, self.requested_port))
        self._install_addons()
        self.kubelet = kubelet.Kubelet(self.registry, self.settings, self.state_dir, self.url)
        self.api.log_reader = self.kubelet.read_log
        self.api.log_follower = self.kubelet.follow_log
        proxy = network.ServiceProxy(self.registry)
        loops: list[controllers.Controller] = [
            scheduler.Scheduler(self.registry),
            aggregation.ClusterRoleAggregator(self.registry),
            garbage.GarbageCollector(self.registry),
            workloads.DeploymentController(self.registry),
            workloads.ReplicaSetController(self.registry),
            jobs.JobController(self.registry, self.settings.crash_loop_back_off.initial_seconds),
            cronjobs.CronJobController(self.registry),
            network.EndpointsController(self.registry),
            admission_plugins.QuotaController(self.registry, quota_usages),
            network.DnsController(self.registry, self.kubelet.hosts_file),
            storage.VolumeBinder(self.registry, self.volumes_dir),
            prometheus.ScrapeTargets(self.registry, self.targets_file),
            proxy,
            self.kubelet,
        ]
        tasks = [asyncio.create_task(loop.run(), name=loop.name) for loop in loops]
        # unwound in reverse: first no controller acts any more, then processes stop, then the proxy
        self._stack.push_async_callback(proxy.close)
        self._stack.push_async_callback(self.kubelet.close)
        self._stack.push_async_callback(_cancel, tasks)
        if self.settings.prometheus:
            self.prometheus = prometheus.Prometheus(self.state_dir, self.targets_file)
            self._stack.push_async_callback(self.prometheus.stop)
            await self.prometheus.start()
        self.kubeconfig_path.write_text(yaml.safe_dump(kubeconfig(self.url), sort_keys=False))

    def _install_addons(self) -> None:
        """The CRDs, StorageClass, PriorityClasses, nodes and default RBAC roles a fresh cluster starts
        with; kept on restart."""
        assert self.registry is not None
        client = controllers.Client(self.registry, "kiln-devcluster")
        wanted = [(controllers.CRD, crd) for crd in addons.CRDS]
        wanted.append((controllers.STORAGE_CLASS, addons.STORAGE_CLASS))
        wanted += [(controllers.PRIORITY_CLASS, priority_class) for priority_class in addons.PRIORITY_CLASSES]
        wanted += [(controllers.NODE, node) for pool in self.settings.node_pools for node in nodes.pool_nodes(pool)]
        for resource, obj in wanted:
            if client.get(resource, "", obj["metadata"]["name"]) is None:
                client.create(resource, "", copy.deepcopy(obj))
        assert self.api is not None
        self.api.access.install_defaults()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
        if self._scratch is not None:
            self._scratch.cleanup()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class ThreadedDevCluster:
    """A DevCluster on its own event loop in a daemon thread, for synchronous callers."""

    def __init__(
        self, data_dir: pathlib.Path | None = None, port: int = 0, settings: config.ClusterConfig | None = None
    ) -> None:
        self.cluster = DevCluster(data_dir, port=port, settings=settings)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kiln-devcluster", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with self.cluster:
                self._started.set()
                await self._stop.wait()
        except BaseException as error:  # surfaced to the starting thread
            self._error = error
            self._started.set()

    def __enter__(self) -> DevCluster:
        self._thread.start()
        self._started.wait(timeout=30)
        if self._error is not None:
            raise self._error
        return self.cluster

    def __exit__(self, *exc_info: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


async def serve_forever(
    data_dir: pathlib.Path, port: int, persist: bool = True, settings: config.ClusterConfig | None = None
) -> None:
    """Run until SIGTERM or SIGINT: what `kiln cluster start` runs in the background."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with DevCluster(data_dir, port=port, persist=persist, settings=settings) as cluster:
        (data_dir / "url").write_text(cluster.url)
        if cluster.prometheus is not None:
            (data_dir / "prometheus-url").write_text(cluster.prometheus.url)
        await stop.wait()
    (data_dir / "prometheus-url").unlink(missing_ok=True)
    (data_dir / "url").unlink(missing_ok=True)


def _pid_file(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / "devcluster.pid"


def running_pid(data_dir: pathlib.Path) -> int | None:
    path = _pid_file(data_dir)
    if not path.exists():
        return None
    pid = int(path.read_text())
    with contextlib.suppress(ChildProcessError):  # reap it if this process started it
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            path.unlink(missing_ok=True)
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    return pid


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_background(
    data_dir: pathlib.Path,
    port: int,
    persist: bool = True,
    settings: config.ClusterConfig | None = None,
    timeout: float = 90,
) -> str:
    """Start the dev cluster as a detached process; returns its URL once it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if running_pid(data_dir) is not None:
        raise RuntimeError(f"a dev cluster is already running from {data_dir}")
    (data_dir / "url").unlink(missing_ok=True)
    config_file = data_dir / "config.yaml"
    config_file.write_text(yaml.safe_dump((settings or config.ClusterConfig()).model_dump(mode="json", by_alias=True)))
    command = [
        sys.executable,
        "-m",
        "kiln.devcluster",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--config",
        str(config_file),
    ]
    if not persist:
        command.append("--in-memory")
    with (data_dir / "devcluster.log").open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output, start_new_session=True)
    _pid_file(data_dir).write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url_file = data_dir / "url"
        if url_file.exists() and _healthy(url_file.read_text()):
            return url_file.read_text()
        if process.poll() is not None:
            raise RuntimeError(f"the dev cluster exited with {process.returncode}; see {data_dir / 'devcluster.log'}")
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"the dev cluster did not answer within {timeout}s; see {data_dir / 'devcluster.log'}")


def stop_background(data_dir: pathlib.Path, timeout: float = 30) -> bool:
    """Stop a background dev cluster; False when none was running."""
    pid = running_pid(data_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid(data_dir) is not None:
        time.sleep(0.1)
    if running_pid(data_dir) is not None:
        os.kill(pid, signal.SIGKILL)
    _pid_file(data_dir).unlink(missing_ok=True)
    return True
