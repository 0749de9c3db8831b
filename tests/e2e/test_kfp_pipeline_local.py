"""examples/kfp-pipeline run end to end with kfp.local (SubprocessRunner) against the dev cluster:
given ModelDeployment iris Healthy on 1.0.0 (trained by kiln-trainer from the pipeline's own spec),
the pipeline validates the dataset, trains 1.1.0, waits for its gates and rolls it out by canary;
the deployment ends Healthy on 1.1.0."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
from typing import Any

from kiln_cluster import REPO
from rollout_world import World
from test_canary_rollout import canary, serving
from test_training import wait_for_phase

PIPELINE = REPO / "examples" / "kfp-pipeline" / "pipeline.py"


def pipeline_training_spec(version: str) -> dict[str, Any]:
    loaded = importlib.util.spec_from_file_location("kfp_pipeline_example", PIPELINE)
    assert loaded is not None
    assert loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    training: dict[str, Any] = module.TRAINING
    return {**training, "output": {**training["output"], "version": version}}


def strip_colours(text: str) -> str:
    """kfp.local's log with its ANSI colour codes taken out."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_the_pipeline_trains_gates_and_rolls_out_a_new_version(
    world: World, namespace: str, tmp_path: pathlib.Path
) -> None:
    first = {"apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "iris-1-0-0"}}
    world.kiln.apply(namespace, {**first, "spec": pipeline_training_spec("1.0.0")})
    wait_for_phase(world.kiln, namespace, "iris-1-0-0", "Succeeded")
    world.kiln.wait_for_phase(namespace, "iris-1.0.0", "Validated")
    serving(world, namespace, canary("1.0.0", [{"setWeight": 50}, {"setWeight": 100}]))

    ran = world.kiln.run(
        sys.executable,
        str(PIPELINE),
        "--local",
        "--namespace",
        namespace,
        "--version",
        "1.1.0",
        "--pipeline-root",
        str(tmp_path),
        timeout=600,
    )

    assert ran.stdout.strip().splitlines()[-1] == "md/iris: Healthy", ran.stdout + ran.stderr
    job = world.custom(namespace, "trainingjobs", "iris-1-1-0")
    version = world.custom(namespace, "modelversions", "iris-1.1.0")
    status = world.status(namespace)
    assert (job["status"]["phase"], job["status"]["modelVersion"]) == ("Succeeded", "iris-1.1.0")
    assert version["status"]["phase"] == "Validated"
    assert (status["phase"], status["stableVersion"]) == ("Healthy", "1.1.0")
    assert [(h["version"], h["outcome"]) for h in status["history"]] == [("1.0.0", "Deployed"), ("1.1.0", "Promoted")]
    for task in ("validate-dataset", "submit-training-job", "gate-model-version", "roll-out-model-deployment"):
        assert f"Task '{task}' finished with status SUCCESS" in strip_colours(ran.stdout + ran.stderr)
