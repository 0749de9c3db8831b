"""A Kubeflow pipeline over Kiln: validate the data, train, gate, ship.

    validate-dataset -> submit-training-job -> gate-model-version -> roll-out-model-deployment

The dataset is checked against the TrainingJob's own expectations before any training is asked
for; the job trains and registers a ModelVersion; the version must pass its gates; the
ModelDeployment then rolls it out by its own strategy and the last task ends Healthy, or fails
when the rollout is rolled back. Every task fails with the Kiln object's own status message.

    python examples/kfp-pipeline/pipeline.py pipeline.yaml   # compile to KFP IR YAML
    python examples/kfp-pipeline/pipeline.py --local --namespace ml --version 1.1.0

`--local` runs it here with `kfp.local` (SubprocessRunner, in this Python), against the cluster
$KUBECONFIG names: a dev cluster with `kiln run`, and a ModelDeployment `iris` to roll out.
"""

import argparse
import sys
from typing import Any

from kfp import compiler, dsl, local

from kiln.kfp import components

TRAINING: dict[str, Any] = {
    "sklearn": {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "params": {"max_iter": 500},
        "dataset": {
            "builtin": "iris",
            "expectations": {
                "minRows": 100,
                "columns": [
                    {"name": "petal length (cm)", "type": "float", "maxNulls": 0, "min": 0, "max": 10},
                    {"name": "target", "type": "integer", "min": 0, "max": 2},
                ],
            },
        },
        "testSize": 0.3,
        "randomSeed": 7,
    },
    "output": {"modelName": "iris", "version": "1.1.0", "gates": [{"metric": "accuracy", "min": 0.9}]},
}
"""The default TrainingJob spec: iris, which ships with scikit-learn, and a gate on accuracy."""


@dsl.pipeline(name="kiln-train-gate-ship", description="Validate a dataset, train, gate and roll out with Kiln.")
def train_gate_ship(
    namespace: str = "default",
    job_name: str = "iris-1-1-0",
    training: dict = TRAINING,
    deployment: str = "iris",
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
    parser.add_argument("--version", default="1.1.0", help="the version to train and roll out")
    parser.add_argument("--deployment", default="iris")
    parser.add_argument("--pipeline-root", default="./local_outputs", help="kfp.local's outputs (--local)")
    arguments = parser.parse_args(argv)
    if not arguments.local:
        compiler.Compiler().compile(train_gate_ship, arguments.output)
        print(f"wrote {arguments.output}")
        return
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=arguments.pipeline_root)
    training = {**TRAINING, "output": {**TRAINING["output"], "version": arguments.version}}
    outcome = train_gate_ship(
        namespace=arguments.namespace,
        job_name=f"iris-{arguments.version.replace('.', '-')}",
        training=training,
        deployment=arguments.deployment,
    )
    print(f"md/{arguments.deployment}: {outcome.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
