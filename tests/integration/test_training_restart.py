"""A TrainingJob survives its operator: `kiln run` stopped mid-job and started again picks the job
up from its status, with the same worker pods and none added."""

from __future__ import annotations

import pytest
from kiln_cluster import cluster_with_crds, running_operator
from test_training import pods_of, python_job, wait_for_phase


def test_operator_restart_mid_job_continues_without_duplicate_pods(tmp_path_factory: pytest.TempPathFactory) -> None:
    with cluster_with_crds(tmp_path_factory.mktemp("restart")) as kiln:
        kiln.kubectl("create", "namespace", "train")
        with running_operator(kiln):
            kiln.apply("train", python_job("steady", "import time; time.sleep(10)", workers=3))
            wait_for_phase(kiln, "train", "steady", "Running")
            before = {pod.metadata.name: pod.metadata.uid for pod in pods_of(kiln, "train", "steady")}
        assert len(before) == 3
        with running_operator(kiln):
            resumed = wait_for_phase(kiln, "train", "steady", "Running")
            assert {pod.metadata.name: pod.metadata.uid for pod in pods_of(kiln, "train", "steady")} == before
            status = wait_for_phase(kiln, "train", "steady", "Succeeded")
        assert {pod.metadata.name: pod.metadata.uid for pod in pods_of(kiln, "train", "steady")} == before
        assert resumed["startTime"] == status["startTime"]
        assert status["restarts"] == 0
        events = [event[1] for event in kiln.events("train", "steady")]
        assert events.count("Admitted") == 1, events
        kiln.assert_no_traceback()
