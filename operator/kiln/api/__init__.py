"""The typed API of Kiln's three resources (group kiln.dev, version v1alpha1).

Everything users write YAML against is defined here, and the CRDs are generated
from it (`kiln crds`). This package does no I/O and imports no client library.
"""

from kiln.api.base import API_VERSION, GROUP, VERSION, Condition, ConditionStatus, KilnModel
from kiln.api.modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from kiln.api.modelversion import ModelVersion, ModelVersionSpec, ModelVersionStatus
from kiln.api.resources import KINDS, MODEL_DEPLOYMENT, MODEL_VERSION, TRAINING_JOB, ResourceKind
from kiln.api.trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "MODEL_DEPLOYMENT",
    "MODEL_VERSION",
    "TRAINING_JOB",
    "VERSION",
    "Condition",
    "ConditionStatus",
    "KilnModel",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelVersion",
    "ModelVersionSpec",
    "ModelVersionStatus",
    "ResourceKind",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
]
