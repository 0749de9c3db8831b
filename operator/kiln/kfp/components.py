"""The Kubeflow Pipelines components: each runs in Kiln's image and calls its `steps` function.

A lightweight component's body is shipped as source and run alone, so each imports what it uses
inside. They reach the cluster as `kiln` does: `$KUBECONFIG`, else the pod's service account,
which needs the verbs of Kiln's `kiln-editor` role on the objects a step touches.

Annotations stay real types (no postponed evaluation): KFP reads them to type the parameters.
"""

from kfp import dsl

IMAGE = "ghcr.io/kiln-dev/kiln:0.1.0"
"""Kiln's operator image, which holds kiln and kfp (so the executor installs nothing)."""


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_dataset(namespace: str, spec: dict, dataset_path: str = "") -> int:
    """Check the dataset of a TrainingJob `spec` (its sklearn trainer's) against its expectations
    before any training is asked for; the number of rows. Fails naming every broken expectation.
    `dataset_path` is where a pvc:// dataset's claim is mounted in this task."""
    from kiln.kfp import steps

    return steps.validate_dataset(namespace, spec, dataset_path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def submit_training_job(namespace: str, name: str, spec: dict, timeout_seconds: float = 1800.0) -> str:
    """Create TrainingJob `name` with `spec` and wait until it ends; the ModelVersion it registered.
    Fails with the job's status message when the job fails."""
    from kiln.kfp import steps
    from kiln.kube import client

    waiter = steps.Waiter(timeout=timeout_seconds)
    return steps.submit_training_job(client.connect(), namespace, name, spec, waiter)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gate_model_version(namespace: str, name: str, timeout_seconds: float = 600.0) -> str:
    """Wait until ModelVersion `name` passes its gates (Validated); its version. Fails when Rejected."""
    from kiln.kfp import steps
    from kiln.kube import client

    return steps.gate_model_version(client.connect(), namespace, name, steps.Waiter(timeout=timeout_seconds))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def roll_out_model_deployment(
    namespace: str, name: str, version: str, timeout_seconds: float = 1800.0, fail_on_rollback: bool = True
) -> str:
    """Set ModelDeployment `name` to `version` and wait until it is Healthy on it or its rollout
    ended otherwise; the outcome (`Healthy`, `RolledBack`, `Refused`...). Any outcome but Healthy
    fails the task unless `fail_on_rollback` is false."""
    from kiln.kfp import steps
    from kiln.kube import client

    waiter = steps.Waiter(timeout=timeout_seconds)
    return steps.roll_out(client.connect(), namespace, name, version, waiter, fail_on_rollback=fail_on_rollback)
