"""examples/kfp-pipeline run end to end with kfp.local (SubprocessRunner) against the dev cluster,
as its README says: given the example's ModelDeployment iris-kfp Healthy on 5.0.0 (trained from the
spec the pipeline trains from), the pipeline validates the dataset, trains 5.1.0, waits for its
gates and rolls it out by canary; the deployment ends Healthy on 5.1.0."""

from __future__ import annotations

import pathlib
import re
import sys

from kiln_cluster import REPO
from rollout_world import World

EXAMPLE = REPO / "examples" / "kfp-pipeline"
PIPELINE = EXAMPLE / "pipeline.py"


def strip_colours(text: str) -> str:
    """kfp.local's log with its ANSI colour codes taken out."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_the_pipeline_trains_gates_and_rolls_out_a_new_version(
    world: World, namespace: str, tmp_path: pathlib.Path
) -> None:
    kubectl = world.kiln.kubectl
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLE / "versions" / "iris-5.0.0.yaml"))
    kubectl("wait", "-n", namespace, "--for=condition=Succeeded", "tj/iris-5-0-0", "--timeout=180s", timeout=200)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "mv/iris-5.0.0", "--timeout=60s", timeout=80)
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "md/iris-kfp", "--timeout=180s", timeout=200)

    ran = world.kiln.run(
        sys.executable,
        str(PIPELINE),
        "--local",
        "--namespace",
        namespace,
        "--version",
        "5.1.0",
        "--pipeline-root",
        str(tmp_path),
        timeout=600,
    )

    assert ran.stdout.strip().splitlines()[-1] == "md/iris-kfp: Healthy", ran.stdout + ran.stderr
    job = world.custom(namespace, "trainingjobs", "iris-5-1-0")
    version = world.custom(namespace, "modelversions", "iris-5.1.0")
    status = world.status(namespace, "iris-kfp")
    assert (job["status"]["phase"], job["status"]["modelVersion"]) == ("Succeeded", "iris-5.1.0")
    assert version["status"]["phase"] == "Validated"
    assert (status["phase"], status["stableVersion"]) == ("Healthy", "5.1.0")
    assert [(h["version"], h["outcome"]) for h in status["history"]] == [("5.0.0", "Deployed"), ("5.1.0", "Promoted")]
    for task in ("validate-dataset", "submit-training-job", "gate-model-version", "roll-out-model-deployment"):
        assert f"Task '{task}' finished with status SUCCESS" in strip_colours(ran.stdout + ran.stderr)
