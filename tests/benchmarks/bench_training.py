"""Benchmark TrainingJob admission at scale: 100, then 1,000 single-worker 1-GPU jobs on 125 nodes
of 8 GPUs, through `kiln run` against the dev cluster.

Run with `python tests/benchmarks/bench_training.py` (or `make bench`). For each size it starts a
fresh dev cluster as `kiln cluster start` does (a process of its own, in memory, with 125 nodes of
8 GPUs), applies Kiln's CRDs, starts the operator (`python -m kiln run`, a process of its own), and
submits the jobs as fast as a few concurrent clients can, once a warm-up job has run and gone (so the
operator's start-up is not counted). Every worker's image is not local, so the
dev cluster's kubelet simulates it and it runs until deleted. Watches on TrainingJobs and worker
pods, opened before the first job is submitted, time, in a round of each size:

- the admission rate in a burst: jobs per second from the first submission to the last job seen
  Admitted, and the time until every job is Running;
- apply → worker pod in the burst: from a job's create call returning to its worker pod's ADDED
  event (p50, p99), while the jobs are submitted faster than two cores make pods;
- apply → worker pod beside the jobs: once every job runs, 100 more jobs, one every 0.1 s, each
  into capacity that is free (as many of the first jobs deleted first as it takes), with every
  live object counted (the jobs, their pods, Services, service accounts, Roles, RoleBindings and
  Events): the latency a user sees on a cluster that holds thousands of objects;
- the operator's memory: its VmRSS, sampled, and its peak (VmHWM) at the end;

and, in a second round of each size on a cluster of its own, the admission rate from a backlog: the
jobs submitted into a namespace whose ResourceQuota allows no GPU, all seen Queued for it, then the
quota raised to fit them all; jobs per second from the raise to the last seen Admitted, and the
time until every one is Running (in a burst, admission can go no faster than the creates).

It prints the figures for each size and how they grow from the smallest size to the largest: the
peer of each measurement is the same measurement at the smaller size, taken in the same run (per-job
costs that stay flat mean admission is incremental). Targets from issue 17, on a 2-core machine:
≥ 100 jobs/s admitted, all Running in ≤ 60 s at 1,000 jobs, apply → pod p99 ≤ 1 s with 2,000 live
objects (the latency beside the jobs), RSS ≤ 250 MB; they are printed beside the figures, never
asserted.

Not collected by pytest (the file name does not match test_*.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx

from kiln.devcluster import cluster, config

REPO = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "default"
IMAGE = "registry.example/train:1"
JOBS = "/apis/kiln.dev/v1alpha1/trainingjobs"
JOB_LABEL = "kiln.dev/trainingjob"
CLIENTS = 8
WARM_UP = "warm-up"
BACKLOG_QUOTA = "gpus"
GPU_QUOTA = "requests.nvidia.com/gpu"
SIMULATED_SECONDS = 3600.0
SAMPLE_SECONDS = 0.5
PROBES = 100
PROBE_INTERVAL_SECONDS = 0.1
GPUS_PER_NODE = 8
LIVE_KINDS = (
    "/apis/kiln.dev/v1alpha1/trainingjobs",
    "/api/v1/pods",
    "/api/v1/services",
    "/api/v1/serviceaccounts",
    "/apis/rbac.authorization.k8s.io/v1/roles",
    "/apis/rbac.authorization.k8s.io/v1/rolebindings",
    "/api/v1/events",
)
Measured = TypeVar("Measured")
TARGET_JOBS_PER_SECOND = 100.0
TARGET_ALL_RUNNING_SECONDS = 60.0
TARGET_P99_SECONDS = 1.0
TARGET_RSS_MIB = 250.0


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def training_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "container": {"image": IMAGE, "command": ["train"]},
            "resources": {"cpu": "1", "memory": "1Gi", "gpus": {"count": 1}},
            "gangScheduling": {"timeoutSeconds": 3600},
        },
    }


@dataclasses.dataclass
class Backlog:
    jobs: int
    admitted_seconds: float
    running_seconds: float

    @property
    def admitted_per_second(self) -> float:
        return self.jobs / self.admitted_seconds


@dataclasses.dataclass
class Round:
    jobs: int
    submit_seconds: float
    admitted_seconds: float
    running_seconds: float
    pod_latencies: list[float]
    probe_latencies: list[float]
    live_objects: int
    peak_rss_kib: int
    end_rss_kib: int

    @property
    def admitted_per_second(self) -> float:
        return self.jobs / self.admitted_seconds

    def latency(self, share: float) -> float:
        return quantile(self.pod_latencies, share)

    def probe_latency(self, share: float) -> float:
        return quantile(self.probe_latencies, share)


def quantile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)]


@dataclasses.dataclass
class Watched:
    """When the bench first saw each job Queued by quota, Admitted and Running, and each job's
    worker pod."""

    queued: dict[str, float] = dataclasses.field(default_factory=dict)
    admitted: dict[str, float] = dataclasses.field(default_factory=dict)
    running: dict[str, float] = dataclasses.field(default_factory=dict)
    pods: dict[str, float] = dataclasses.field(default_factory=dict)
    pods_gone: set[str] = dataclasses.field(default_factory=set)
    opened: int = 0
    warm_up_gone: bool = False

    def job_event(self, kind: str, obj: dict[str, Any], at: float) -> None:
        status = obj.get("status") or {}
        name = obj["metadata"]["name"]
        if status.get("phase") == "Queued" and str(status.get("message", "")).startswith("quota:"):
            self.queued.setdefault(name, at)
        if status.get("phase") in ("Admitted", "Running"):
            self.admitted.setdefault(name, at)
        if status.get("phase") == "Running":
            self.running.setdefault(name, at)

    def pod_event(self, kind: str, obj: dict[str, Any], at: float) -> None:
        job = (obj["metadata"].get("labels") or {}).get(JOB_LABEL)
        if kind == "ADDED" and job:
            self.pods.setdefault(job, at)
        if kind == "DELETED" and job:
            self.pods_gone.add(job)
        self.warm_up_gone = self.warm_up_gone or (kind == "DELETED" and job == WARM_UP)


async def watch(http: httpx.AsyncClient, path: str, params: dict[str, str], on_event: Any, seen: Watched) -> None:
    """Follow a watch, resuming from the last resourceVersion if the server ends it, and from now
    (every object again, as ADDED) if that version is gone."""
    version = ""
    opened = False
    while True:
        query = {**params, "watch": "1", "allowWatchBookmarks": "true"}
        if version:
            query["resourceVersion"] = version
        async with http.stream("GET", path, params=query) as response:
            if not opened:
                seen.opened += 1
                opened = True
            if response.status_code != 200:
                version = ""
                continue
            async for line in response.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    version = ""
                    break
                version = event["object"]["metadata"].get("resourceVersion", version)
                if event["type"] != "BOOKMARK":
                    on_event(event["type"], event["object"], time.perf_counter())


async def submit(http: httpx.AsyncClient, names: list[str], created: dict[str, float]) -> None:
    queue = list(reversed(names))

    async def client() -> None:
        while queue:
            name = queue.pop()
            response = await http.post(
                f"/apis/kiln.dev/v1alpha1/namespaces/{NAMESPACE}/trainingjobs", json=training_job(name)
            )
            if response.status_code != 201:
                raise RuntimeError(f"creating {name}: {response.status_code} {response.text}")
            created[name] = time.perf_counter()

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


async def warm_up(http: httpx.AsyncClient, seen: Watched, timeout: float) -> None:
    """One job through to Running, then deleted and its worker gone, before the clock starts: the
    operator's watches are open and its inventory filled, so the figures are of admission, not of
    the operator starting up, and the measured jobs have the whole cluster."""
    await submit(http, [WARM_UP], {})
    await _until(lambda: WARM_UP in seen.running, "the warm-up job was not Running", timeout)
    response = await http.delete(f"/apis/kiln.dev/v1alpha1/namespaces/{NAMESPACE}/trainingjobs/{WARM_UP}")
    response.raise_for_status()
    await _until(lambda: seen.warm_up_gone, "the warm-up job's worker was not gone", timeout)


async def probe(
    http: httpx.AsyncClient, jobs: list[str], free_gpus: int, seen: Watched, timeout: float
) -> tuple[list[float], int]:
    """Apply → worker pod beside running jobs: the latencies of PROBES jobs applied one every
    PROBE_INTERVAL_SECONDS into free capacity, and how many objects were live meanwhile."""
    making_room = jobs[: max(0, PROBES - free_gpus)]
    for name in making_room:
        response = await http.delete(f"/apis/kiln.dev/v1alpha1/namespaces/{NAMESPACE}/trainingjobs/{name}")
        response.raise_for_status()
    await _until(lambda: seen.pods_gone >= set(making_room), "the deleted jobs' workers were not gone", timeout)
    live = 0
    for path in LIVE_KINDS:
        response = await http.get(path)
        response.raise_for_status()
        live += len(response.json()["items"])
    names = [f"probe-{index:03d}" for index in range(PROBES)]
    created: dict[str, float] = {}
    submissions = []
    for name in names:
        submissions.append(asyncio.create_task(submit(http, [name], created)))
        await asyncio.sleep(PROBE_INTERVAL_SECONDS)  # the pace of the probes, not a wait for an outcome
    await asyncio.gather(*submissions)
    await _until(lambda: all(name in seen.pods for name in names), "a probe job got no worker pod", timeout)
    return [seen.pods[name] - created[name] for name in names], live


async def _until(done: Any, what: str, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} after {timeout:g}s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def watching(url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Watched, list[asyncio.Task[None]]]]:
    """A client, and watches on TrainingJobs and worker pods, open before it is handed over."""
    seen = Watched()
    limits = httpx.Limits(max_connections=CLIENTS + 4)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60, read=None), limits=limits) as http:
        watches = [
            asyncio.create_task(watch(http, JOBS, {}, seen.job_event, seen)),
            asyncio.create_task(watch(http, "/api/v1/pods", {"labelSelector": JOB_LABEL}, seen.pod_event, seen)),
        ]
        try:
            while seen.opened < len(watches):
                await asyncio.sleep(0.05)
            yield http, seen, watches
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)


async def _until_all(
    names: list[str], done: dict[str, float], watches: list[asyncio.Task[None]], *, pid: int, timeout: float, what: str
) -> int:
    """Wait until every name is in `done`, failing if a watch failed; the operator's peak RSS meanwhile."""
    deadline = time.perf_counter() + timeout
    peak_rss = 0
    while not done.keys() >= set(names):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"after {timeout:g}s: {len(done.keys() & set(names))} of {len(names)} {what}")
        for task in watches:
            if task.done():
                task.result()  # a watch that failed fails the round
        peak_rss = max(peak_rss, memory_kib(pid))
        await asyncio.sleep(SAMPLE_SECONDS)
    return peak_rss


