"""examples/kfp-pipeline compiles to KFP IR: four Kiln components, run in order (validate, train,
gate, roll out), each fed the pipeline's parameters or the task before's output, in Kiln's image
with nothing to install, never served from KFP's cache."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType
from typing import Any

import pytest
import yaml

from kiln.kfp import components

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "kfp-pipeline" / "pipeline.py"
ORDER = ["validate-dataset", "submit-training-job", "gate-model-version", "roll-out-model-deployment"]


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kfp_pipeline_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    target = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    example().main([str(target)])
    documents = list(yaml.safe_load_all(target.read_text()))
    assert len(documents) == 1
    compiled: dict[str, Any] = documents[0]
    return compiled


def test_the_pipeline_has_the_four_kiln_components(ir: dict[str, Any]) -> None:
    assert ir["pipelineInfo"]["name"] == "kiln-train-gate-ship"
    assert sorted(ir["components"]) == sorted(f"comp-{name}" for name in ORDER)


def test_the_tasks_run_in_order_each_after_the_one_before(ir: dict[str, Any]) -> None:
    tasks = ir["root"]["dag"]["tasks"]

    after = {name: task.get("dependentTasks", []) for name, task in tasks.items()}

    assert after == {ORDER[0]: [], ORDER[1]: [ORDER[0]], ORDER[2]: [ORDER[1]], ORDER[3]: [ORDER[2]]}
    assert ir["root"]["dag"]["outputs"]["parameters"]["Output"]["valueFromParameter"]["producerSubtask"] == ORDER[3]


def test_each_task_takes_the_pipeline_parameters_or_the_output_before(ir: dict[str, Any]) -> None:
    tasks = ir["root"]["dag"]["tasks"]

    def source(task: str, parameter: str) -> str:
        value = tasks[task]["inputs"]["parameters"][parameter]
        if "componentInputParameter" in value:
            return f"pipeline.{value['componentInputParameter']}"
        return f"{value['taskOutputParameter']['producerTask']}.{value['taskOutputParameter']['outputParameterKey']}"

    assert {name: source(name, "namespace") for name in ORDER} == dict.fromkeys(ORDER, "pipeline.namespace")
    assert source("validate-dataset", "spec") == "pipeline.training"
    assert (source("submit-training-job", "spec"), source("submit-training-job", "name")) == (
        "pipeline.training",
        "pipeline.job_name",
    )
    assert source("gate-model-version", "name") == "submit-training-job.Output"
    assert source("roll-out-model-deployment", "version") == "gate-model-version.Output"
    assert source("roll-out-model-deployment", "name") == "pipeline.deployment"


def test_the_parameters_and_their_types(ir: dict[str, Any]) -> None:
    parameters = ir["root"]["inputDefinitions"]["parameters"]
    rollout = ir["components"]["comp-roll-out-model-deployment"]["inputDefinitions"]["parameters"]

    assert {name: p["parameterType"] for name, p in parameters.items()} == {
        "namespace": "STRING",
        "job_name": "STRING",
        "training": "STRUCT",
        "deployment": "STRING",
    }
    assert parameters["training"]["defaultValue"]["output"] == {
        "modelName": "iris",
        "version": "5.1.0",
        "gates": [{"metric": "accuracy", "min": 0.9}],
    }
    assert {name: p["parameterType"] for name, p in rollout.items()} == {
        "namespace": "STRING",
        "name": "STRING",
        "version": "STRING",
        "timeout_seconds": "NUMBER_DOUBLE",
        "fail_on_rollback": "BOOLEAN",
    }
    assert rollout["fail_on_rollback"]["defaultValue"] is True


def test_every_task_runs_its_step_in_kilns_image_installing_nothing_and_uncached(ir: dict[str, Any]) -> None:
    executors = ir["deploymentSpec"]["executors"]
    calls = {
        "validate-dataset": "steps.validate_dataset(",
        "submit-training-job": "steps.submit_training_job(",
        "gate-model-version": "steps.gate_model_version(",
        "roll-out-model-deployment": "steps.roll_out(",
    }

    for name, call in calls.items():
        container = executors[f"exec-{name}"]["container"]
        program = "\n".join(container["command"])
        assert container["image"] == components.IMAGE
        assert "pip install" not in program
        assert call in program
        assert not ir["root"]["dag"]["tasks"][name]["cachingOptions"].get("enableCache", False)
