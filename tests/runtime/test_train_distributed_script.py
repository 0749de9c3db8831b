"""examples/train-distributed/train.py run for real: four local processes as four ranks, with the
environment Kiln gives each worker pod, rendezvous over loopback and a gloo process group.

torch is an optional extra that `make test` installs; without it these tests fail and say so,
since the example they cover would be untested.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from polling import eventually

from kiln.api import trainingjob

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "train-distributed"
SCRIPT = EXAMPLE / "train.py"
WORLD_SIZE = 4
RUN_TIMEOUT = 120.0
EPOCH_LINE = re.compile(r"^epoch (\d+) loss (\S+)$", re.MULTILINE)


@pytest.fixture(scope="module", autouse=True)
def torch_installed() -> None:
    if importlib.util.find_spec("torch") is None:
        pytest.fail("torch is not installed: `make test` installs it, or run pip install -e '.[torch]'")


@dataclasses.dataclass
class Rank:
    returncode: int
    stdout: str
    stderr: str


@dataclasses.dataclass
class Run:
    ranks: list[Rank]
    checkpoint_dir: pathlib.Path
    result_file: pathlib.Path

    def losses(self) -> dict[int, float]:
        """Rank 0's `epoch N loss X` lines."""
        return {int(epoch): float(loss) for epoch, loss in EPOCH_LINE.findall(self.ranks[0].stdout)}

    def checkpoint(self) -> dict[str, Any]:
        import torch

        state: dict[str, Any] = torch.load(self.checkpoint_dir / "checkpoint.pt", weights_only=True)
        return state


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


Started = list[tuple["subprocess.Popen[bytes]", pathlib.Path]]
"""Each rank's process and its stdout file."""


def run_ranks(
    work: pathlib.Path, *args: str, ranks: int = WORLD_SIZE, meanwhile: Callable[[Started], None] | None = None
) -> Run:
    """Start `ranks` of the WORLD_SIZE ranks, as Kiln's worker pods would, and wait for all of them;
    `meanwhile` is given them as soon as they started."""
    work.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = work / "checkpoints"
    checkpoint_dir.mkdir(exist_ok=True)
    result_file = work / "result.json"
    shared = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(WORLD_SIZE),
        "KILN_CHECKPOINT_DIR": str(checkpoint_dir),
        "KILN_RESULT_FILE": str(result_file),
        "KILN_TRAINING_JOB": "train-distributed",
    }
    processes: list[tuple[subprocess.Popen[bytes], pathlib.Path, pathlib.Path]] = []
    try:
        for rank in range(ranks):
            out, err = work / f"rank-{rank}.out", work / f"rank-{rank}.err"
            env = {**shared, "RANK": str(rank), "LOCAL_RANK": "0", "NODE_RANK": str(rank)}
            with out.open("wb") as stdout, err.open("wb") as stderr:
                processes.append(
                    (
                        subprocess.Popen([sys.executable, str(SCRIPT), *args], env=env, stdout=stdout, stderr=stderr),
                        out,
                        err,
                    )
                )
        if meanwhile is not None:
            meanwhile([(process, out) for process, out, _ in processes])
        deadline = time.monotonic() + RUN_TIMEOUT
        for process, _, _ in processes:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for process, _, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return Run(
        [Rank(process.returncode, out.read_text(), err.read_text()) for process, out, err in processes],
        checkpoint_dir,
        result_file,
    )