async def measure(url: str, operator_pid: int, *, jobs: int, nodes: int, timeout: float) -> Round:
    names = [f"job-{index:05d}" for index in range(jobs)]
    created: dict[str, float] = {}
    async with watching(url) as (http, seen, watches):
        await warm_up(http, seen, timeout)
        started = time.perf_counter()
        submitting = asyncio.create_task(submit(http, names, created))
        peak_rss = await _until_all(
            names, seen.running, [*watches, submitting], pid=operator_pid, timeout=timeout, what="Running"
        )
        await submitting
        probe_latencies, live = await probe(http, names, nodes * GPUS_PER_NODE - jobs, seen, timeout)
    submitted = max(created.values()) - started
    return Round(
        jobs=jobs,
        submit_seconds=submitted,
        admitted_seconds=max(seen.admitted[name] for name in names) - started,
        running_seconds=max(seen.running[name] for name in names) - started,
        pod_latencies=[seen.pods[name] - created[name] for name in names],
        probe_latencies=probe_latencies,
        live_objects=live,
        peak_rss_kib=max(peak_rss, memory_kib(operator_pid, "VmHWM")),
        end_rss_kib=memory_kib(operator_pid),
    )


async def measure_backlog(url: str, operator_pid: int, *, jobs: int, timeout: float) -> Backlog:
    """The jobs submitted into a namespace whose ResourceQuota allows no GPU, all seen Queued for it,
    then the quota raised to fit them all: the time from the raise until each is Admitted and
    Running, when the operator has the whole backlog to admit at once."""
    names = [f"queued-{index:05d}" for index in range(jobs)]
    quotas = f"/api/v1/namespaces/{NAMESPACE}/resourcequotas"
    async with watching(url) as (http, seen, watches):
        await warm_up(http, seen, timeout)
        response = await http.post(quotas, json=gpu_quota(0))
        response.raise_for_status()
        await submit(http, names, {})
        await _until_all(names, seen.queued, watches, pid=operator_pid, timeout=timeout, what="Queued for the quota")
        started = time.perf_counter()
        raised = {"spec": {"hard": {GPU_QUOTA: str(jobs)}}}
        response = await http.patch(
            f"{quotas}/{BACKLOG_QUOTA}", json=raised, headers={"Content-Type": "application/merge-patch+json"}
        )
        response.raise_for_status()
        await _until_all(names, seen.running, watches, pid=operator_pid, timeout=timeout, what="Running")
    return Backlog(
        jobs=jobs,
        admitted_seconds=max(seen.admitted[name] for name in names) - started,
        running_seconds=max(seen.running[name] for name in names) - started,
    )


