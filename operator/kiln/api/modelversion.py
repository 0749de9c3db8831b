"""ModelVersion: one immutable, digest-pinned model artifact with its metrics, lineage and gates."""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Final, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from kiln.api import base, common


class ArtifactFormat(StrEnum):
    SKOPS = "skops"
    ONNX = "onnx"
    JOBLIB = "joblib"
    PICKLE = "pickle"
    TORCHSCRIPT = "torchscript"
    SAFETENSORS = "safetensors"


class Artifact(base.KilnModel):
    """The serialized model. Its sha256 digest is its identity and is checked wherever it is read."""

    uri: str = Field(min_length=1, max_length=2048, pattern=r"^(file|pvc|s3|gs)://.+$")
    """Where the artifact lives: `file:///abs/path`, `pvc://claim/path`, `s3://bucket/key`,
    `gs://bucket/key`."""
    sha256: base.Sha256
    """The sha256 digest of the artifact's bytes."""
    size_bytes: StrictInt | None = Field(default=None, ge=0)
    """The artifact's size in bytes, as its writer recorded it (`kiln models` shows it)."""
    format: ArtifactFormat = ArtifactFormat.SKOPS
    """How it is serialized. `joblib` and `pickle` can run code when loaded, so servers refuse them
    unless started with an explicit opt-in."""


class TensorSpec(base.KilnModel):
    """One named input or output tensor, as the Open Inference Protocol describes it."""

    name: str = Field(min_length=1, max_length=256)
    """The tensor's name."""
    datatype: Literal[
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
        "FP16", "FP32", "FP64", "BYTES",
    ]  # fmt: skip
    """The element type, in the protocol's names."""
    shape: list[StrictInt] = Field(min_length=1, max_length=8)
    """The shape; -1 marks a variable dimension (the batch)."""


class Signature(base.KilnModel):
    """The model's inputs and outputs."""

    inputs: list[TensorSpec] = Field(min_length=1, max_length=64)
    """Input tensors."""
    outputs: list[TensorSpec] = Field(default_factory=list, max_length=64)
    """Output tensors."""
    feature_names: list[str] = Field(default_factory=list, max_length=4096)
    """The names of the input features, in column order."""


class FeatureBaseline(base.KilnModel):
    """The distribution of one feature in the training data, as a histogram."""

    name: str = Field(min_length=1, max_length=256)
    """The feature's name."""
    bins: list[StrictFloat] = Field(min_length=2, max_length=257)
    """The bin edges, ascending; n edges make n-1 bins."""
    counts: list[StrictInt] = Field(min_length=1, max_length=256)
    """How many training rows fell in each bin."""

    cel_rules = (
        base.Rule(
            "self.counts.size() == self.bins.size() - 1",
            "counts must have one entry fewer than bins (n edges make n-1 bins)",
            field_path=".counts",
        ),
    )


class Baseline(base.KilnModel):
    """The training data's feature distributions, compared with live traffic to detect drift."""

    features: list[FeatureBaseline] = Field(default_factory=list, max_length=1024)
    """One histogram per feature."""
    sample_size: StrictInt = Field(default=0, ge=0)
    """How many rows the histograms were computed from."""


class DatasetRef(base.KilnModel):
    """The data a version was trained on."""

    uri: str = Field(min_length=1, max_length=2048)
    """Where the data was read from."""
    sha256: base.Sha256 | None = None
    """The digest of the data as read."""


class CodeRef(base.KilnModel):
    """The code a version was trained with."""

    repository: str = Field(min_length=1, max_length=2048)
    """The source repository's URL."""
    commit: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]{7,64}$")
    """The commit hash."""


class Lineage(base.KilnModel):
    """Where a version came from."""

    training_job: str | None = Field(default=None, max_length=253)
    """The TrainingJob that produced it, in the same namespace."""
    dataset: DatasetRef | None = None
    """The training data."""
    code: CodeRef | None = None
    """The training code."""
    parameters: dict[str, str] = Field(default_factory=dict)
    """Hyperparameters and other settings, as strings."""


class Stage(StrEnum):
    NONE = "None"
    STAGING = "Staging"
    PRODUCTION = "Production"
    ARCHIVED = "Archived"


class Approval(base.KilnModel):
    """One approval of a version for Production."""

    approver: str = Field(min_length=1, max_length=256)
    """Who approved, as the API server authenticated them."""
    comment: str = Field(default="", max_length=1024)
    """Why."""
    time: datetime.datetime
    """When."""


