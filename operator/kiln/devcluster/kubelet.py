"""The kubelet: runs bound pods, as real local processes or simulated, and reports their status.

A container that runs Python (`python …`, `kiln-…`, or an image the config
lists as local) is started as a subprocess in its own session with the pod's
environment, its own loopback IP, its volumes, its probes and its restart
policy; its output is the pod's log. Any other container is simulated as
kwok does: Running and Ready at once, and, in a Job's pod, succeeding after
the configured duration. Deleting a pod sends SIGTERM, waits the grace
period, then SIGKILL, and only then is the pod object removed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import dataclasses
import datetime
import json
import logging
import os
import pathlib
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from typing import Any

from kiln.devcluster import (
    config,
    controllers,
    errors,
    identity,
    network,
    objects,
    podenv,
    probes,
    registry,
    scheduling,
    store,
    volumes,
)
from kiln.devcluster.controllers import NODE, POD, SERVICE, Key

log = logging.getLogger(__name__)

Object = dict[str, Any]

SHIM_DIR = pathlib.Path(__file__).parent / "podshim"
SIMULATED_DURATION = "kiln.dev/simulated-duration"
SIMULATED_EXIT_CODE = "kiln.dev/simulated-exit-code"
STABLE_RUN_SECONDS = 600  # a container that ran this long starts its back-off afresh, as the kubelet does
NAME_WAIT_SECONDS = 30.0
SHUTDOWN_GRACE_SECONDS = 5.0
FOLLOW_POLL_SECONDS = 0.2
SIDECAR_START_POLL_SECONDS = 0.05
NAME_POLL_SECONDS = 0.2
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills it if the dev cluster dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Container:
    """One container of a running pod: its process (or simulation), probes, restarts and status."""

    def __init__(self, worker: PodWorker, spec: Object, init: bool, previous: Object | None) -> None:
        self.worker = worker
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.sidecar = init and spec.get("restartPolicy") == "Always"
        """A native sidecar: an init container that keeps running beside the main containers."""
        self.retired = False
        self.halt = asyncio.Event()
        """Set when this container is to stop for good: its pod stops, or, for a sidecar, its main containers end."""
        self.real = podenv.runs_as_process(spec, worker.kubelet.config.local_images)
        self.restart_count = int((previous or {}).get("restartCount", 0))
        if (previous or {}).get("state", {}).get("running"):
            self.restart_count += 1  # the dev cluster restarted under it: its process did not survive
        self.state: Object = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Object = {}
        self.ready = False
        self.started = False
        self.process: asyncio.subprocess.Process | None = None
        self.crashes = 0
        self.kill_reason = ""
        self.killed = asyncio.Event()
        self.message_file: pathlib.Path | None = None

    # status

    def status(self) -> Object:
        image = self.spec.get("image", "")
        entry: Object = {
            "name": self.name,
            "image": image,
            "imageID": f"kiln-local://{image}" if self.real else f"kiln-simulated://{image}",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.process is not None:
            entry["containerID"] = f"kiln-process://{self.process.pid}"
        return entry

    @property
    def terminated(self) -> Object | None:
        found: Object | None = self.state.get("terminated")
        return found

    # running

    async def run(self) -> None:
        """Run, and restart as the restart policy says, until done or the pod stops."""
        policy = self.worker.pod["spec"].get("restartPolicy", "Always")
        if self.sidecar:
            policy = "Always"
        elif self.init and policy == "Always":
            policy = "OnFailure"
        while not self.worker.stopping.is_set() and not self.retired:
            started_at = datetime.datetime.now(datetime.UTC)
            exit_code = await (self._run_process() if self.real else self._simulate())
            if self.worker.stopping.is_set():
                return
            ran = (datetime.datetime.now(datetime.UTC) - started_at).total_seconds()
            self.crashes = 0 if ran >= STABLE_RUN_SECONDS else self.crashes
            if policy == "Never" or (policy == "OnFailure" and exit_code == 0):
                return
            self.crashes += 1
            await self._back_off()
            self.restart_count += 1

    async def _back_off(self) -> None:
        """Wait before a restart: none the first time, then doubling up to the maximum."""
        settings = self.worker.kubelet.config.crash_loop_back_off
        if self.crashes <= 1:
            return
        delay = min(settings.initial_seconds * 2 ** (self.crashes - 2), settings.max_seconds)
        pod = self.worker.pod["metadata"]
        where = f"pod={pod['name']}_{pod['namespace']}({pod['uid']})"
        message = f"back-off {delay:g}s restarting failed container={self.name} {where}"
        if self.terminated:
            self.last_state = {"terminated": self.terminated}
        self.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
        self.worker.publish()
        self.worker.event("Warning", "BackOff", "Back-off restarting failed container")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.worker.stopping.wait(), delay)

    def _enter_running(self) -> None:
        if self.terminated:
            self.last_state = {"terminated": self.terminated}
        self.state = {"running": {"startedAt": objects.now()}}
        self.killed.clear()
        self.kill_reason = ""

    def _exit(self, exit_code: int, reason: str, started: str, message: str = "") -> int:
        self.ready = False
        self.started = False
        terminated: Object = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": objects.now(),
            "containerID": f"kiln-process://{self.process.pid}" if self.process else "",
        }
        if message:
            terminated["message"] = message
        self.state = {"terminated": terminated}
        self.worker.publish()
        return exit_code

    async def _simulate(self) -> int:
        self._enter_running()
        self.started = True
        self.ready = True
        started = self.state["running"]["startedAt"]
        self.worker.publish()
        annotations = self.worker.pod["metadata"].get("annotations") or {}
        duration = None if self.sidecar else annotations.get(SIMULATED_DURATION)
        if duration is None and not self.sidecar and (self.init or self.worker.runs_to_completion):
            duration = str(self.worker.kubelet.config.simulated_job_duration)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.halt.wait(), float(duration.rstrip("s")) if duration is not None else None)
        if self.halt.is_set():
            return self._exit(0, "Completed", started)
        code = int(annotations.get(SIMULATED_EXIT_CODE, "0"))
        return self._exit(code, "Completed" if code == 0 else "Error", started)

    async def _run_process(self) -> int:
        worker = self.worker
        try:
            argv, env, cwd = await worker.launch_when_named(self.spec)
        except podenv.ConfigError as error:
            self.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
            worker.publish()
            worker.event("Warning", "Failed", f"Error: {error}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    worker.stopping.wait(), self.worker.kubelet.config.crash_loop_back_off.initial_seconds
                )
            return 1
        log_path = worker.log_path(self.name, self.restart_count)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.message_file = worker.fresh_termination_file(self.spec)
        self._enter_running()
        started = self.state["running"]["startedAt"]
        try:
            with log_path.open("ab") as output:
                self.process = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=cwd,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
        except OSError as error:
            worker.event("Warning", "Failed", f"Error: failed to start container {self.name}: {error}")
            return self._exit(128, "StartError", started, f"failed to start {argv[0]}: {error}")
        worker.kubelet.processes.add(self.process)
        worker.event("Normal", "Started", f"Started container {self.name}")
        self.started = "startupProbe" not in self.spec
        self.ready = self.started and "readinessProbe" not in self.spec
        worker.publish()
        probing = asyncio.create_task(self._probe(env, cwd))
        try:
            code = await self.process.wait()
        finally:
            probing.cancel()
            worker.kubelet.processes.discard(self.process)
            with contextlib.suppress(asyncio.CancelledError):
                await probing
        exit_code = 128 - code if code < 0 else code
        reason = "Completed" if exit_code == 0 else "Error"
        return self._exit(exit_code, reason, started, self._termination_message(exit_code, log_path))

    def _termination_message(self, exit_code: int, log_path: pathlib.Path) -> str:
        """The file's first 4096 bytes; or, when it is empty, the container failed and its policy is
        FallbackToLogsOnError, the end of its log; else why the kubelet killed it, if it did."""
        message = b""
        if self.message_file is not None:
            with contextlib.suppress(OSError), self.message_file.open("rb") as stream:
                message = stream.read(TERMINATION_MESSAGE_BYTES)
        fallback = self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError" and exit_code != 0
        if not message and fallback:
            with contextlib.suppress(OSError):
                lines = log_path.read_bytes().splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
                message = b"".join(lines)[-FALLBACK_LOG_BYTES:]
        return message.decode(errors="replace") or self.kill_reason

    async def stop(self, grace: float) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    # probes

    async def _probe(self, env: dict[str, str], cwd: str) -> None:
        startup = self.spec.get("startupProbe")
        if startup and not await self._until_started(startup, env, cwd):
            return
        tasks = []
        if "readinessProbe" in self.spec:
            tasks.append(self._readiness(self.spec["readinessProbe"], env, cwd))
        if "livenessProbe" in self.spec:
            tasks.append(self._liveness(self.spec["livenessProbe"], env, cwd))
        await asyncio.gather(*tasks)

    async def _attempt(self, probe: probes.Prober, env: dict[str, str], cwd: str) -> probes.Result:
        return await probes.run(probe.probe, self.spec, self.worker.ip, env, cwd)

    async def _until_started(self, spec: Object, env: dict[str, str], cwd: str) -> bool:
        prober = probes.Prober(spec, initially=False)
        await asyncio.sleep(prober.initial_delay)
        while True:
            prober.record(await self._attempt(prober, env, cwd))
            if prober.passing:
                self.started = True
                self.ready = "readinessProbe" not in self.spec
                self.worker.publish()
                return True
            if prober._failures >= int(spec.get("failureThreshold", 3)):
                await self._kill_unhealthy("Startup", prober.last_message)
                return False
            await asyncio.sleep(prober.period)

    async def _readiness(self, spec: Object, env: dict[str, str], cwd: str) -> None:
        prober = probes.Prober(spec, initially=False)
        await asyncio.sleep(prober.initial_delay)
        while True:
            result = await self._attempt(prober, env, cwd)
            if prober.record(result):
                self.ready = prober.passing
                self.worker.publish()
                if not prober.passing:
                    self.worker.event("Warning", "Unhealthy", f"Readiness probe failed: {result.message}")
            await asyncio.sleep(prober.period)

    async def _liveness(self, spec: Object, env: dict[str, str], cwd: str) -> None:
        prober = probes.Prober(spec, initially=True)
        await asyncio.sleep(prober.initial_delay)
        while True:
            result = await self._attempt(prober, env, cwd)
            prober.record(result)
            if not prober.passing:
                await self._kill_unhealthy("Liveness", result.message)
                return
            await asyncio.sleep(prober.period)

    async def _kill_unhealthy(self, probe: str, message: str) -> None:
        self.worker.event("Warning", "Unhealthy", f"{probe} probe failed: {message}")
        self.worker.event("Normal", "Killing", f"Container {self.name} failed {probe.lower()} probe, will be restarted")
        self.kill_reason = f"{probe} probe failed: {message}"
        await self.stop(self.worker.grace_period())


class PodWorker:
    """Everything the kubelet does for one pod, from volumes to the final deletion."""

    def __init__(self, kubelet: Kubelet, pod: Object) -> None:
        self.kubelet = kubelet
        self.pod = pod
        metadata = pod["metadata"]
        self.uid: str = metadata["uid"]
        self.key: Key = (metadata["namespace"], metadata["name"])
        self.dir = kubelet.pods_dir / f"{metadata['namespace']}_{metadata['name']}_{self.uid}"
        self.ip = pod.get("status", {}).get("podIP") or kubelet.allocate_ip()
        self.stopping = asyncio.Event()
        # A pod that is not restarted when it exits is a batch pod (a Job's, a TrainingJob worker):
        # a simulated one finishes after simulatedJobDuration rather than running forever.
        self.runs_to_completion = pod["spec"].get("restartPolicy", "Always") != "Always"
        previous = {c["name"]: c for c in pod.get("status", {}).get("containerStatuses") or []}
        previous_init = {c["name"]: c for c in pod.get("status", {}).get("initContainerStatuses") or []}
        self.init_containers = [
            Container(self, c, True, previous_init.get(c["name"])) for c in pod["spec"].get("initContainers") or []
        ]
        self.containers = [
            Container(self, c, False, previous.get(c["name"])) for c in pod["spec"].get("containers") or []
        ]
        self.initialized = not self.init_containers
        self.failed_init = False
        self.directories: dict[str, pathlib.Path] = {}
        self._publishing = False
        self.task: asyncio.Task[None] | None = None
        self.termination: asyncio.Task[None] | None = None
        self.started_at = pod.get("status", {}).get("startTime") or objects.now()

    @property
    def client(self) -> controllers.Client:
        return self.kubelet.client

    def start(self) -> None:
        self.publish_now()
        self.task = asyncio.create_task(self._run(), name=f"pod {self.key[0]}/{self.key[1]}")

    def log_path(self, container: str, restart: int) -> pathlib.Path:
        return self.dir / "logs" / container / f"{restart}.log"

    def grace_period(self) -> float:
        metadata = self.pod["metadata"]
        grace = metadata.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

    def event(self, event_type: str, reason: str, message: str) -> None:
        if not self.kubelet.closing:
            self.client.event(self.pod, event_type, reason, message)

    def lookup(self, resource: str, name: str) -> Object | None:
        return self.client.get(resource, self.key[0], name)

    # the pod's life

    async def _run(self) -> None:
        # Only processes read the pod's files: a simulated pod's volumes are checked (a missing
        # ConfigMap fails it alike) but not written, which in a big simulated cluster is most of
        # what the kubelet would spend on each pod.
        runs_processes = any(container.real for container in [*self.init_containers, *self.containers])
        try:
            self.directories = volumes.prepare(
                self.pod,
                self.dir,
                self.kubelet.volumes_dir,
                self.lookup,
                self.kubelet.token_for(self.pod),
                write=runs_processes,
            )
        except (podenv.ConfigError, OSError) as error:
            self.event("Warning", "FailedMount", f"MountVolume.SetUp failed: {error}")
            for container in self.containers:
                container.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
            self.publish()
            await self.stopping.wait()
            return
        if runs_processes:
            self.write_kubeconfig()
        sidecars: list[asyncio.Task[None]] = []
        for container in self.init_containers:
            if container.sidecar:
                sidecars.append(asyncio.create_task(container.run()))
                while not container.started and not self.stopping.is_set():
                    await asyncio.sleep(SIDECAR_START_POLL_SECONDS)
                continue
            await container.run()
            if self.stopping.is_set():
                return
            terminated = container.terminated or {}
            if terminated.get("exitCode") != 0:
                self.failed_init = True
                self.publish()
                return
        self.initialized = True
        self.publish()
        await asyncio.gather(*(container.run() for container in self.containers))
        for container in self.init_containers:  # the main containers are done: so are their sidecars
            container.retired = True
            container.halt.set()
            await container.stop(self.grace_period())
        await asyncio.gather(*sidecars)
        self.publish()

    def stop_all(self) -> None:
        self.stopping.set()
        for container in [*self.init_containers, *self.containers]:
            container.halt.set()

    async def terminate(self) -> None:
        """Stop every process within the grace period, then let the API server remove the pod."""
        grace = self.grace_period()
        if not self.stopping.is_set():
            self.stop_all()
            if any(c.process is not None and c.process.returncode is None for c in self.containers):
                self.event("Normal", "Killing", "Stopping container " + ", ".join(c.name for c in self.containers))
        await asyncio.gather(*(c.stop(grace) for c in [*self.init_containers, *self.containers]))
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def kill(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        self.stop_all()
        await asyncio.gather(*(c.stop(grace) for c in [*self.init_containers, *self.containers]))
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    # launching

    def write_kubeconfig(self) -> None:
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kiln-dev", "cluster": {"server": self.kubelet.api_url}}],
            "users": [{"name": "pod", "user": {"token": self.kubelet.token_for(self.pod)}}],
            "contexts": [{"name": "pod", "context": {"cluster": "kiln-dev", "user": "pod", "namespace": self.key[0]}}],
            "current-context": "pod",
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "kubeconfig").write_text(json.dumps(document))  # JSON is YAML, and quicker to write

    def container_mounts(self, spec: Object) -> dict[str, str]:
        """The container's mountPath -> directory map, and its terminationMessagePath's file when
        no volume holds that path."""
        mounts = volumes.mounts(spec, self.directories)
        path = spec.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        if podenv.translate_path(path, mounts) == path:
            mounts[path] = str(self.dir / "termination" / spec["name"])
        return mounts

    def fresh_termination_file(self, spec: Object) -> pathlib.Path | None:
        """The container's termination message file on this machine, emptied for a new run when it
        is the pod's own (its own file, or in an emptyDir); a file on a claim or host path is left
        as it is, since here it is the volume's data, not a file mounted over it."""
        path = spec.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        file = pathlib.Path(podenv.translate_path(path, self.container_mounts(spec)))
        if not file.resolve().is_relative_to(self.dir.resolve()):
            return file
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(b"")
        except OSError as error:
            log.info("kubelet: no termination message file for %s in %s/%s: %s", spec["name"], *self.key, error)
            return None
        return file

    async def launch_when_named(self, spec: Object) -> tuple[list[str], dict[str, str], str]:
        """The launch, held briefly while a cluster name in its env has no address yet (a peer pod
        of the same gang that is a moment behind), as a pod would retry DNS."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NAME_WAIT_SECONDS
        while True:
            argv, env, cwd, unresolved = self.launch_spec(spec)
            if not unresolved or loop.time() >= deadline or self.stopping.is_set():
                return argv, env, cwd
            await asyncio.sleep(NAME_POLL_SECONDS)

    def launch_spec(self, spec: Object) -> tuple[list[str], dict[str, str], str, list[str]]:
        """argv, environment and working directory of a container's process, and the cluster
        names in its env that have no address yet.

        An env value naming a cluster host (MASTER_ADDR=rank-0.job) is given as its address, so
        that programs that resolve names outside Python (torch's rendezvous store) find it too."""
        kubelet = self.kubelet
        api_host, _, api_port = kubelet.api_url.removeprefix("http://").rpartition(":")
        pod_spec = self.pod["spec"]
        base = {
            "PATH": os.pathsep.join(
                [
                    str(kubelet.bin_dir),
                    str(pathlib.Path(sys.executable).parent),
                    os.environ.get("PATH", "/usr/bin:/bin"),
                ]
            ),
            "HOME": str(self.dir),
            "HOSTNAME": pod_spec.get("hostname") or self.key[1],
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": api_host,
            "KUBERNETES_SERVICE_PORT": api_port,
            "KUBECONFIG": str(self.dir / "kubeconfig"),
        }
        if pod_spec.get("enableServiceLinks", True):
            base.update(podenv.service_links(self.client.list(SERVICE, self.key[0])))
        env = podenv.container_env(self.pod_with_ip(), spec, self.lookup, base)
        mounts = self.container_mounts(spec)
        addresses = self.kubelet.cluster_addresses(env.values(), self.key[0])
        unresolved = [value for value, address in addresses.items() if address is None]
        # The kubelet's own entries are host paths already: a pod that mounts a volume at /tmp must
        # still find its kubeconfig when the dev cluster's data lives under /tmp.
        env = {
            name: value if base.get(name) == value else podenv.translate_path(addresses.get(value) or value, mounts)
            for name, value in env.items()
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SHIM_DIR), env.get("PYTHONPATH")]))
        env.update(
            {
                "KILN_DEVCLUSTER_POD_IP": self.ip,
                "KILN_DEVCLUSTER_NAMESPACE": self.key[0],
                "KILN_DEVCLUSTER_HOSTS": str(kubelet.hosts_file),
            }
        )
        argv = [
            podenv.translate_path(podenv.expand(word, env), mounts)
            for word in [*(spec.get("command") or []), *(spec.get("args") or [])]
        ]
        program = shutil.which(argv[0], path=env["PATH"]) if "/" not in argv[0] else argv[0]
        if program is None:
            raise podenv.ConfigError(f'exec: "{argv[0]}": executable file not found in $PATH')
        argv[0] = program
        working_dir = spec.get("workingDir")
        cwd = podenv.translate_path(working_dir, mounts) if working_dir else str(self.dir)
        pathlib.Path(cwd).mkdir(parents=True, exist_ok=True)
        return argv, env, cwd, unresolved

    def pod_with_ip(self) -> Object:
        pod = controllers.copied(self.pod)
        pod.setdefault("status", {}).update(podIP=self.ip, hostIP="127.0.0.1")
        return pod

    # status

    def publish(self) -> None:
        """Write the status soon, once for any number of changes in the same moment."""
        if self._publishing:
            return
        self._publishing = True
        asyncio.get_running_loop().call_soon(self.publish_now)

    def publish_now(self) -> None:
        self._publishing = False
        if self.kubelet.closing:
            return
        current = self.client.get(POD, *self.key)
        if current is None or current["metadata"]["uid"] != self.uid:
            return
        try:
            self.client.update_status(POD, current, pod_status(current, self))
        except errors.ApiError as error:
            log.debug("kubelet: status of %s/%s not written: %s", *self.key, error)
            self.publish()