def assert_all_succeeded(run: Run) -> None:
    failed = {rank: state.stderr[-2000:] for rank, state in enumerate(run.ranks) if state.returncode != 0}
    assert failed == {}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Four epochs in one go: what a resumed run must reproduce."""
    run = run_ranks(tmp_path_factory.mktemp("uninterrupted"), "--epochs", "4")
    assert_all_succeeded(run)
    return run


def test_four_ranks_train_and_rank_0_reports_every_epoch(uninterrupted: Run) -> None:
    assert [rank.stdout.splitlines()[0] for rank in uninterrupted.ranks] == ["starting at epoch 0"] * WORLD_SIZE
    losses = uninterrupted.losses()
    assert sorted(losses) == [0, 1, 2, 3]
    assert losses[3] < losses[0] / 10, losses
    assert [EPOCH_LINE.findall(rank.stdout) for rank in uninterrupted.ranks[1:]] == [[]] * (WORLD_SIZE - 1)


def test_rank_0_writes_a_training_result_with_the_final_loss(uninterrupted: Run) -> None:
    result = trainingjob.TrainingResult.model_validate_json(uninterrupted.result_file.read_text())
    assert result.metrics["epochs"] == 4.0
    assert result.metrics["loss"] == pytest.approx(uninterrupted.losses()[3], abs=1e-6)


def test_the_checkpoint_holds_the_last_epoch_with_model_and_optimizer_state(uninterrupted: Run) -> None:
    state = uninterrupted.checkpoint()
    assert state["epoch"] == 3
    assert state["loss"] == pytest.approx(uninterrupted.losses()[3], abs=1e-6)
    assert set(state["model"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    # SGD with momentum keeps one buffer per parameter; resuming without them would change the run.
    assert len(state["optimizer"]["state"]) == 4
    assert not list(uninterrupted.checkpoint_dir.glob("*.tmp"))


def test_a_second_run_resumes_every_rank_after_the_last_checkpoint(tmp_path: pathlib.Path, uninterrupted: Run) -> None:
    first = run_ranks(tmp_path, "--epochs", "2")
    assert_all_succeeded(first)
    assert first.checkpoint()["epoch"] == 1

    second = run_ranks(tmp_path, "--epochs", "4")

    assert_all_succeeded(second)
    assert [rank.stdout.splitlines()[0] for rank in second.ranks] == ["resumed at epoch 2"] * WORLD_SIZE
    assert sorted(second.losses()) == [2, 3]
    # Model, optimizer and sampler state all carried over: the same losses as never stopping.
    assert second.losses() == pytest.approx({2: uninterrupted.losses()[2], 3: uninterrupted.losses()[3]}, rel=1e-4)
    assert second.checkpoint()["epoch"] == 3
    assert trainingjob.TrainingResult.model_validate_json(second.result_file.read_text()).metrics["epochs"] == 4.0


def test_sigterm_saves_the_last_completed_epoch_which_the_next_run_resumes_after(tmp_path: pathlib.Path) -> None:
    def terminate_after_two_epochs(started: Started) -> None:
        rank0 = started[0][1]
        eventually(lambda: "epoch 1 loss" in rank0.read_text(), "rank 0 to finish epoch 1", RUN_TIMEOUT)
        for process, _ in started:  # as the kubelet stops every worker of a preempted gang
            process.send_signal(signal.SIGTERM)

    # Never checkpointed by schedule: what is saved, SIGTERM saved.
    stopped = run_ranks(
        tmp_path,
        "--epochs",
        "200",
        "--epoch-seconds",
        "0.2",
        "--checkpoint-every",
        "1000",
        meanwhile=terminate_after_two_epochs,
    )

    assert stopped.ranks[0].returncode == 143, stopped.ranks[0].stderr[-2000:]
    saved = re.search(r"^stopping: epoch (\d+) is checkpointed$", stopped.ranks[0].stdout, re.MULTILINE)
    assert saved is not None, stopped.ranks[0].stdout
    epoch = int(saved.group(1))
    assert epoch >= 1
    assert stopped.checkpoint()["epoch"] == epoch
    assert not list(stopped.checkpoint_dir.glob("*.tmp"))

    resumed = run_ranks(tmp_path, "--epochs", str(epoch + 2))
    assert_all_succeeded(resumed)
    assert [rank.stdout.splitlines()[0] for rank in resumed.ranks] == [f"resumed at epoch {epoch + 1}"] * WORLD_SIZE


def test_a_missing_peer_fails_every_rank_within_the_rendezvous_timeout(tmp_path: pathlib.Path) -> None:
    run = run_ranks(tmp_path, "--epochs", "1", "--timeout-seconds", "3", ranks=WORLD_SIZE - 1)

    assert all(rank.returncode != 0 for rank in run.ranks), run.ranks
    assert "DistStoreError" in run.ranks[0].stderr
    assert not run.result_file.exists()
    assert not (run.checkpoint_dir / "checkpoint.pt").exists()


def test_without_the_rendezvous_environment_the_script_exits_with_a_clear_message() -> None:
    env = {name: value for name, value in os.environ.items() if name not in ("MASTER_ADDR", "MASTER_PORT", "RANK")}
    env["WORLD_SIZE"] = "4"

    done = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )

    assert done.returncode == 2
    assert done.stderr.strip() == "train.py: MASTER_ADDR, MASTER_PORT, RANK not set; Kiln sets them in every worker pod"


def test_the_example_manifest_carries_the_same_script_in_its_configmap() -> None:
    documents = list(yaml.safe_load_all((EXAMPLE / "trainingjob.yaml").read_text()))
    (configmap,) = [doc for doc in documents if doc["kind"] == "ConfigMap"]
    assert configmap["data"]["train.py"] == SCRIPT.read_text(), (
        "examples/train-distributed/trainingjob.yaml is stale: paste train.py into its ConfigMap "
        "(kubectl create configmap train-distributed-script --from-file=train.py --dry-run=client -o yaml)"
    )
