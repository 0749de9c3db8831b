"""kiln.runtime.preemption in a real process: SIGTERM runs the checkpoint callback, with
KILN_PREEMPTED=1 when the pod's kiln.dev/preempted annotation (its downward API file) names who
preempted it, and the process exits 143; a failing checkpoint is logged and the process still exits."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from polling import eventually

from kiln.runtime import preemption

WORKER = """
import os, sys, time
from kiln.runtime import preemption

def checkpoint():
    print(f"checkpoint with KILN_PREEMPTED={os.environ.get('KILN_PREEMPTED')}", flush=True)
    if sys.argv[1] == "fails":
        raise OSError("disk full")

preemption.on_sigterm(checkpoint, say=lambda line: print(line, flush=True))
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""
TIMEOUT = 30.0


def stopped(tmp_path: pathlib.Path, annotation: str | None, checkpoint: str = "works") -> tuple[int, str]:
    """Start the worker, SIGTERM it once it is ready; its exit code and output."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("KILN_")}
    if annotation is not None:
        file = tmp_path / "podinfo" / "preempted"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(annotation)
        env["KILN_PREEMPTED_FILE"] = str(file)
    output = tmp_path / "worker.out"
    with output.open("wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER, checkpoint], env=env, stdout=stdout, stderr=subprocess.STDOUT
        )
    try:
        eventually(lambda: "ready" in output.read_text(), "the worker to install its handler", TIMEOUT)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, output.read_text()


def test_a_preempted_worker_checkpoints_with_kiln_preempted_set_and_exits_143(tmp_path: pathlib.Path) -> None:
    code, output = stopped(tmp_path, "ml/urgent")

    assert code == 143
    assert output.splitlines()[1:] == [
        "kiln: preempted by ml/urgent: checkpointing before the grace period ends",
        "checkpoint with KILN_PREEMPTED=1",
    ]


@pytest.mark.parametrize("annotation", [pytest.param("", id="annotation-unset"), pytest.param(None, id="no-file")])
def test_any_other_sigterm_checkpoints_too(tmp_path: pathlib.Path, annotation: str | None) -> None:
    code, output = stopped(tmp_path, annotation)

    assert code == 143
    assert output.splitlines()[1:] == [
        "kiln: told to stop (SIGTERM): checkpointing",
        "checkpoint with KILN_PREEMPTED=None",
    ]


def test_a_checkpoint_that_fails_is_logged_and_the_worker_still_exits(tmp_path: pathlib.Path) -> None:
    code, output = stopped(tmp_path, "ml/urgent", checkpoint="fails")

    assert code == 143
    assert output.splitlines()[-1] == "kiln: the checkpoint failed: OSError: disk full"


def test_the_api_server_is_asked_while_the_kubelet_has_not_refreshed_the_file(tmp_path: pathlib.Path) -> None:
    file = tmp_path / "preempted"
    file.write_text("")
    asked: list[float] = []

    def ask() -> str | None:
        asked.append(time.monotonic())
        return "ml/urgent"

    assert preemption.preempted_by({"KILN_PREEMPTED_FILE": str(file)}, ask) == "ml/urgent"
    file.write_text("ml/other\n")
    assert preemption.preempted_by({"KILN_PREEMPTED_FILE": str(file)}, ask) == "ml/other"
    assert len(asked) == 1  # the file said so: no request


def test_outside_a_kiln_pod_nobody_is_asked() -> None:
    assert preemption.ask_the_api_server({}) is None
    assert preemption.preempted_by({}, None) is None