def _readiness_conditions(
    conditions: list[Object], worker: PodWorker, *, terminal: str | None, now: str
) -> list[Object]:
    """The pod conditions the kubelet owns: ready to start, Initialized, ContainersReady, Ready."""
    kinds = [("PodReadyToStartContainers", "True", "", "")]
    if worker.initialized:
        kinds.append(("Initialized", "True", "", ""))
    else:
        pending = [
            c.name
            for c in worker.init_containers
            if (c.terminated or {}).get("exitCode") != 0 and not (c.sidecar and c.started)
        ]
        kinds.append(
            (
                "Initialized",
                "False",
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending)}]",
            )
        )
    unready = [c.name for c in worker.containers if not c.ready]
    ready = not unready and terminal is None and pod_phase(worker) == "Running"
    message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    reason = "PodCompleted" if terminal == "Succeeded" else ("PodFailed" if terminal else "ContainersNotReady")
    for kind in ("ContainersReady", "Ready"):
        kinds.append((kind, "True" if ready else "False", "" if ready else reason, message))
    for kind, status, why, text in kinds:
        conditions = objects.set_condition(conditions, kind, status, why, text, now, lastProbeTime=None)
    return conditions


def pod_phase(worker: PodWorker) -> str:
    if worker.failed_init:
        return "Failed"
    if not worker.initialized:
        return "Pending"
    states = [c.state for c in worker.containers]
    if any("running" in state for state in states):
        return "Running"
    if states and all("terminated" in state for state in states):
        codes = [state["terminated"].get("exitCode", 0) for state in states]
        return "Succeeded" if all(code == 0 for code in codes) else "Failed"
    if any(c.restart_count or c.last_state for c in worker.containers):
        return "Running"  # restarting after a crash
    return "Pending"