class ModelVersionSpec(base.KilnModel):
    """One version of a model. Its identity (model, version, artifact) never changes."""

    model_name: base.DNSLabel
    """The model this is a version of."""
    version: base.SemVer
    """The semantic version, unique within the model and ordered as semver orders."""
    artifact: Artifact
    """The serialized model and its digest."""
    framework: str = Field(default="sklearn", max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """The ML framework: sklearn, xgboost, lightgbm, pytorch, onnx, ..."""
    framework_version: str | None = Field(default=None, max_length=64)
    """The framework version the artifact was written with."""
    metrics: dict[str, StrictFloat] = Field(default_factory=dict)
    """Offline metrics (`accuracy: 0.96`), which the gates read."""
    signature: Signature | None = None
    """The model's input and output tensors."""
    baseline: Baseline | None = None
    """Feature distributions of the training data, for drift detection."""
    lineage: Lineage = Field(default_factory=Lineage)
    """Training job, dataset, code and parameters."""
    gates: list[common.Gate] = Field(default_factory=list, max_length=32)
    """Quality gates to pass before the version is Validated."""
    stage: Stage = Stage.NONE
    """The lifecycle stage asked for (`kiln stage`): None, Staging, Production or Archived. The
    registry grants it in status.stage: None may move to Staging or Archived, Staging to None,
    Production or Archived, Production to Staging or Archived, Archived back to Staging. Staging and
    Production need the version Validated, Production also requiredApprovals distinct approvals;
    promoting a version to Production archives the model's previous Production version. A Rejected
    version may only be archived."""
    required_approvals: StrictInt = Field(default=0, ge=0, le=16)
    """Distinct approvers needed before the version may enter Production."""
    approvals: list[Approval] = Field(default_factory=list, max_length=64)
    """Approvals given (`kiln approve`); the same approver counts once."""

    cel_rules = (
        base.Rule("self.modelName == oldSelf.modelName", "modelName is immutable", field_path=".modelName"),
        base.Rule("self.version == oldSelf.version", "version is immutable", field_path=".version"),
        base.Rule("self.artifact == oldSelf.artifact", "artifact is immutable", field_path=".artifact"),
    )


class ModelVersionPhase(StrEnum):
    PENDING = "Pending"
    VALIDATING = "Validating"
    VALIDATED = "Validated"
    REJECTED = "Rejected"


class GateResult(base.KilnModel):
    """The outcome of one gate."""

    metric: str
    """The metric the gate read."""
    expected: str
    """The bound, for people (`>= 0.9`, `no worse than Production (0.95) by 0.01`)."""
    actual: StrictFloat | None = None
    """The value read; unset when the metric is missing."""
    passed: StrictBool
    """Whether the gate held."""
    message: str = ""
    """Why it failed, when it did."""


STAGE_REQUEST_ANNOTATION: Final = f"{base.GROUP}/stage-request"
"""The annotation `kiln stage` writes beside spec.stage: who asked for the stage, when and why, as
a JSON StageRequest. A spec.stage it does not name (set by `kubectl patch`, say) is recorded as
asked for by an unknown user."""


class StageRequest(base.KilnModel):
    """Who asked for a stage: the value of the `kiln.dev/stage-request` annotation."""

    stage: Stage
    """The stage asked for; the request speaks for spec.stage only while the two agree."""
    user: str = Field(min_length=1, max_length=256)
    """Who asked, as the API server authenticated them (SelfSubjectReview)."""
    time: datetime.datetime
    """When they asked."""
    comment: str = Field(default="", max_length=1024)
    """Why."""


class StageChange(base.KilnModel):
    """One entry of the audit trail: a stage change or an approval."""

    action: Literal["Approved", "StageChanged"]
    """What happened."""
    user: str
    """Who did it, as the API server authenticated them."""
    time: datetime.datetime
    """When."""
    from_stage: Stage | None = None
    """The stage before a change."""
    to_stage: Stage | None = None
    """The stage after a change."""
    comment: str = ""
    """The comment given."""


HISTORY_LIMIT: Final = 100
"""How many audit entries status.history keeps; the oldest go first. Events carry every entry too."""


class ModelVersionStatus(base.KilnModel):
    """What the registry decided about the version."""

    phase: ModelVersionPhase = ModelVersionPhase.PENDING
    """Pending, Validating, Validated or Rejected."""
    message: str | None = None
    """Why the version is in its phase."""
    observed_generation: StrictInt | None = None
    """The metadata.generation this status reflects."""
    conditions: list[base.Condition] = Field(default_factory=list)
    """Ready (Validated and in the stage asked for), Validated, ArtifactVerified, Approved and
    StageGranted."""
    validated_inputs: str | None = None
    """A digest of the gates and metrics the phase was decided from; changing either validates the
    version again."""
    duplicate_of: str | None = None
    """The ModelVersion that registered this model and version first, when this one repeats it (and
    is Rejected for that)."""
    gate_results: list[GateResult] = Field(default_factory=list)
    """The outcome of each gate bound: one entry per min, max and noWorseThanProductionBy."""
    stage: Stage = Stage.NONE
    """The stage the registry granted; spec.stage is the stage asked for."""
    stage_since: datetime.datetime | None = None
    """When the version entered its stage."""
    approved_by: list[str] = Field(default_factory=list)
    """Distinct approvers so far, in the order they first approved."""
    history: list[StageChange] = Field(default_factory=list, max_length=HISTORY_LIMIT)
    """The audit trail of stage changes and approvals, newest last; the oldest entries go first."""


class ModelVersion(base.KilnModel):
    """One registered, digest-pinned version of a model."""

    api_version: Literal["kiln.dev/v1alpha1"] = base.API_VERSION
    kind: Literal["ModelVersion"] = "ModelVersion"
    metadata: base.ObjectMeta = Field(default_factory=base.ObjectMeta)
    spec: ModelVersionSpec
    status: ModelVersionStatus | None = None
