"""All of the registry's progress lives in status: an operator started later, or started again,
picks up where things stand and announces nothing twice."""

from __future__ import annotations

import json
import pathlib

from kiln_cluster import cluster_with_crds, model_version, running_operator


def test_a_restarted_operator_resumes_from_status_without_repeating_itself(tmp_path: pathlib.Path) -> None:
    with cluster_with_crds(tmp_path) as kiln:
        artifact = kiln.artifact("default", "models", "iris/model.skops", b"weights")
        gates = [{"metric": "accuracy", "min": 0.9}]
        kiln.apply("default", model_version("iris-1-0-0", "1.0.0", artifact, metrics={"accuracy": 0.93}, gates=gates))
        assert kiln.status("default", "iris-1-0-0") == {}, "nothing acts while no operator runs"

        with running_operator(kiln):
            kiln.wait_for_phase("default", "iris-1-0-0", "Validated")
            kiln.wait_for_events("default", "iris-1-0-0", ("Normal", "GatesPassed"))
        patch = {"spec": {"stage": "Staging"}}
        kiln.kubectl("patch", "mv", "iris-1-0-0", "--type", "merge", "-p", json.dumps(patch))
        with running_operator(kiln):
            status = kiln.wait_for_stage("default", "iris-1-0-0", "Staging")
            kiln.wait_for_events("default", "iris-1-0-0", ("Normal", "StageChanged"))

        assert status["phase"] == "Validated"
        assert [entry["toStage"] for entry in status["history"]] == ["Staging"]
        reasons = [reason for _, reason, _ in kiln.events("default", "iris-1-0-0")]
        assert sorted(reasons) == ["GatePassed", "GatesPassed", "StageChanged"]
        kiln.assert_no_traceback()
