"""TrainingJob: train a model on one or many (GPU) pods, gang-scheduled, and register the result."""

from __future__ import annotations

import datetime
import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from kiln.api import base, common, modelversion


class ContainerTrainer(base.KilnModel):
    """The user's own training container."""

    image: str = Field(min_length=1, max_length=512)
    """The container image."""
    command: list[str] = Field(default_factory=list, max_length=64)
    """The entrypoint; the image's own when empty."""
    args: list[str] = Field(default_factory=list, max_length=256)
    """Arguments to the entrypoint."""
    env: list[common.EnvVar] = Field(default_factory=list, max_length=128)
    """Extra environment variables. Kiln adds its own (`KILN_*`, and the torchrun variables
    `MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `NODE_RANK`)."""
    working_dir: str | None = Field(default=None, max_length=4096)
    """The working directory; the image's own when unset."""


ESTIMATOR_MODULES = ("sklearn", "xgboost", "lightgbm", "catboost")
ESTIMATOR_PATTERN = rf"^({'|'.join(ESTIMATOR_MODULES)})(\.[A-Za-z_][A-Za-z0-9_]*)+$"


DATASET_REJECTED_EXIT_CODE = 65
"""The exit code (sysexits' EX_DATAERR) of a trainer that refused its dataset: retrying cannot
help, so the job fails at once, with the trainer's last log line, which names what is wrong."""


