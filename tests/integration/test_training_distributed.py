"""examples/train-distributed for real: four PyTorch DDP processes (gloo, on the CPU) admitted as
one gang rendezvous at rank 0's stable name, train, checkpoint, and the job succeeds; a worker
killed mid-training restarts the gang, which resumes from the checkpoint."""

from __future__ import annotations

import os
import pathlib
import re
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kiln_cluster import Kiln, operated_cluster
from polling import eventually
from test_training import job, logs_of, pods_of, wait_for_phase, worker_pid

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "train-distributed" / "trainingjob.yaml"
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def kiln(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiln]:
    with operated_cluster(tmp_path_factory.mktemp("distributed"), KILN_TRAINING_BACKOFF_SECONDS="0.5") as setup:
        yield setup


def example(name: str, port: int, args: list[str], **spec: Any) -> str:
    """The example's manifests, with its job renamed, its own MASTER_PORT and shorter training."""
    documents = list(yaml.safe_load_all(EXAMPLE.read_text()))
    training = next(doc for doc in documents if doc["kind"] == "TrainingJob")
    training["metadata"]["name"] = name
    container = training["spec"]["container"]
    container["args"] = args
    for variable in container["env"]:
        if variable["name"] == "MASTER_PORT":
            variable["value"] = str(port)
    training["spec"].update(spec)
    return yaml.safe_dump_all(documents)


def test_four_ddp_workers_rendezvous_as_one_gang_and_succeed(kiln: Kiln) -> None:
    kiln.kubectl("create", "namespace", "ddp")
    kiln.kubectl("apply", "-n", "ddp", "-f", "-", input=example("ddp", 29541, ["--epochs=3"]))
    status = wait_for_phase(kiln, "ddp", "ddp", "Succeeded", TIMEOUT)

    pods = pods_of(kiln, "ddp", "ddp")
    assert [pod.metadata.name for pod in pods] == [f"ddp-worker-{rank}" for rank in range(4)]
    created = [pod.metadata.creation_timestamp for pod in pods]
    assert (max(created) - min(created)).total_seconds() <= 1, created
    assert all(pod.metadata.labels["kiln.dev/attempt"] == "0" for pod in pods)
    rank0 = kiln.core().read_namespaced_pod_log("ddp-worker-0", "ddp")
    assert "starting at epoch 0" in rank0
    assert re.search(r"epoch 2 loss \d", rank0), rank0
    assert status["restarts"] == 0
    assert status["metrics"]["epochs"] == 3.0
    assert status["metrics"]["loss"] > 0
    # Rank 0 reported each epoch through kiln.runtime.progress: the last one is the 3rd of 3.
    progress = status["progress"]
    assert (progress["step"], progress["totalSteps"], progress["epoch"], progress["percent"]) == (3, 3, 2, 100.0)
    assert progress["metrics"]["loss"] == status["metrics"]["loss"]
    env = {e.name: e.value for e in pods[2].spec.containers[0].env}
    assert env["MASTER_ADDR"] == "ddp-worker-0.ddp"
    assert (env["WORLD_SIZE"], env["RANK"], env["NODE_RANK"], env["LOCAL_RANK"]) == ("4", "2", "2", "0")
    assert env["MASTER_PORT"] == "29541"
    posted = kiln.wait_for_events("ddp", "ddp", ("Normal", "Admitted"), ("Normal", "Running"), ("Normal", "Succeeded"))
    reasons = [event[1] for event in posted]
    assert reasons.index("Admitted") < reasons.index("Running") < reasons.index("Succeeded"), reasons


def test_a_killed_ddp_worker_restarts_the_gang_from_its_checkpoint(kiln: Kiln) -> None:
    kiln.kubectl("create", "namespace", "ddp-kill")
    manifests = example("kill", 29542, ["--epochs=8", "--epoch-seconds=1"], backoffLimit=2)
    kiln.kubectl("apply", "-n", "ddp-kill", "-f", "-", input=manifests)

    def checkpointed_epoch() -> int | None:
        found = re.findall(r"epoch (\d+) loss", logs_of(kiln, "ddp-kill", "kill-worker-0"))
        return int(found[-1]) if found and int(found[-1]) >= 2 else None

    killed_after = eventually(checkpointed_epoch, "rank 0 to checkpoint epoch 2", TIMEOUT)
    os.kill(worker_pid(kiln, "ddp-kill", "kill-worker-3"), signal.SIGKILL)

    def restarted() -> bool:
        pods = pods_of(kiln, "ddp-kill", "kill")
        return len(pods) == 4 and all(pod.metadata.labels["kiln.dev/attempt"] == "1" for pod in pods)

    eventually(restarted, "the gang to restart as attempt 1", TIMEOUT)
    status = wait_for_phase(kiln, "ddp-kill", "kill", "Succeeded", TIMEOUT)
    # The kill's restart, and at most the one more backoffLimit allows: on a loaded machine gloo can
    # abort a restarted worker whose peers are slow to rendezvous (exit code 134), and Kiln restarts
    # the gang again, as it should; either way the last attempt resumes from the checkpoint.
    assert status["restarts"] in (1, 2)
    logs = kiln.core().read_namespaced_pod_log("kill-worker-0", "ddp-kill")
    resumed = int(re.search(r"resumed at epoch (\d+)", logs).group(1))  # type: ignore[union-attr]
    assert resumed >= killed_after + 1, logs
    assert "epoch 7 loss" in logs
    assert job(kiln, "ddp-kill", "kill")["status"]["metrics"]["epochs"] == 8.0
