"""The three Kiln kinds, with the names and printer columns their CRDs carry."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.api import base, modeldeployment, modelversion, trainingjob

CATEGORY = "kiln"


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class ResourceKind:
    """Everything the API server needs to serve one kind besides its schema."""

    kind: str
    plural: str
    short_name: str
    model: type[base.KilnModel]
    spec_model: type[base.KilnModel]
    status_model: type[base.KilnModel]
    printer_columns: tuple[PrinterColumn, ...]

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{base.GROUP}"


TRAINING_JOB = ResourceKind(
    kind="TrainingJob",
    plural="trainingjobs",
    short_name="tj",
    model=trainingjob.TrainingJob,
    spec_model=trainingjob.TrainingJobSpec,
    status_model=trainingjob.TrainingJobStatus,
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", description="The job's lifecycle phase."),
        PrinterColumn("Workers", ".spec.workers", "integer", "Worker pods asked for."),
        PrinterColumn("Ready", ".status.workers.ready", "integer", "Worker pods running and ready."),
        PrinterColumn("Restarts", ".status.restarts", "integer", "Gang restarts so far."),
        PrinterColumn("Progress", ".status.progress.percent", "number", "Percent of the steps rank 0 reported."),
        PrinterColumn("ETA", ".status.progress.eta", description="Time left at the current rate."),
        PrinterColumn("Model", ".status.modelVersion", description="The ModelVersion registered."),
        AGE,
    ),
)

MODEL_VERSION = ResourceKind(
    kind="ModelVersion",
    plural="modelversions",
    short_name="mv",
    model=modelversion.ModelVersion,
    spec_model=modelversion.ModelVersionSpec,
    status_model=modelversion.ModelVersionStatus,
    printer_columns=(
        PrinterColumn("Model", ".spec.modelName", description="The model this is a version of."),
        PrinterColumn("Version", ".spec.version", description="The semantic version."),
        PrinterColumn("Phase", ".status.phase", description="Pending, Validating, Validated, Rejected."),
        PrinterColumn("Stage", ".status.stage", description="None, Staging, Production, Archived."),
        PrinterColumn("Digest", ".spec.artifact.sha256", description="The artifact's sha256.", priority=1),
        AGE,
    ),
)

MODEL_DEPLOYMENT = ResourceKind(
    kind="ModelDeployment",
    plural="modeldeployments",
    short_name="md",
    model=modeldeployment.ModelDeployment,
    spec_model=modeldeployment.ModelDeploymentSpec,
    status_model=modeldeployment.ModelDeploymentStatus,
    printer_columns=(
        PrinterColumn("Model", ".spec.model", description="The model served."),
        PrinterColumn("Stable", ".status.stableVersion", description="The version serving traffic."),
        PrinterColumn("Candidate", ".status.candidateVersion", description="The version rolling out."),
        PrinterColumn("Weight", ".status.weights.canary", "integer", "Traffic share of the candidate."),
        PrinterColumn("Step", ".status.currentStepIndex", "integer", "The canary step."),
        PrinterColumn("Phase", ".status.phase", description="The rollout's phase."),
        AGE,
    ),
)

KINDS: tuple[ResourceKind, ...] = (TRAINING_JOB, MODEL_VERSION, MODEL_DEPLOYMENT)


def kind_named(kind: str) -> ResourceKind:
    """The ResourceKind of a kind name; a clear error for an unknown one."""
    for resource in KINDS:
        if resource.kind == kind:
            return resource
    known = ", ".join(resource.kind for resource in KINDS)
    raise KeyError(f"unknown kind {kind!r}; Kiln serves {known}")