class ColumnType(StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    NUMBER = "number"
    BOOLEAN = "boolean"
    STRING = "string"


class ColumnExpectation(base.KilnModel):
    """What one column must hold; the column must exist."""

    name: str = Field(min_length=1, max_length=256)
    """The column's name (for a builtin dataset, scikit-learn's feature names and `target`)."""
    type: ColumnType | None = None
    """`integer`, `float`, `number` (either), `boolean` or `string`; any type when unset."""
    max_nulls: StrictInt | None = Field(default=None, ge=0)
    """The most empty values (nulls, and NaN in a float column) the column may hold."""
    max_null_fraction: StrictFloat | None = Field(default=None, ge=0, le=1)
    """The largest share of empty values, 0 to 1."""
    min: StrictFloat | None = None
    """The smallest value allowed (empty values aside); numeric columns only."""
    max: StrictFloat | None = None
    """The largest value allowed (empty values aside); numeric columns only."""

    cel_rules = (
        base.Rule(
            "!has(self.min) || !has(self.max) || self.min <= self.max",
            "min must not exceed max",
            field_path=".min",
        ),
    )


class DriftExpectation(base.KilnModel):
    """The data must not have drifted too far from the data a ModelVersion was trained on."""

    model_version: str = Field(min_length=1, max_length=253)
    """The ModelVersion (in the job's namespace) whose baseline the dataset is compared with,
    usually the one this job retrains."""
    max_psi: StrictFloat = Field(default=0.25, gt=0, alias="maxPSI")
    """The largest population stability index any baseline feature may have, on the baseline's
    bins. 0.25 is a common rule of thumb for a shift worth a look before training on it; a
    retraining prompted by drift expects some, so set it above the drift threshold."""


class DatasetExpectations(base.KilnModel):
    """Checks the trainer makes on the data before fitting; any failing fails the job at once,
    every failing expectation named in its status."""

    min_rows: StrictInt | None = Field(default=None, ge=1)
    """The fewest rows the dataset may have."""
    columns: list[ColumnExpectation] = Field(default_factory=list, max_length=256)
    """Columns that must exist, with their types, empty values and ranges."""
    drift: DriftExpectation | None = None
    """No feature may have drifted from a ModelVersion's baseline beyond maxPSI."""

    cel_rules = (
        base.Rule(
            "self.columns.all(c, self.columns.exists_one(d, d.name == c.name))",
            "column names must be unique",
            field_path=".columns",
        ),
    )


class Dataset(base.KilnModel):
    """Where the training data comes from: a file by URI, or a dataset scikit-learn ships."""

    uri: str | None = Field(default=None, max_length=2048, pattern=r"^(file|pvc)://.+$")
    """A CSV or Parquet file: `file:///abs/path.csv` or `pvc://claim/path/in/claim.parquet`."""
    builtin: Literal["iris", "wine", "breast_cancer", "digits", "diabetes"] | None = None
    """A dataset that scikit-learn ships, loaded without any download."""
    format: Literal["csv", "parquet"] | None = None
    """The file format; guessed from the URI's extension when unset."""
    expectations: DatasetExpectations | None = None
    """What the data must meet before the trainer fits anything."""

    cel_rules = (
        base.Rule(
            "has(self.uri) != has(self.builtin)",
            "exactly one of uri or builtin must be set",
        ),
        base.Rule(
            "!has(self.format) || has(self.uri)",
            "format applies only to a dataset given by uri",
            field_path=".format",
        ),
    )


class SklearnTrainer(base.KilnModel):
    """The built-in trainer: fits a scikit-learn estimator and measures it on a held-out split."""

    estimator: str = Field(
        min_length=1,
        max_length=256,
        pattern=ESTIMATOR_PATTERN,
    )
    """The estimator's dotted class path, from the modules sklearn, xgboost, lightgbm and catboost
    (`sklearn.ensemble.RandomForestClassifier`)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the estimator (`n_estimators: 200`)."""
    dataset: Dataset
    """The training data."""
    target_column: str | None = Field(default=None, max_length=256)
    """The label column of a file dataset; builtin datasets know their own target."""
    test_size: StrictFloat = Field(default=0.2, gt=0, lt=1)
    """The share of rows held out to compute the metrics."""
    random_seed: StrictInt = Field(default=0, ge=0)
    """Seed for the split and the estimator, so a run can be repeated."""

    cel_rules = (
        base.Rule(
            "has(self.dataset.builtin) || has(self.targetColumn)",
            "targetColumn is required for a dataset given by uri",
            field_path=".targetColumn",
            reason="FieldValueRequired",
        ),
    )


DEFAULT_SCALE_UP_COOLDOWN_SECONDS = 300


class Elastic(base.KilnModel):
    """Elastic training: the job keeps running with between minWorkers and maxWorkers pods."""

    min_workers: StrictInt = Field(ge=1, le=1024)
    """Fewest workers the job runs with."""
    max_workers: StrictInt = Field(ge=1, le=1024)
    """Most workers the job runs with."""
    max_restarts: StrictInt = Field(default=3, ge=0)
    """How many membership changes torch elastic tolerates before failing."""
    scale_up_cooldown: base.Duration | None = None
    """Builtin admission grows a running job toward maxWorkers when capacity frees (the gang
    restarts from its checkpoint with the new WORLD_SIZE) at most once per this long (`90s`, `5m`,
    `1h`; 5m when neither this nor scaleUpCooldownSeconds is set)."""
    scale_up_cooldown_seconds: StrictInt | None = Field(default=None, ge=0)
    """The same cooldown in seconds, for manifests that count in seconds; scaleUpCooldown, when set,
    is the one that counts (an object stored before it existed has 300 here)."""

    cel_rules = (
        base.Rule(
            "self.minWorkers <= self.maxWorkers",
            "minWorkers must not be greater than maxWorkers",
            field_path=".minWorkers",
        ),
    )

    @property
    def cooldown(self) -> datetime.timedelta:
        """How long a grown (or started) job runs before it may grow again."""
        if self.scale_up_cooldown is not None:
            return base.duration_of(self.scale_up_cooldown)
        seconds = (
            DEFAULT_SCALE_UP_COOLDOWN_SECONDS
            if self.scale_up_cooldown_seconds is None
            else self.scale_up_cooldown_seconds
        )
        return datetime.timedelta(seconds=seconds)


class GangScheduler(StrEnum):
    BUILTIN = "builtin"
    VOLCANO = "volcano"
    COSCHEDULING = "coscheduling"
    KUEUE = "kueue"


class GangScheduling(base.KilnModel):
    """All-or-nothing placement of a job's workers."""

    scheduler: GangScheduler = GangScheduler.BUILTIN
    """Who admits the gang: `builtin` (Kiln admits the job only when every worker fits),
    `volcano` or `coscheduling` (Kiln emits a PodGroup with minMember and that scheduler binds),
    or `kueue` (Kiln creates the workers gated, as one Kueue pod group in `queueName`, and Kueue
    admits them against its ClusterQueue's quota)."""
    queue_name: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    """The Kueue LocalQueue (in the job's namespace) the workers are submitted to; only with
    scheduler `kueue`, which requires it."""
    timeout_seconds: StrictInt = Field(default=600, ge=1)
    """How long a gang may wait for capacity before the job fails (with `kueue`, the wait in
    Kueue's queue counts too)."""

    cel_rules = (
        base.Rule(
            "(self.scheduler == 'kueue') == has(self.queueName)",
            "queueName names the Kueue LocalQueue: required with scheduler kueue, and only with it",
            field_path=".queueName",
        ),
    )


class Checkpoint(base.KilnModel):
    """A volume for checkpoints, mounted in every worker so a restarted job resumes."""

    claim_name: str | None = Field(default=None, max_length=253)
    """An existing PersistentVolumeClaim to use."""
    size: base.Quantity | None = None
    """The size of a claim Kiln creates (and owns) when claimName is unset."""
    storage_class_name: str | None = Field(default=None, max_length=253)
    """The storage class of a claim Kiln creates."""
    mount_path: str = Field(default="/var/run/kiln/checkpoints", max_length=4096, pattern=r"^/.*")
    """Where the volume is mounted; passed to the workers as `KILN_CHECKPOINT_DIR`."""
    uri: str | None = Field(default=None, max_length=1024, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    """An object store prefix (`s3://bucket/checkpoints`) instead of a claim: the workers get an
    empty directory at mountPath and `KILN_CHECKPOINT_URI` (`<uri>/<job>`); kiln-trainer uploads its
    checkpoint there after fitting and a restarted worker downloads it first, so any node resumes."""
    credentials_secret: str | None = Field(default=None, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """A Secret whose keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...) become the
    workers' environment for uri; unset to use the pod's web identity."""

    cel_rules = (
        base.Rule(
            "(has(self.claimName) ? 1 : 0) + (has(self.size) ? 1 : 0) + (has(self.uri) ? 1 : 0) == 1",
            "exactly one of claimName (an existing claim), size (a new claim) or uri (an object store prefix) must"
            " be set",
        ),
    )


_MAX_NAME = 253
ARTIFACT_FILE = "model.skops"


class ModelStore(base.KilnModel):
    """Where a job writes the artifact it registers."""

    claim_name: str = Field(default="kiln-models", min_length=1, max_length=253)
    """The PersistentVolumeClaim that holds the namespace's model artifacts. Kiln creates
    `kiln-models` (not owned by any job, so artifacts outlive the jobs that wrote them) when it is
    missing; name your own claim to use it instead."""
    size: base.Quantity = "10Gi"
    """The size of the claim when Kiln creates it."""
    storage_class_name: str | None = Field(default=None, max_length=253)
    """The storage class of the claim when Kiln creates it; the cluster's default when unset."""
    uri: str | None = Field(default=None, max_length=1024, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    """An object store prefix (`s3://bucket/models`) the trainer uploads the artifact to instead of
    the claim, as `<uri>/<modelName>/<version>/model.skops`, so serving pods on any node can read it.
    The trainer's standard AWS_* environment names the service (`AWS_ENDPOINT_URL` for MinIO, Ceph
    or R2), the region and the credentials, or the pod's service account carries an IAM role (IRSA)."""
    credentials_secret: str | None = Field(default=None, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """A Secret in the job's namespace whose keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_ENDPOINT_URL, AWS_REGION, ...) become the trainer's environment for store.uri; unset to use
    the pod's web identity."""


class Output(base.KilnModel):
    """The ModelVersion a successful job registers."""

    model_name: base.DNSLabel
    """The model the version belongs to."""
    version: base.SemVer
    """The semantic version to register."""
    gates: list[common.Gate] = Field(default_factory=list, max_length=32)
    """Quality gates the ModelVersion must pass to become Validated."""
    required_approvals: StrictInt = Field(default=0, ge=0, le=16)
    """Distinct approvals the version needs before it may enter stage Production."""
    store: ModelStore = Field(default_factory=ModelStore)
    """Where the artifact is written: `pvc://<claimName>/<modelName>/<version>/model.skops`, or
    `<store.uri>/<modelName>/<version>/model.skops` when store.uri names an object store."""

    def object_store_uri(self) -> str | None:
        """The artifact's URI in the object store store.uri names; None when it names none."""
        if self.store.uri is None:
            return None
        return f"{self.store.uri.rstrip('/')}/{self.model_name}/{self.version}/{ARTIFACT_FILE}"

    def model_version_name(self) -> str:
        """`<modelName>-<version>` (`iris-1.0.0`), made a valid object name: lower case, and any
        character a name may not hold (`+` of build metadata) as `-`."""
        name = re.sub(r"[^a-z0-9.-]", "-", f"{self.model_name}-{self.version}".lower())
        return name[:_MAX_NAME].rstrip("-.")


class TrainingJobSpec(base.KilnModel):
    """What to train, on what, and where the result goes."""

    container: ContainerTrainer | None = None
    """Run the user's own container."""
    sklearn: SklearnTrainer | None = None
    """Run Kiln's built-in scikit-learn trainer."""
    resources: common.ComputeResources = Field(default_factory=common.ComputeResources)
    """CPU, memory and GPUs for each worker."""
    workers: StrictInt = Field(default=1, ge=1, le=1024)
    """How many worker pods; more than one makes a distributed job with a headless Service
    for rendezvous."""
    elastic: Elastic | None = None
    """Elastic bounds on the number of workers (torch elastic): builtin admission starts the job
    with as many workers as fit between minWorkers and maxWorkers, and grows it toward maxWorkers
    as capacity frees."""
    gang_scheduling: GangScheduling = Field(default_factory=GangScheduling)
    """How the workers are admitted all-or-nothing."""
    checkpoint: Checkpoint | None = None
    """A checkpoint volume shared by the workers and kept across restarts."""
    backoff_limit: StrictInt = Field(default=3, ge=0, le=100)
    """How many times the whole gang is restarted after a worker fails before the job is Failed."""
    active_deadline_seconds: StrictInt | None = Field(default=None, ge=1)
    """How long the job may run, from its start, before it is Failed."""
    ttl_seconds_after_finished: StrictInt | None = Field(default=None, ge=0)
    """How long a finished job is kept before Kiln deletes it (its ModelVersion stays)."""
    suspend: StrictBool = False
    """True deletes the job's pods and keeps its state; false resumes it."""
    priority_class_name: str | None = Field(default=None, max_length=253)
    """The PriorityClass of the worker pods; it also orders jobs waiting for admission."""
    preemptible: StrictBool = True
    """Whether builtin admission may preempt the running job for one of higher priority that cannot
    fit otherwise: its workers get SIGTERM and their grace period to write a checkpoint, and the
    job queues again (reason Preempted) and resumes from its checkpoint when admitted."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Labels a node must have to run a worker."""
    tolerations: list[common.Toleration] = Field(default_factory=list, max_length=32)
    """Tolerations for the worker pods; GPU jobs also get the standard `nvidia.com/gpu` one."""
    service_account_name: str | None = Field(default=None, max_length=253)
    """The service account of the worker pods; Kiln's trainer account when unset."""
    output: Output | None = None
    """The ModelVersion to register when the job succeeds."""

    cel_rules = (
        base.Rule(
            "has(self.container) != has(self.sklearn)",
            "exactly one of container or sklearn must be set",
        ),
        base.Rule(
            "!has(self.elastic) || (self.workers >= self.elastic.minWorkers"
            " && self.workers <= self.elastic.maxWorkers)",
            "workers must be between elastic.minWorkers and elastic.maxWorkers",
            field_path=".workers",
        ),
        base.Rule(
            "!has(self.sklearn) || self.workers == 1",
            "the sklearn trainer runs on one worker; use a container for distributed training",
            field_path=".workers",
        ),
    )


RESULT_MESSAGE_LIMIT = 4096
"""The most a container's termination message carries (the kubelet truncates beyond it)."""


class TrainingResult(base.KilnModel):
    """What a finished job reports: the contract between any training container and the operator.

    Rank 0 writes it as JSON to `$KILN_RESULT_FILE`, which is also its container's
    terminationMessagePath, so the kubelet hands it to the operator in the pod's status (at most
    4096 bytes). `kiln-trainer` writes one after it registered the ModelVersion itself; a user's
    container writes one and the operator registers the ModelVersion from it.
    """

    metrics: dict[str, StrictFloat] = Field(default_factory=dict)
    """Held-out metrics (`accuracy: 0.97`); the output gates read them."""
    artifact: modelversion.Artifact | None = None
    """The artifact written; without one no ModelVersion is registered."""
    framework: str = Field(default="sklearn", max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """The ML framework of the artifact."""
    framework_version: str | None = Field(default=None, max_length=64)
    """The framework version the artifact was written with."""
    signature: modelversion.Signature | None = None
    """The model's inputs and outputs."""
    lineage: modelversion.Lineage | None = None
    """Dataset, code and parameters; the operator fills in the training job."""
    model_version: str | None = Field(default=None, max_length=253)
    """The ModelVersion the container registered itself (kiln-trainer does); unset asks the operator
    to register one from this result."""


PROGRESS_ANNOTATION = f"{base.GROUP}/progress"
"""The annotation on which rank 0 reports its progress, as a JSON ProgressReport on its own pod."""

PREEMPTED_ANNOTATION = f"{base.GROUP}/preempted"
"""Set on every worker of a preempted job, to the job it makes room for (`namespace/name`), right
before the pod is deleted: its SIGTERM then means "checkpoint, you will resume"
(`kiln.runtime.preemption`)."""


class ProgressReport(base.KilnModel):
    """What rank 0 says of its progress: `{"step": 120, "totalSteps": 1000, "epoch": 2,
    "metrics": {"loss": 0.31}}`."""

    step: StrictInt = Field(ge=0)
    """Steps done in the whole run (resumed ones included)."""
    total_steps: StrictInt | None = Field(default=None, ge=1)
    """Steps the run will take, for the percentage and the ETA."""
    epoch: StrictInt | None = Field(default=None, ge=0)
    """The epoch under way."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """The latest training metrics (`loss`)."""


class TrainingProgress(base.KilnModel):
    """How far training is, folded from rank 0's reports."""

    step: StrictInt = 0
    """Steps done, as rank 0 last reported."""
    total_steps: StrictInt | None = None
    """Steps the run will take."""
    epoch: StrictInt | None = None
    """The epoch under way."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """The latest training metrics rank 0 reported."""
    percent: float | None = None
    """step of totalSteps, in percent (one decimal)."""
    steps_per_second: float | None = None
    """The rate between reports, smoothed."""
    eta: str | None = None
    """Time left at that rate (`12m30s`)."""
    update_time: datetime.datetime | None = None
    """When the operator saw the last new report."""


class TrainingJobPhase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    ADMITTED = "Admitted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class WorkerCounts(base.KilnModel):
    """How many workers are in each state."""

    desired: StrictInt = 0
    """Workers the job wants now."""
    active: StrictInt = 0
    """Worker pods that exist and have not finished."""
    ready: StrictInt = 0
    """Worker pods that are running and ready."""
    succeeded: StrictInt = 0
    """Worker pods that exited 0."""
    failed: StrictInt = 0
    """Worker pods that failed in the current attempt."""


class TrainingJobStatus(base.KilnModel):
    """What the operator observed of the job."""

    phase: TrainingJobPhase = TrainingJobPhase.PENDING
    """Pending, Queued, Admitted, Running, Succeeded, Failed or Suspended."""
    message: str | None = None
    """Why the job is in its phase, for people."""
    observed_generation: StrictInt | None = None
    """The metadata.generation this status reflects."""
    conditions: list[base.Condition] = Field(default_factory=list)
    """Ready, Admitted, Running, Succeeded, Failed, Suspended."""
    workers: WorkerCounts = Field(default_factory=WorkerCounts)
    """Worker counts by state."""
    restarts: StrictInt = 0
    """How many times the gang has been restarted after a worker failed."""
    next_restart_time: datetime.datetime | None = None
    """When the gang restarts after its last failure (exponential back-off)."""
    queued_time: datetime.datetime | None = None
    """When the job began waiting for admission, for gangScheduling.timeoutSeconds."""
    start_time: datetime.datetime | None = None
    """When the job's workers first started."""
    completion_time: datetime.datetime | None = None
    """When the job succeeded or failed."""
    metrics: dict[str, StrictFloat] = Field(default_factory=dict)
    """Held-out metrics of the trained model."""
    model_version: str | None = None
    """The name of the ModelVersion the job registered."""
    world_size: StrictInt | None = None
    """How many workers the current attempt runs (WORLD_SIZE): spec.workers, or for an elastic job
    what admission sized it to, between elastic.minWorkers and maxWorkers."""
    resizes: StrictInt = 0
    """How many times an elastic job was grown; each is a gang restart from the checkpoint."""
    last_resize_time: datetime.datetime | None = None
    """When the elastic job last grew, for elastic.scaleUpCooldown."""
    progress: TrainingProgress | None = None
    """Rank 0's progress (step, total steps, epoch, metrics) with percent, rate and ETA, from the
    `kiln.dev/progress` annotation on its pod."""
    preemptions: StrictInt = 0
    """How many times builtin admission preempted the job for one of higher priority."""
    preempted_by: str | None = None
    """The job (`namespace/name`) whose admission preempted this one last."""


class TrainingJob(base.KilnModel):
    """Trains a model on one or many pods and registers a ModelVersion."""

    api_version: Literal["kiln.dev/v1alpha1"] = base.API_VERSION
    kind: Literal["TrainingJob"] = "TrainingJob"
    metadata: base.ObjectMeta = Field(default_factory=base.ObjectMeta)
    spec: TrainingJobSpec
    status: TrainingJobStatus | None = None
