"""The TrainingJob a retraining starts: the deployment's template, the next patch version, and its
lineage back to the deployment.

The job carries the deployment and trigger as labels and the reason and the version it is to
replace as annotations; the ModelVersion it registers names the job in lineage.trainingJob, so
`kiln lineage` can walk deployment → trigger → TrainingJob → ModelVersion → rollout. The job has
no ownerReference to the deployment: the ModelVersion it registers is owned by the job, and
deleting a deployment must not delete the models its retrainings put in the registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from kiln import semver
from kiln.api import base, modeldeployment, resources

MANAGED_BY = {"app.kubernetes.io/managed-by": "kiln"}
NAME_LIMIT = 63
"""A TrainingJob's name is also a label value on its pods."""


def next_version(versions: Iterable[str]) -> str:
    """The next patch version after the highest of `versions` (a pre-release's next is its release)."""
    parsed = [semver.parse(version) for version in versions]
    if not parsed:
        return "0.0.1"
    highest = max(parsed)
    patch = highest.patch if highest.prerelease else highest.patch + 1
    return str(semver.Version(highest.major, highest.minor, patch))


def job_name(deployment: str, version: str) -> str:
    """`<deployment>-retrain-<version>` (`iris-retrain-1-0-1`), within 63 characters."""
    suffix = "-retrain-" + re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-")
    return deployment[: NAME_LIMIT - len(suffix)].rstrip("-") + suffix


def training_job(
    spec: modeldeployment.ModelDeploymentSpec,
    *,
    namespace: str,
    deployment: str,
    stable: str,
    version: str,
    trigger: str,
    reason: str,
) -> dict[str, Any]:
    """The TrainingJob to create, from spec.monitoring.retraining.template."""
    assert spec.monitoring is not None
    assert spec.monitoring.retraining is not None
    template = spec.monitoring.retraining.template
    assert template.output is not None  # the API requires it of a retraining template
    job_spec = template.model_copy(
        update={"output": template.output.model_copy(update={"model_name": spec.model, "version": version})}
    )
    return {
        "apiVersion": base.API_VERSION,
        "kind": resources.TRAINING_JOB.kind,
        "metadata": {
            "name": job_name(deployment, version),
            "namespace": namespace,
            "labels": {
                **MANAGED_BY,
                modeldeployment.RETRAINING_FOR_LABEL: deployment,
                modeldeployment.RETRAINING_TRIGGER_LABEL: trigger,
                f"{base.GROUP}/model": spec.model,
            },
            "annotations": {
                modeldeployment.RETRAINING_REASON_ANNOTATION: reason[:4096],
                modeldeployment.RETRAINED_FROM_ANNOTATION: stable,
            },
        },
        "spec": job_spec.to_wire(),
    }