def pod_status(pod: Object, worker: PodWorker) -> Object:
    """The status the kubelet reports: phase, IPs, conditions and every container's state."""
    status = controllers.copied(pod.get("status") or {})
    phase = pod_phase(worker)
    terminal = phase if phase in scheduling.TERMINAL_PHASES else None
    status.update(
        phase=phase,
        hostIP="127.0.0.1",
        hostIPs=[{"ip": "127.0.0.1"}],
        podIP=worker.ip,
        podIPs=[{"ip": worker.ip}],
        startTime=worker.started_at,
        containerStatuses=[c.status() for c in worker.containers],
    )
    if worker.init_containers:
        status["initContainerStatuses"] = [c.status() for c in worker.init_containers]
    status["conditions"] = _readiness_conditions(
        status.get("conditions") or [], worker, terminal=terminal, now=objects.now()
    )
    return status


@dataclasses.dataclass
class _AddressesInUse:
    """The pod addresses taken: in pods' status, or by a worker whose pod does not show it yet."""

    in_status: collections.Counter[str]
    of_workers: collections.Counter[str]

    def __contains__(self, address: object) -> bool:
        return self.in_status[str(address)] > 0 or self.of_workers[str(address)] > 0


class Kubelet(controllers.Controller):
    """One kubelet for every simulated node: it starts a worker for each pod bound to any of them."""

    name = "kubelet"

    def __init__(
        self, cluster: registry.Registry, settings: config.ClusterConfig, state_dir: pathlib.Path, api_url: str
    ) -> None:
        super().__init__(cluster)
        self.config = settings
        self.api_url = api_url
        self.pods_dir = state_dir / "pods"
        self.volumes_dir = state_dir / "volumes"
        self.hosts_file = state_dir / "hosts"
        self.bin_dir = state_dir / "bin"
        self.workers: dict[Key, PodWorker] = {}
        self._worker_ips: collections.Counter[str] = collections.Counter()
        self._addresses = network.AddressRange(network.POD_NETWORK, network.ALLOCATION_OFFSET)
        self._pod_ips = {
            store.key_of(pod): pod["status"]["podIP"]
            for pod in self.client.list(POD)
            if pod.get("status", {}).get("podIP")
        }
        self._ips_in_status = collections.Counter(self._pod_ips.values())
        self.processes: set[asyncio.subprocess.Process] = set()
        self.closing = False
        self._write_python_wrappers()

    def _write_python_wrappers(self) -> None:
        """`python` and `python3` in pods are the dev cluster's interpreter, which has Kiln installed."""
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        for name in ("python", "python3"):
            wrapper = self.bin_dir / name
            wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
            wrapper.chmod(0o755)

    def token_for(self, pod: Object) -> str:
        return identity.service_account_token(
            pod["metadata"]["namespace"], pod["spec"].get("serviceAccountName", "default")
        )

    def allocate_ip(self) -> str:
        return self._addresses.allocate(_AddressesInUse(self._ips_in_status, self._worker_ips))

    def _add_worker(self, worker: PodWorker) -> None:
        self.workers[worker.key] = worker
        self._worker_ips[worker.ip] += 1

    def _drop_worker(self, worker: PodWorker) -> None:
        del self.workers[worker.key]
        self._worker_ips[worker.ip] -= 1

    def cluster_addresses(self, values: Iterable[str], namespace: str) -> dict[str, str | None]:
        """Each value that names a cluster host, with its address now (None: not yet resolvable)."""
        services = {s["metadata"]["name"] for s in self.client.list(SERVICE, namespace)}
        names = {value for value in values if network.looks_like_cluster_name(value, services)}
        if not names:
            return {}
        records = network.dns_records(
            self.client.list(SERVICE), self.client.list(controllers.ENDPOINTS), self.client.list(POD)
        )
        return {name: network.lookup(records, name, namespace) for name in names}

    def initial_keys(self) -> Iterable[Key]:
        return self.keys_of(POD)

    def keys_for(self, event: store.Event) -> Iterable[Key]:
        if event.resource == NODE and event.type == store.ADDED:
            name = event.object["metadata"]["name"]
            return [
                (p["metadata"]["namespace"], p["metadata"]["name"])
                for p in self.client.list(POD)
                if p["spec"].get("nodeName") == name
            ]
        if event.resource != POD:
            return ()
        key = controllers.object_key(event)
        address = event.object.get("status", {}).get("podIP")
        before = self._pod_ips.pop(key, None)
        if before is not None:
            self._ips_in_status[before] -= 1
        if address and event.type != store.DELETED:
            self._pod_ips[key] = address
            self._ips_in_status[address] += 1
        return [key]

    async def reconcile(self, key: Key) -> float | None:
        if self.closing:
            return None  # the dev cluster is stopping: start nothing more
        pod = self.client.get(POD, *key)
        worker = self.workers.get(key)
        if worker is not None and (pod is None or pod["metadata"]["uid"] != worker.uid):
            self._drop_worker(worker)
            await worker.kill(0)  # force-deleted: no grace left
            worker = None
        if pod is None or self.client.get(NODE, "", pod["spec"].get("nodeName") or "") is None:
            return None  # unbound, or bound to a node that no kubelet here runs
        if worker is None:
            if scheduling.is_terminal(pod) or pod["metadata"].get("deletionTimestamp"):
                self._finish_deletion(pod)
                return None
            worker = PodWorker(self, pod)
            self._add_worker(worker)
            worker.start()
            return None
        worker.pod = pod
        volumes.refresh(pod, worker.directories)
        if pod["metadata"].get("deletionTimestamp") and not worker.stopping.is_set():
            worker.termination = asyncio.create_task(self._terminate(worker), name=f"terminate {key[0]}/{key[1]}")
        return None

    async def _terminate(self, worker: PodWorker) -> None:
        await worker.terminate()
        worker.publish_now()
        if self.workers.get(worker.key) is worker:
            self._drop_worker(worker)
        current = self.client.get(POD, *worker.key)
        if current is not None and current["metadata"]["uid"] == worker.uid:
            self._finish_deletion(current)

    def _finish_deletion(self, pod: Object) -> None:
        if pod["metadata"].get("deletionTimestamp") and pod["metadata"].get("deletionGracePeriodSeconds"):
            self.client.delete(POD, pod["metadata"]["namespace"], pod["metadata"]["name"], {"gracePeriodSeconds": 0})

    async def close(self) -> None:
        """Stop every process: SIGTERM, a short grace, then SIGKILL."""
        self.closing = True
        workers = list(self.workers.values())
        self.workers.clear()
        self._worker_ips.clear()
        await asyncio.gather(*(worker.kill(SHUTDOWN_GRACE_SECONDS) for worker in workers))
        for process in list(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    # logs

    def _log_directory(self, namespace: str, name: str, container: str | None) -> pathlib.Path:
        """Where a container's runs are logged, one file per run; names the container as kubectl expects."""
        pod = self.client.get(POD, namespace, name)
        if pod is None:
            raise errors.not_found("pods", "", name)
        names = [c["name"] for c in [*pod["spec"].get("initContainers", []), *pod["spec"].get("containers", [])]]
        default = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
        main = [c["name"] for c in pod["spec"].get("containers", [])]
        chosen = container or default or (main[0] if len(main) == 1 else None)
        if chosen is None:
            raise errors.bad_request(
                f"a container name must be specified for pod {name}, choose one of: [{' '.join(main)}]"
            )
        if chosen not in names:
            raise errors.bad_request(f"container {chosen} is not valid for pod {name}")
        return self.pods_dir / f"{namespace}_{name}_{pod['metadata']['uid']}" / "logs" / chosen

    def read_log(self, namespace: str, name: str, container: str | None, tail: int | None, previous: bool) -> str:
        directory = self._log_directory(namespace, name, container)
        chosen = directory.name
        runs = sorted((int(path.stem) for path in directory.glob("*.log")), reverse=True) if directory.exists() else []
        if previous:
            worker = self.workers.get((namespace, name))
            now = next((c for c in worker.containers if c.name == chosen), None) if worker else None
            waiting = now is not None and "waiting" in now.state  # backing off: no current run, the newest ended
            runs = runs if waiting else runs[1:]
            if not runs:
                raise errors.bad_request(f'previous terminated container "{chosen}" in pod "{name}" not found')
        if not runs:
            return ""
        text = (directory / f"{runs[0]}.log").read_text(errors="replace")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-tail:]) if tail > 0 else ""
        return text

    async def follow_log(self, namespace: str, name: str, container: str | None) -> AsyncIterator[str]:
        """What the container's current run writes after now, until that run ends (`kubectl logs -f`)."""
        directory = self._log_directory(namespace, name, container)
        worker = self.workers.get((namespace, name))
        running = next((c for c in worker.containers if c.name == directory.name), None) if worker else None
        if running is None or running.process is None or running.process.returncode is not None:
            return
        process = running.process
        path = directory / f"{running.restart_count}.log"
        offset = path.stat().st_size if path.exists() else 0
        while True:
            finished = process.returncode is not None
            if path.exists() and path.stat().st_size > offset:
                with path.open("rb") as log_file:
                    log_file.seek(offset)
                    chunk = log_file.read()
                offset += len(chunk)
                yield chunk.decode(errors="replace")
            if finished:
                return
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
