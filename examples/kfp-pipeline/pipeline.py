"""A Kubeflow pipeline over Kiln: validate the data, train, gate, ship.

    validate-dataset -> submit-training-job -> gate-model-version -> roll-out-model-deployment

The dataset is checked against the TrainingJob's own expectations before any training is asked
for; the job trains and registers a ModelVersion; the version must pass its gates; the
ModelDeployment then rolls it out by its own strategy and the last task ends Healthy, or fails
when the rollout is rolled back. Every task fails with the Kiln object's own status message.

    python examples/kfp-pipeline/pipeline.py pipeline.yaml   # compile to KFP IR YAML
    python examples/kfp-pipeline/pipeline.py --local --namespace ml --version 5.1.0

`--local` runs it here with `kfp.local` (SubprocessRunner, in this Python), against the cluster
$KUBECONFIG names, where `kiln run` watches and ModelDeployment `iris-kfp` serves (see README.md).
"""

import argparse
import pathlib
import sys
from typing import Any

import yaml
from kfp import compiler, dsl, local

from kiln.kfp import components

FIRST_VERSION = pathlib.Path(__file__).resolve().parent / "versions" / "iris-5.0.0.yaml"


def training_spec(version: str) -> dict[str, Any]:
    """The TrainingJob spec of `version`: the first version's, with its output.version replaced."""
    spec: dict[str, Any] = yaml.safe_load(FIRST_VERSION.read_text())["spec"]
    spec["output"]["version"] = version
    return spec


@dsl.pipeline(name="kiln-train-gate-ship", description="Validate a dataset, train, gate and roll out with Kiln.")
def train_gate_ship(
    namespace: str = "default",
    job_name: str = "iris-5-1-0",
    training: dict = training_spec("5.1.0"),  # noqa: B008 - KFP takes the value once, at compile time
    deployment: str = "iris-kfp",
) -> str:
    validated = components.validate_dataset(namespace=namespace, spec=training)
    trained = components.submit_training_job(namespace=namespace, name=job_name, spec=training).after(validated)
    gated = components.gate_model_version(namespace=namespace, name=trained.output)
    shipped = components.roll_out_model_deployment(namespace=namespace, name=deployment, version=gated.output)
    for task in (validated, trained, gated, shipped):
        task.set_caching_options(False)  # each task changes the cluster: never reuse an earlier run's answer
    return shipped.output


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", nargs="?", default="pipeline.yaml", help="where to write the IR YAML")
    parser.add_argument("--local", action="store_true", help="run with kfp.local instead of compiling")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--version", default="5.1.0", help="the version to train and roll out")
    parser.add_argument("--deployment", default="iris-kfp")
    parser.add_argument("--pipeline-root", default="./local_outputs", help="kfp.local's outputs (--local)")
    arguments = parser.parse_args(argv)
    if not arguments.local:
        compiler.Compiler().compile(train_gate_ship, arguments.output)
        print(f"wrote {arguments.output}")
        return
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=arguments.pipeline_root)
    outcome = train_gate_ship(
        namespace=arguments.namespace,
        job_name=f"iris-{arguments.version.replace('.', '-')}",
        training=training_spec(arguments.version),
        deployment=arguments.deployment,
    )
    print(f"md/{arguments.deployment}: {outcome.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
