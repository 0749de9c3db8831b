"""TrainingJob with `kiln run` on a dev cluster of one CPU node and two 4-GPU nodes: gang admission,
GPU placement, gang restarts from a checkpoint, back-off limits, suspend and operator restarts.

Workers are real processes (`python -c ...`): the dev cluster's kubelet runs them whatever GPUs they
request, so the scheduler's GPU accounting and the processes' exits are both real.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kiln_cluster import Kiln, operated_cluster
from polling import eventually

from kiln.devcluster import config

GPU_PRODUCT = "NVIDIA-A100-SXM4-80GB"
TIMEOUT = 60.0
GROUP, VERSION, PLURAL = "kiln.dev", "v1alpha1", "trainingjobs"

# Each epoch: read the checkpoint, sleep, write the next epoch. Prints where it started, so a test
# can tell a resumed worker from a fresh one.
# Rank 0 checkpoints after every epoch, as a real trainer must: to a temporary file renamed into
# place, so a gang stopped mid-write (a restart, a resize) never resumes from a torn checkpoint.
EPOCHS_SCRIPT = """
import os, pathlib, sys, time
epochs, seconds = int(sys.argv[1]), float(sys.argv[2])
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
checkpoint = pathlib.Path(os.environ["KILN_CHECKPOINT_DIR"]) / "epoch"
start = int(checkpoint.read_text()) if checkpoint.exists() else 0
print(f"rank {rank} of {world} starting at epoch {start}", flush=True)
for epoch in range(start, epochs):
    time.sleep(seconds)
    if rank == 0:
        checkpoint.with_suffix(".tmp").write_text(str(epoch + 1))
        checkpoint.with_suffix(".tmp").replace(checkpoint)
    print(f"rank {rank} finished epoch {epoch + 1}", flush=True)
"""


@pytest.fixture(scope="module")
def kiln(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiln]:
    nodes = (
        config.NodePool(name="cpu", count=1, cpu="8", memory="32Gi"),
        config.NodePool(
            name="gpu",
            count=2,
            cpu="32",
            memory="128Gi",
            gpus=4,
            gpu_product=GPU_PRODUCT,
            taints=(config.Taint(key="nvidia.com/gpu", effect="NoSchedule"),),
        ),
    )
    settings = config.ClusterConfig(node_pools=nodes)
    with operated_cluster(tmp_path_factory.mktemp("training"), settings, KILN_TRAINING_BACKOFF_SECONDS="0.5") as setup:
        yield setup


def python_job(name: str, code: str, *args: str, **spec: Any) -> dict[str, Any]:
    """A TrainingJob whose workers run `python -c code args...`."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {"container": {"image": "python:3.11", "command": ["python", "-c", code, *args]}, **spec},
    }