def gpu_quota(gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": BACKLOG_QUOTA, "namespace": NAMESPACE},
        "spec": {"hard": {GPU_QUOTA: str(gpus)}},
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited with {process.returncode}")
        time.sleep(0.2)
    raise RuntimeError(f"the operator did not answer {url} within {timeout}s")


@contextlib.contextmanager
def operated_cluster(root: pathlib.Path, nodes: int) -> Iterator[tuple[str, int]]:
    """A dev cluster of `nodes` 8-GPU nodes with Kiln's CRDs and `kiln run`: its URL and the
    operator's pid."""
    pool = config.NodePool(
        name="gpu", count=nodes, cpu="64", memory="512Gi", gpus=8, gpu_product="NVIDIA-H100-80GB-HBM3"
    )
    # Trainer pods run to completion; simulated ones would finish after a second: these run on.
    settings = config.ClusterConfig(node_pools=(pool,), simulated_job_duration=SIMULATED_SECONDS)
    url = cluster.start_background(root, 0, persist=False, settings=settings)
    env = {**os.environ, "KUBECONFIG": str(root / "kubeconfig"), "KUBECACHEDIR": str(root / "kubectl-cache")}
    operator: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["kubectl", "apply", "-f", str(REPO / "crds")], env=env, check=True, capture_output=True)
        subprocess.run(
            ["kubectl", "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"],
            env=env,
            check=True,
            capture_output=True,
        )
        liveness = f"http://127.0.0.1:{_free_port()}/healthz"
        with (root / "operator.log").open("ab") as log:
            operator = subprocess.Popen(
                [sys.executable, "-m", "kiln", "run", "--liveness", liveness, "--metrics-port", "0"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_healthy(liveness, operator)
        yield url, operator.pid
    finally:
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGINT)
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
        cluster.stop_background(root)


def mib(kib: int) -> float:
    return kib / 1024


def report(rounds: list[Round], backlogs: list[Backlog]) -> None:
    print("\nburst: every job submitted as fast as the clients can")
    print(f"{'':>38} {'apply -> worker pod, s':^23} {'beside the running jobs':^35}")
    print(
        f"{'jobs':>6} {'submit s':>9} {'admitted/s':>11} {'all Running s':>14} {'burst p50':>10}"
        f" {'burst p99':>10} {'live objects':>13} {'p50':>9} {'p99':>9} {'peak RSS MiB':>13} {'RSS after MiB':>14}"
    )
    for one in rounds:
        print(
            f"{one.jobs:>6} {one.submit_seconds:>9.2f} {one.admitted_per_second:>11.1f} {one.running_seconds:>14.2f}"
            f" {one.latency(0.5):>10.3f} {one.latency(0.99):>10.3f} {one.live_objects:>13}"
            f" {one.probe_latency(0.5):>9.3f} {one.probe_latency(0.99):>9.3f} {mib(one.peak_rss_kib):>13.0f}"
            f" {mib(one.end_rss_kib):>14.0f}"
        )
    print("\nbacklog: every job Queued by its namespace's quota, then the quota raised to fit them all")
    print(f"{'jobs':>6} {'admitted/s':>11} {'last Admitted s':>16} {'all Running s':>14}")
    for queued in backlogs:
        print(
            f"{queued.jobs:>6} {queued.admitted_per_second:>11.1f} {queued.admitted_seconds:>16.2f}"
            f" {queued.running_seconds:>14.2f}"
        )
    small, large = rounds[0], rounds[-1]
    if large is not small:
        scale = large.jobs / small.jobs
        print(f"\nfrom {small.jobs} to {large.jobs} jobs ({scale:g}x):")
        print(
            f"  time to all Running  x{large.running_seconds / small.running_seconds:.2f} ({scale:g}x would be linear)"
        )
        print(
            f"  per-job time         x{(large.running_seconds / large.jobs) / (small.running_seconds / small.jobs):.2f}"
        )
        print(f"  admission rate       x{large.admitted_per_second / small.admitted_per_second:.2f}")
        print(f"  backlog admission    x{backlogs[-1].admitted_per_second / backlogs[0].admitted_per_second:.2f}")
        print(f"  burst apply -> pod   x{large.latency(0.99) / small.latency(0.99):.2f} (p99)")
        print(
            f"  apply -> pod beside  x{large.probe_latency(0.99) / small.probe_latency(0.99):.2f} (p99; live objects"
            f" x{large.live_objects / small.live_objects:.1f})"
        )
        print(f"  operator peak RSS    x{large.peak_rss_kib / small.peak_rss_kib:.2f}")
    print(
        f"\ntargets at {large.jobs} jobs (issue 17): admitted {backlogs[-1].admitted_per_second:.1f}/s from the"
        f" backlog, {large.admitted_per_second:.1f}/s as submitted (>= {TARGET_JOBS_PER_SECOND:g}),"
        f" all Running {large.running_seconds:.1f}s (<= {TARGET_ALL_RUNNING_SECONDS:g}),"
        f" apply -> pod p99 {large.probe_latency(0.99):.2f}s with {large.live_objects} live objects"
        f" (<= {TARGET_P99_SECONDS:g} with 2,000),"
        f" RSS {mib(large.peak_rss_kib):.0f} MiB (<= {TARGET_RSS_MIB:g})"
    )


def run_round(what: str, nodes: int, measuring: Callable[[str, int], Coroutine[Any, Any, Measured]]) -> Measured | None:
    """Measure on a fresh operated cluster (`measuring` gets its URL and the operator's pid); None if
    it timed out, with the operator's log kept."""
    with tempfile.TemporaryDirectory(prefix="kiln-bench-training-") as scratch:
        root = pathlib.Path(scratch)
        with operated_cluster(root, nodes) as (url, pid):
            print(f"{what} on {nodes} nodes x 8 GPUs (dev cluster {url}, operator pid {pid})")
            try:
                return asyncio.run(measuring(url, pid))
            except TimeoutError as error:
                kept = pathlib.Path(tempfile.gettempdir()) / "bench_training-operator.log"
                kept.write_bytes((root / "operator.log").read_bytes())
                print(f"FAILED: {error}; the operator's log is in {kept}")
                return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="jobs per round, smallest first")
    parser.add_argument("--nodes", type=int, default=125, help="nodes of 8 GPUs")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every job to run")
    arguments = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopped, it still stops what it started
    rounds, backlogs = [], []
    for jobs in arguments.sizes:
        burst = run_round(
            f"burst of {jobs} jobs",
            arguments.nodes,
            functools.partial(measure, jobs=jobs, nodes=arguments.nodes, timeout=arguments.timeout),
        )
        backlog = run_round(
            f"backlog of {jobs} jobs",
            arguments.nodes,
            functools.partial(measure_backlog, jobs=jobs, timeout=arguments.timeout),
        )
        if burst is None or backlog is None:
            return 1
        rounds.append(burst)
        backlogs.append(backlog)
    report(rounds, backlogs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