def job(kiln: Kiln, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = kiln.api().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return result


def wait_for_phase(kiln: Kiln, namespace: str, name: str, phase: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        last.update(job(kiln, namespace, name))
        status = last.get("status") or {}
        return status if status.get("phase") == phase else None

    try:
        result: dict[str, Any] = eventually(reached, f"tj/{name} to be {phase}", timeout)
    except AssertionError as timed_out:
        # What a failure on a loaded machine needs to be told apart: where the job stopped, and its pods.
        pods = [
            (pod.metadata.name, pod.status.phase, pod.metadata.deletion_timestamp)
            for pod in pods_of(kiln, namespace, name)
        ]
        status = {key: value for key, value in (last.get("status") or {}).items() if key != "conditions"}
        complaints = [
            line
            for line in kiln.operator_log.read_text(errors="replace").splitlines()
            if namespace in line and ("[WARNING" in line or "[ERROR" in line)
        ]
        raise AssertionError(
            f"{timed_out}: generation {last.get('metadata', {}).get('generation')}, spec {last.get('spec')},"
            f" status {status}, pods {pods};"
            f" the operator's last warnings about the namespace: {complaints[-5:]}; see {kiln.operator_log}"
        ) from None
    return result


def pods_of(kiln: Kiln, namespace: str, name: str) -> list[Any]:
    pods = kiln.core().list_namespaced_pod(namespace, label_selector=f"kiln.dev/trainingjob={name}").items
    return sorted(pods, key=lambda pod: pod.metadata.name)


def test_gpu_workers_get_devices_selector_and_toleration_and_cpu_jobs_stay_off_gpu_nodes(
    kiln: Kiln, namespace: str
) -> None:
    gpu = python_job(
        "gpu", "import time; time.sleep(30)", resources={"cpu": "1", "gpus": {"count": 2, "product": GPU_PRODUCT}}
    )
    cpu = python_job("cpu", "import time; time.sleep(30)", resources={"cpu": "1"})
    kiln.apply(namespace, gpu)
    kiln.apply(namespace, cpu)
    wait_for_phase(kiln, namespace, "gpu", "Running")
    wait_for_phase(kiln, namespace, "cpu", "Running")

    [gpu_pod] = pods_of(kiln, namespace, "gpu")
    container = gpu_pod.spec.containers[0]
    assert container.resources.requests["nvidia.com/gpu"] == "2"
    assert container.resources.limits["nvidia.com/gpu"] == "2"
    assert gpu_pod.spec.node_selector == {"nvidia.com/gpu.product": GPU_PRODUCT}
    assert any(t.key == "nvidia.com/gpu" and t.operator == "Exists" for t in gpu_pod.spec.tolerations)
    assert gpu_pod.spec.node_name.startswith("gpu")
    assert "CUDA_VISIBLE_DEVICES" not in {env.name for env in container.env}

    [cpu_pod] = pods_of(kiln, namespace, "cpu")
    assert cpu_pod.spec.node_name.startswith("cpu"), cpu_pod.spec.node_name
    assert not cpu_pod.spec.tolerations or all(t.key != "nvidia.com/gpu" for t in cpu_pod.spec.tolerations)


def test_second_gang_waits_queued_without_pods_and_is_admitted_when_the_first_finishes(
    kiln: Kiln, namespace: str
) -> None:
    spec = {"workers": 2, "resources": {"cpu": "1", "gpus": {"count": 4, "product": GPU_PRODUCT}}}
    kiln.apply(namespace, python_job("first", "import time; time.sleep(6)", **spec))
    wait_for_phase(kiln, namespace, "first", "Running")
    kiln.apply(namespace, python_job("second", "import time; time.sleep(1)", **spec))

    queued = wait_for_phase(kiln, namespace, "second", "Queued")
    assert "nvidia.com/gpu" in queued["message"], queued["message"]
    assert pods_of(kiln, namespace, "second") == []
    assert [pod.status.phase for pod in pods_of(kiln, namespace, "first")] == ["Running", "Running"]

    wait_for_phase(kiln, namespace, "first", "Succeeded")
    wait_for_phase(kiln, namespace, "second", "Succeeded")
    posted = kiln.wait_for_events(
        namespace, "second", ("Normal", "Queued"), ("Normal", "Admitted"), ("Normal", "Succeeded")
    )
    reasons = [event[1] for event in posted]
    assert reasons.index("Queued") < reasons.index("Admitted") < reasons.index("Succeeded"), reasons


def test_a_resource_quota_holds_a_gang_whole_until_another_job_frees_quota(kiln: Kiln, namespace: str) -> None:
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpus"}}
    kiln.apply(namespace, {**quota, "spec": {"hard": {"requests.nvidia.com/gpu": "4"}}})
    two_gpus = {"cpu": "1", "gpus": {"count": 2}}
    kiln.apply(namespace, python_job("first", "import time; time.sleep(6)", resources=two_gpus))
    wait_for_phase(kiln, namespace, "first", "Running")

    kiln.apply(namespace, python_job("second", "import time; time.sleep(1)", workers=2, resources=two_gpus))

    queued = wait_for_phase(kiln, namespace, "second", "Queued")
    assert queued["message"] == f"quota: the job needs 4 nvidia.com/gpu, 2 of 4 left in namespace {namespace}"
    assert pods_of(kiln, namespace, "second") == []  # the cluster has the GPUs: only the quota holds it
    wait_for_phase(kiln, namespace, "first", "Succeeded")
    wait_for_phase(kiln, namespace, "second", "Succeeded")


# Counts epochs and checkpoints only when told to stop (SIGTERM, through kiln.runtime.preemption), so a
# job that resumes past epoch 0 proves the checkpoint was written on preemption; beside it, whether the
# handshake said the SIGTERM was a preemption (KILN_PREEMPTED).
CHECKPOINT_ON_SIGTERM_SCRIPT = """
import os, pathlib, sys, time
from kiln.runtime import preemption
epochs, seconds = int(sys.argv[1]), float(sys.argv[2])
checkpoint = pathlib.Path(os.environ["KILN_CHECKPOINT_DIR"]) / "epoch"
epoch = int(checkpoint.read_text()) if checkpoint.exists() else 0
print(f"starting at epoch {epoch}", flush=True)

def save():
    checkpoint.write_text(str(epoch))
    checkpoint.with_name("preempted").write_text(os.environ.get("KILN_PREEMPTED", "unset"))
    print(f"checkpointed epoch {epoch}", flush=True)

preemption.on_sigterm(save)
while epoch < epochs:
    time.sleep(seconds)
    epoch += 1
    print(f"finished epoch {epoch}", flush=True)
"""


def gpus_in_use(kiln: Kiln) -> int:
    """GPUs that running pods of any namespace hold: this test needs to know where every GPU goes."""
    return sum(
        int((container.resources.limits or {}).get("nvidia.com/gpu", 0))
        for pod in kiln.core().list_pod_for_all_namespaces().items
        if pod.status.phase in ("Pending", "Running")
        for container in pod.spec.containers
    )


def priority_classes(kiln: Kiln, namespace: str) -> tuple[str, str]:
    """A low and a high PriorityClass of the test's own (they are cluster-scoped)."""
    low, high = f"{namespace}-low", f"{namespace}-high"
    for name, value in ((low, 10), (high, 1000)):
        kiln.kubectl("create", "priorityclass", name, f"--value={value}")
    return low, high


def test_a_high_priority_job_preempts_the_one_lower_job_that_frees_enough_which_resumes_from_its_checkpoint(
    kiln: Kiln, namespace: str
) -> None:
    low, high = priority_classes(kiln, namespace)
    gpus = {"cpu": "500m", "gpus": {"count": 4}}
    eventually(lambda: gpus_in_use(kiln) == 0, "the other tests' GPU jobs to finish", TIMEOUT)
    kiln.apply(
        namespace,
        python_job(
            "big",
            CHECKPOINT_ON_SIGTERM_SCRIPT,
            "30",
            "0.5",
            resources=gpus,
            checkpoint={"size": "1Gi"},
            priorityClassName=low,
        ),
    )
    wait_for_phase(kiln, namespace, "big", "Running")
    sleep = "import time; time.sleep(600)"
    kiln.apply(namespace, python_job("keeper", sleep, resources={**gpus, "gpus": {"count": 2}}, priorityClassName=high))
    wait_for_phase(kiln, namespace, "keeper", "Running")
    kiln.apply(namespace, python_job("small", sleep, resources={**gpus, "gpus": {"count": 1}}, priorityClassName=low))
    wait_for_phase(kiln, namespace, "small", "Running")
    eventually(lambda: "finished epoch 2" in logs_of(kiln, namespace, "big-worker-0"), "big to run 2 epochs", TIMEOUT)

    # Freeing small's 1 GPU leaves no node with 4: only big frees enough.
    kiln.apply(namespace, python_job("urgent", "import time; time.sleep(10)", resources=gpus, priorityClassName=high))

    preempted = wait_for_phase(kiln, namespace, "big", "Queued")
    assert (preempted["preemptions"], preempted["preemptedBy"]) == (1, f"{namespace}/urgent")
    told = kiln.pvc_root / namespace / "big-checkpoint" / "preempted"
    assert eventually(lambda: told.exists() and told.read_text(), "big's worker to checkpoint", TIMEOUT) == "1"
    wait_for_phase(kiln, namespace, "urgent", "Running")
    making_room = (
        f"preempting {namespace}/big (lower priority than 1000) to make room: waiting for their workers to"
        " checkpoint and stop"
    )
    kiln.wait_for_events(namespace, "urgent", ("Normal", "Preempting", making_room))
    told = (
        f"preempted by {namespace}/urgent: the workers were told to checkpoint and stop; queued to resume from"
        " the checkpoint when admitted again"
    )
    kiln.wait_for_events(namespace, "big", ("Normal", "Preempted", told))
    # While urgent runs, a job of its own priority finds only small below it, too small: it never
    # preempts urgent or keeper, and waits.
    kiln.apply(namespace, python_job("rival", "import time; time.sleep(1)", resources=gpus, priorityClassName=high))
    rival = wait_for_phase(kiln, namespace, "rival", "Queued")
    assert rival["message"].startswith("waiting for capacity: "), rival["message"]
    assert (job(kiln, namespace, "urgent").get("status") or {})["phase"] == "Running"

    wait_for_phase(kiln, namespace, "rival", "Succeeded", timeout=2 * TIMEOUT)
    wait_for_phase(kiln, namespace, "big", "Running")
    resumed = eventually(
        lambda: re.search(r"starting at epoch (\d+)", logs_of(kiln, namespace, "big-worker-0")),
        "big's worker to start again",
        TIMEOUT,
    )
    assert int(resumed.group(1)) >= 2
    status = wait_for_phase(kiln, namespace, "big", "Succeeded", timeout=2 * TIMEOUT)
    assert (status["restarts"], status["preemptions"]) == (0, 1)
    assert "finished epoch 30" in logs_of(kiln, namespace, "big-worker-0")
    for name in ("keeper", "small", "rival"):
        assert (job(kiln, namespace, name).get("status") or {}).get("preemptions", 0) == 0, name
    kiln.kubectl("delete", "-n", namespace, "trainingjob", "keeper", "small")  # their GPUs for the next tests
    eventually(
        lambda: not pods_of(kiln, namespace, "keeper") and not pods_of(kiln, namespace, "small"),
        "no pods left",
        TIMEOUT,
    )


def test_kueue_workers_wait_gated_as_one_pod_group_until_kueue_lifts_the_gates(kiln: Kiln, namespace: str) -> None:
    kueue = {"scheduler": "kueue", "queueName": "team-a"}
    kiln.apply(namespace, python_job("queued", "import time; time.sleep(1)", workers=2, gangScheduling=kueue))
    eventually(lambda: len(pods_of(kiln, namespace, "queued")) == 2, "both workers, gated", TIMEOUT)

    pods = pods_of(kiln, namespace, "queued")
    assert {pod.metadata.labels["kueue.x-k8s.io/pod-group-name"] for pod in pods} == {"queued-0"}
    assert {pod.metadata.labels["kueue.x-k8s.io/queue-name"] for pod in pods} == {"team-a"}
    assert {pod.metadata.annotations["kueue.x-k8s.io/pod-group-total-count"] for pod in pods} == {"2"}
    assert all(pod.spec.node_name is None for pod in pods)  # no scheduler binds a gated pod
    assert [[gate.name for gate in pod.spec.scheduling_gates] for pod in pods] == [["kueue.x-k8s.io/admission"]] * 2
    wait_for_phase(kiln, namespace, "queued", "Admitted")  # the pods are created before the status is written

    for pod in pods:  # what Kueue does when its ClusterQueue admits the group
        kiln.kubectl(
            "patch", "pod", "-n", namespace, pod.metadata.name, "--type=json",
            "-p", '[{"op": "remove", "path": "/spec/schedulingGates"}]',
        )  # fmt: skip
    wait_for_phase(kiln, namespace, "queued", "Succeeded")


def test_an_elastic_job_starts_with_what_fits_and_grows_to_its_maximum_from_its_checkpoint(
    kiln: Kiln, namespace: str
) -> None:
    eventually(lambda: gpus_in_use(kiln) == 0, "the other tests' GPU jobs to finish", TIMEOUT)
    three_gpus = {"cpu": "500m", "gpus": {"count": 3}}
    kiln.apply(namespace, python_job("blocker", "import time; time.sleep(8)", workers=2, resources=three_gpus))
    wait_for_phase(kiln, namespace, "blocker", "Running")
    kiln.apply(namespace, elastic_job("flex"))

    started = wait_for_phase(kiln, namespace, "flex", "Running")
    assert (started["worldSize"], started["workers"]["desired"], len(pods_of(kiln, namespace, "flex"))) == (2, 4, 2)
    admitted = "admitted by the builtin gang scheduler: 2 of 4 workers fit the free capacity (elastic, at least 2)"
    kiln.wait_for_events(namespace, "flex", ("Normal", "Admitted", admitted))
    wait_for_phase(kiln, namespace, "blocker", "Succeeded")

    status = running_with(kiln, namespace, "flex", 4)
    assert (status["resizes"], status["restarts"]) == (1, 0)
    pods = pods_of(kiln, namespace, "flex")
    assert [pod.metadata.labels["kiln.dev/attempt"] for pod in pods] == ["1"] * 4
    resumed = eventually(
        lambda: re.search(r"rank 0 of 4 starting at epoch (\d+)", logs_of(kiln, namespace, "flex-worker-0")),
        "rank 0 to start again with 4 workers",
        TIMEOUT,
    )
    assert int(resumed.group(1)) >= 1  # the epoch continues from the checkpoint
    kiln.wait_for_events(namespace, "flex", ("Normal", "Resizing"))
    wait_for_phase(kiln, namespace, "flex", "Succeeded", timeout=2 * TIMEOUT)


def elastic_job(name: str, **spec: Any) -> dict[str, Any]:
    """2 to 4 workers of 1 GPU that checkpoint every epoch, growing as soon as capacity frees."""
    elastic = {"minWorkers": 2, "maxWorkers": 4, "scaleUpCooldownSeconds": 0}
    resources = {"cpu": "500m", "gpus": {"count": 1}}
    return python_job(
        name,
        EPOCHS_SCRIPT,
        "40",
        "0.5",
        workers=2,
        elastic=elastic,
        resources=resources,
        checkpoint={"size": "1Gi"},
        **spec,
    )


def running_with(kiln: Kiln, namespace: str, name: str, world: int) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = job(kiln, namespace, name).get("status") or {}
        return status if status.get("worldSize") == world and status.get("phase") == "Running" else None

    result: dict[str, Any] = eventually(reached, f"tj/{name} to run with {world} workers", TIMEOUT)
    return result


def test_a_high_priority_job_shrinks_a_lower_elastic_one_which_resumes_smaller_and_grows_back_after(
    kiln: Kiln, namespace: str
) -> None:
    low, high = priority_classes(kiln, namespace)
    eventually(lambda: gpus_in_use(kiln) == 0, "the other tests' GPU jobs to finish", TIMEOUT)
    keeper = python_job("keeper", "import time; time.sleep(600)", resources={"cpu": "500m", "gpus": {"count": 4}})
    kiln.apply(namespace, {**keeper, "spec": {**keeper["spec"], "priorityClassName": high}})
    wait_for_phase(kiln, namespace, "keeper", "Running")
    kiln.apply(namespace, elastic_job("flex", priorityClassName=low))
    running_with(kiln, namespace, "flex", 4)
    eventually(lambda: "finished epoch 2" in logs_of(kiln, namespace, "flex-worker-0"), "flex to run 2 epochs", TIMEOUT)

    urgent = python_job("urgent", "import time; time.sleep(5)", resources={"cpu": "500m", "gpus": {"count": 2}})
    kiln.apply(namespace, {**urgent, "spec": {**urgent["spec"], "priorityClassName": high}})

    shrunk = running_with(kiln, namespace, "flex", 2)
    assert (shrunk["preemptions"], shrunk["preemptedBy"], shrunk["resizes"]) == (1, f"{namespace}/urgent", 1)
    wait_for_phase(kiln, namespace, "urgent", "Running")
    kiln.wait_for_events(
        namespace,
        "urgent",
        (
            "Normal",
            "Preempting",
            f"preempting {namespace}/flex down to 2 workers (lower priority than 1000) to make room: waiting for"
            " their workers to checkpoint and stop",
        ),
    )
    kiln.wait_for_events(
        namespace,
        "flex",
        (
            "Normal",
            "Resizing",
            f"shrinking from 4 to 2 workers to make room for {namespace}/urgent: the gang restarts from its"
            " checkpoint with WORLD_SIZE 2",
        ),
    )
    resumed = eventually(
        lambda: re.search(r"rank 0 of 2 starting at epoch (\d+)", logs_of(kiln, namespace, "flex-worker-0")),
        "rank 0 to start again with 2 workers",
        TIMEOUT,
    )
    assert int(resumed.group(1)) >= 2  # the epoch continues from the checkpoint

    wait_for_phase(kiln, namespace, "urgent", "Succeeded")
    assert running_with(kiln, namespace, "flex", 4)["resizes"] == 2
    kiln.kubectl("delete", "tj", "keeper", "flex", "-n", namespace)  # the GPUs go back to the next tests


# Rank 0 reports through kiln.runtime.progress, then tries to annotate another pod with its
# account's token, and waits for a file the test writes, so the job runs while progress is read.
PROGRESS_SCRIPT = """
import os, pathlib, sys, time
from kubernetes import client
from kiln.runtime import incluster, progress
with progress.Reporter() as reports:
    reports.report(150, 300, epoch=2, metrics={"loss": 0.42})
body = {"metadata": {"annotations": {"kiln.dev/progress": "{}"}}}
try:
    client.CoreV1Api(incluster.api_client()).patch_namespaced_pod("bystander", os.environ["KILN_NAMESPACE"], body)
    print("patched the bystander", flush=True)
except client.ApiException as error:
    print(f"patching the bystander: {error.status}", flush=True)
while not pathlib.Path(sys.argv[1]).exists():
    time.sleep(0.2)
"""


def test_rank_0_s_progress_annotation_shows_in_kubectl_get_and_reaches_100_percent(kiln: Kiln, namespace: str) -> None:
    kiln.kubectl("run", "bystander", "-n", namespace, "--image=registry.example/idle:1")
    done = kiln.pvc_root.parent / f"{namespace}-done"
    kiln.apply(namespace, python_job("steps", PROGRESS_SCRIPT, str(done)))
    wait_for_phase(kiln, namespace, "steps", "Running")

    def progress_column() -> str | None:
        header, row = kiln.kubectl("get", "tj", "steps", "-n", namespace).stdout.splitlines()[:2]
        start = header.index("PROGRESS")  # columns are aligned; an empty one is blank
        shown = row[start : header.index("ETA")].strip()
        return shown if shown not in ("", "<none>") else None

    assert eventually(progress_column, "PROGRESS in kubectl get tj", TIMEOUT) == "50"
    status = job(kiln, namespace, "steps")["status"]["progress"]
    assert (status["step"], status["epoch"], status["metrics"]) == (150, 2, {"loss": 0.42})
    # Its account may patch its own pod only: another pod of the namespace is refused.
    refused = eventually(
        lambda: "patching the bystander: 403" in logs_of(kiln, namespace, "steps-worker-0"), "the refusal", TIMEOUT
    )
    assert refused
    bystander = kiln.core().read_namespaced_pod("bystander", namespace)
    assert "kiln.dev/progress" not in (bystander.metadata.annotations or {})
    done.write_text("")
    finished = wait_for_phase(kiln, namespace, "steps", "Succeeded")
    assert finished["progress"]["percent"] == 100.0
    assert progress_column() == "100"


def test_two_jobs_needing_six_of_eight_gpus_never_deadlock(kiln: Kiln, namespace: str) -> None:
    spec = {"workers": 6, "resources": {"cpu": "500m", "gpus": {"count": 1}}}
    eventually(lambda: gpus_in_use(kiln) == 0, "the other tests' GPU jobs to finish", TIMEOUT)
    for name in ("left", "right"):
        kiln.apply(namespace, python_job(name, "import time; time.sleep(3)", **spec))
    # Both finish: one ran while the other waited with no worker holding a GPU.
    wait_for_phase(kiln, namespace, "left", "Succeeded")
    wait_for_phase(kiln, namespace, "right", "Succeeded")
    events = {name: [event[1] for event in kiln.events(namespace, name)] for name in ("left", "right")}
    assert any("Queued" in reasons for reasons in events.values()), events


def logs_of(kiln: Kiln, namespace: str, pod: str) -> str:
    """The pod's log so far; empty while the pod does not exist yet."""
    try:
        return str(kiln.core().read_namespaced_pod_log(pod, namespace))
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return ""
        raise


def worker_pid(kiln: Kiln, namespace: str, pod_name: str) -> int:
    pod = kiln.core().read_namespaced_pod(pod_name, namespace)
    [status] = pod.status.container_statuses
    container_id = (status.container_id or "") if status.state.running else ""
    assert container_id.startswith("kiln-process://"), container_id
    return int(container_id.removeprefix("kiln-process://"))


def test_a_killed_worker_restarts_the_gang_which_resumes_from_the_checkpoint(kiln: Kiln, namespace: str) -> None:
    spec = {"workers": 2, "checkpoint": {"size": "1Gi"}, "backoffLimit": 2}
    kiln.apply(namespace, python_job("resume", EPOCHS_SCRIPT, "6", "1", **spec))
    wait_for_phase(kiln, namespace, "resume", "Running")

    def reached_epoch_two() -> bool:
        return "finished epoch 2" in logs_of(kiln, namespace, "resume-worker-0")

    eventually(reached_epoch_two, "worker 0 to finish epoch 2", TIMEOUT)
    os.kill(worker_pid(kiln, namespace, "resume-worker-1"), signal.SIGKILL)

    def restarted() -> bool:
        pods = pods_of(kiln, namespace, "resume")
        return len(pods) == 2 and all(pod.metadata.labels["kiln.dev/attempt"] == "1" for pod in pods)

    eventually(restarted, "the gang to restart as attempt 1", TIMEOUT)
    status = wait_for_phase(kiln, namespace, "resume", "Succeeded")
    assert status["restarts"] == 1
    logs = kiln.core().read_namespaced_pod_log("resume-worker-0", namespace)
    started = int(re.search(r"starting at epoch (\d+)", logs).group(1))  # type: ignore[union-attr]
    assert started >= 2, logs
    assert "finished epoch 6" in logs
    reasons = [event[1] for event in kiln.events(namespace, "resume")]
    assert "Restarting" in reasons


def test_exceeding_the_backoff_limit_fails_with_the_reason_and_last_log_lines(kiln: Kiln, namespace: str) -> None:
    code = "import sys; print('loading shard 3'); print('CUDA error: out of memory', file=sys.stderr); sys.exit(3)"
    kiln.apply(namespace, python_job("doomed", code, workers=2, backoffLimit=1))
    status = wait_for_phase(kiln, namespace, "doomed", "Failed")
    assert status["restarts"] == 1
    message = status["message"]
    assert "exit code 3" in message, message
    assert "backoffLimit (1)" in message, message
    assert "CUDA error: out of memory" in message, message
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True"
    assert failed["reason"] == "BackoffLimitExceeded"


def test_suspend_deletes_workers_and_resume_starts_them_again(kiln: Kiln, namespace: str) -> None:
    kiln.apply(namespace, python_job("pausable", "import time; time.sleep(60)"))
    wait_for_phase(kiln, namespace, "pausable", "Running")
    kiln.kubectl("patch", "tj", "pausable", "-n", namespace, "--type", "merge", "-p", '{"spec":{"suspend":true}}')
    wait_for_phase(kiln, namespace, "pausable", "Suspended")
    eventually(lambda: pods_of(kiln, namespace, "pausable") == [], "the workers to be deleted", TIMEOUT)
    kiln.kubectl("patch", "tj", "pausable", "-n", namespace, "--type", "merge", "-p", '{"spec":{"suspend":false}}')
    status = wait_for_phase(kiln, namespace, "pausable", "Running")
    assert status["restarts"] == 0
    assert len(pods_of(kiln, namespace, "pausable")) == 1


@pytest.mark.parametrize(
    ("scheduler", "group_api", "plural"),
    [
        ("coscheduling", "scheduling.x-k8s.io/v1alpha1", "podgroups"),
        ("volcano", "scheduling.volcano.sh/v1beta1", "podgroups"),
    ],
)
def test_external_gang_schedulers_get_a_pod_group_with_min_member(
    kiln: Kiln, namespace: str, scheduler: str, group_api: str, plural: str
) -> None:
    spec = {"workers": 3, "elastic": {"minWorkers": 2, "maxWorkers": 3}, "gangScheduling": {"scheduler": scheduler}}
    kiln.apply(namespace, python_job("grouped", "import time; time.sleep(2)", **spec))
    wait_for_phase(kiln, namespace, "grouped", "Succeeded")
    group, version = group_api.split("/")
    pod_group = kiln.api().get_namespaced_custom_object(group, version, namespace, plural, "grouped")
    assert pod_group["spec"]["minMember"] == 2
    assert pod_group["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
    env = {e.name: e.value for e in pods_of(kiln, namespace, "grouped")[0].spec.containers[0].env}
    assert env["PET_NNODES"] == "2:3"


def test_ttl_after_finished_deletes_the_job_and_its_workers(kiln: Kiln, namespace: str) -> None:
    kiln.apply(namespace, python_job("brief", "print('done')", ttlSecondsAfterFinished=1))

    def gone() -> bool:
        names = [
            item["metadata"]["name"]
            for item in kiln.api().list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        ]
        return "brief" not in names and pods_of(kiln, namespace, "brief") == []

    eventually(gone, "the finished job and its pods to be deleted", TIMEOUT)
    kiln.wait_for_events(namespace, "brief", ("Normal", "Succeeded"))
    # The job is deleted orphaning what it owns (its ModelVersion outlives it): the workers' access goes too.
    access = kiln.kubectl("get", "serviceaccount,role,rolebinding", "-n", namespace, "-o", "name").stdout.split()
    assert [name for name in access if name.endswith("/brief-workers")] == []


def test_active_deadline_fails_a_job_that_runs_too_long(kiln: Kiln, namespace: str) -> None:
    kiln.apply(namespace, python_job("slow", "import time; time.sleep(60)", activeDeadlineSeconds=2))
    status = wait_for_phase(kiln, namespace, "slow", "Failed")
    assert "activeDeadlineSeconds (2s)" in status["message"]
    eventually(
        lambda: all(p.status.phase != "Running" for p in pods_of(kiln, namespace, "slow")) or None,
        "workers stopped",
        TIMEOUT,
    )


RESULT_SCRIPT = """
import hashlib, json, os, pathlib
data = b"weights of a model trained elsewhere"
(pathlib.Path(os.environ["KILN_CHECKPOINT_DIR"]) / "model.onnx").write_bytes(data)
artifact = {"uri": "pvc://own-checkpoint/model.onnx", "sha256": hashlib.sha256(data).hexdigest(), "format": "onnx"}
result = {"metrics": {"accuracy": 0.93}, "artifact": artifact, "framework": "onnx"}
pathlib.Path(os.environ["KILN_RESULT_FILE"]).write_text(json.dumps(result))
"""


def test_a_containers_result_file_registers_its_model_version(kiln: Kiln, namespace: str) -> None:
    output = {"modelName": "own", "version": "1.0.0", "gates": [{"metric": "accuracy", "min": 0.9}]}
    kiln.apply(namespace, python_job("own", RESULT_SCRIPT, checkpoint={"size": "1Gi"}, output=output))
    status = wait_for_phase(kiln, namespace, "own", "Succeeded")
    assert status["modelVersion"] == "own-1.0.0"
    assert status["metrics"] == {"accuracy": 0.93}

    kiln.wait_for_phase(namespace, "own-1.0.0", "Validated")
    registered = kiln.model_version(namespace, "own-1.0.0")
    data = b"weights of a model trained elsewhere"
    assert registered["spec"]["artifact"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert registered["spec"]["lineage"]["trainingJob"] == "own"
    assert registered["spec"]["gates"] == [{"metric": "accuracy", "min": 0.9, "higherIsBetter": True}]
    [owner] = registered["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("TrainingJob", "own")


def test_a_job_whose_output_has_no_artifact_fails_naming_the_result_file(kiln: Kiln, namespace: str) -> None:
    output = {"modelName": "empty", "version": "1.0.0"}
    kiln.apply(namespace, python_job("empty", "print('trained, but wrote nothing')", output=output))
    status = wait_for_phase(kiln, namespace, "empty", "Failed")
    assert "reported no artifact" in status["message"]
    assert "/var/run/kiln/output/result.json" in status["message"]
