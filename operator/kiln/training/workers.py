"""The objects a TrainingJob owns, built from its spec: worker pods, the headless Service, claims,
the PodGroup of an external gang scheduler, the workers' access to their own pods, and the
trainer's service account.

Pure builders: a job's wire body in, Kubernetes objects as dicts out. Placement (GPU requests,
nodeSelector, tolerations, keeping CPU jobs off GPU nodes) is decided once, in `placement`, and
both the pods and the builtin gang admission read it, so admission checks exactly what the
scheduler will be asked to place.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any

from kiln.api import base, common, trainingjob

Object = dict[str, Any]

GPU_RESOURCE = common.GPU_RESOURCE
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_TOLERATION: Object = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

JOB_LABEL = f"{base.GROUP}/trainingjob"
RANK_LABEL = f"{base.GROUP}/rank"
ATTEMPT_LABEL = f"{base.GROUP}/attempt"
MODEL_LABEL = f"{base.GROUP}/model"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kiln"}
CODE_REPOSITORY_ANNOTATION = f"{base.GROUP}/code-repository"
CODE_COMMIT_ANNOTATION = f"{base.GROUP}/code-commit"
PREEMPTED_ANNOTATION = trainingjob.PREEMPTED_ANNOTATION

COSCHEDULING_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
VOLCANO_GROUP_ANNOTATION = "scheduling.k8s.io/group-name"
VOLCANO_SCHEDULER_NAME = "volcano"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_GROUP_COUNT_ANNOTATION = "kueue.x-k8s.io/pod-group-total-count"
KUEUE_ADMISSION_GATE = "kueue.x-k8s.io/admission"
"""The scheduling gate Kueue lifts when it admits a pod group; until then no scheduler binds it."""

TRAINER_CONTAINER = "trainer"
TRAINER_ACCOUNT = "kiln-trainer"
DEFAULT_MASTER_PORT = 29500
OUTPUT_DIR = "/var/run/kiln/output"
RESULT_FILE = f"{OUTPUT_DIR}/result.json"
MODEL_STORE_DIR = "/var/run/kiln/models"
DATASETS_DIR = "/var/run/kiln/datasets"
TMP_DIR = "/var/run/kiln/tmp"
"""The trainer's writable temporary directory (TMPDIR): the root filesystem is read-only."""
SHM_DIR = "/dev/shm"
PODINFO_DIR = "/var/run/kiln/podinfo"
PREEMPTED_FILE = f"{PODINFO_DIR}/preempted"
"""The pod's `kiln.dev/preempted` annotation, kept current by the kubelet (a downwardAPI volume)."""


@dataclasses.dataclass(frozen=True)
class Job:
    """The parts of a TrainingJob object the builders need."""

    name: str
    namespace: str
    uid: str
    spec: trainingjob.TrainingJobSpec
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    created: str = ""
    """The creationTimestamp (RFC 3339, so it sorts as text)."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Job:
        metadata = body["metadata"]
        return cls(
            name=metadata["name"],
            namespace=metadata.get("namespace") or "default",
            uid=metadata.get("uid", ""),
            spec=_spec_of(body.get("spec") or {}),
            annotations=metadata.get("annotations") or {},
            created=metadata.get("creationTimestamp", ""),
        )


def _spec_of(spec: Mapping[str, Any]) -> trainingjob.TrainingJobSpec:
    """The spec parsed, once for each distinct spec: parsing checks every CEL rule, and each event
    and reconcile of every job reads its spec (jobs submitted from one template share theirs)."""
    return _parsed_spec(json.dumps(spec, sort_keys=True, separators=(",", ":")))


@functools.lru_cache(maxsize=4096)
def _parsed_spec(text: str) -> trainingjob.TrainingJobSpec:
    return trainingjob.TrainingJobSpec.model_validate_json(text)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a job's workers may run and what each one asks for."""

    requests: Mapping[str, str | int]
    limits: Mapping[str, str | int]
    node_selector: Mapping[str, str]
    tolerations: tuple[Object, ...]
    avoid_gpu_nodes: bool
    """CPU-only workers are kept off GPU nodes while nodes without GPUs exist."""


def placement(spec: trainingjob.TrainingJobSpec, cpu_nodes_exist: bool) -> Placement:
    requests, limits = spec.resources.requests_and_limits()
    node_selector = dict(spec.node_selector)
    tolerations = tuple(toleration.to_wire() for toleration in spec.tolerations)
    gpus = spec.resources.gpus
    if gpus is not None:
        if gpus.product:
            node_selector[GPU_PRODUCT_LABEL] = gpus.product
        if GPU_TOLERATION not in tolerations:
            tolerations = (*tolerations, GPU_TOLERATION)
    return Placement(requests, limits, node_selector, tolerations, gpus is None and cpu_nodes_exist)


def worker_name(job: str, rank: int) -> str:
    return f"{job}-worker-{rank}"


def checkpoint_claim(job: Job) -> str | None:
    checkpoint = job.spec.checkpoint
    if checkpoint is None or checkpoint.uri is not None:
        return None
    return checkpoint.claim_name or f"{job.name}-checkpoint"


def artifact_location(output: trainingjob.Output) -> tuple[str, str | None]:
    """The artifact's URI in the registry and its path inside the trainer's container; no path when
    the trainer uploads it to an object store."""
    uploaded_to = output.object_store_uri()
    if uploaded_to is not None:
        return uploaded_to, None
    relative = f"{output.model_name}/{output.version}/{trainingjob.ARTIFACT_FILE}"
    return f"pvc://{output.store.claim_name}/{relative}", f"{MODEL_STORE_DIR}/{relative}"


def owner_reference(job: Job) -> Object:
    return {
        "apiVersion": base.API_VERSION,
        "kind": "TrainingJob",
        "name": job.name,
        "uid": job.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_labels(job: Job) -> dict[str, str]:
    return {**MANAGED_BY, JOB_LABEL: job.name}


def _owned_metadata(job: Job, name: str, labels: Mapping[str, str] | None = None) -> Object:
    return {
        "name": name,
        "namespace": job.namespace,
        "labels": {**child_labels(job), **(labels or {})},
        "ownerReferences": [owner_reference(job)],
    }


def master_port(spec: trainingjob.TrainingJobSpec) -> int:
    """The rendezvous port: the user's own MASTER_PORT when the container sets one."""
    if spec.container is not None:
        for variable in spec.container.env:
            if variable.name == "MASTER_PORT" and variable.value and variable.value.isdigit():
                return int(variable.value)
    return DEFAULT_MASTER_PORT


def _value(name: str, value: str | int) -> Object:
    return {"name": name, "value": str(value)}


def _distributed_env(job: Job, rank: int, world_size: int) -> list[Object]:
    spec = job.spec
    env = [
        _value("MASTER_ADDR", f"{worker_name(job.name, 0)}.{job.name}"),
        _value("MASTER_PORT", master_port(spec)),
        _value("WORLD_SIZE", world_size),
        _value("RANK", rank),
        _value("LOCAL_RANK", 0),
        _value("NODE_RANK", rank),
    ]
    if spec.elastic is not None:
        # torchrun reads its flags from PET_* variables, as Kubeflow's trainer sets them.
        env += [
            _value("PET_NNODES", f"{spec.elastic.min_workers}:{spec.elastic.max_workers}"),
            _value("PET_MAX_RESTARTS", spec.elastic.max_restarts),
            _value("KILN_MIN_WORKERS", spec.elastic.min_workers),
            _value("KILN_MAX_WORKERS", spec.elastic.max_workers),
        ]
    return env


def _kiln_env(job: Job, rank: int, attempt: int, world_size: int) -> list[Object]:
    spec = job.spec
    env = [
        _value("KILN_TRAINING_JOB", job.name),
        _value("KILN_TRAINING_JOB_UID", job.uid),
        {"name": "KILN_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        # Rank 0 reports its progress on its own pod (kiln.runtime.progress).
        {"name": "KILN_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        _value("KILN_ATTEMPT", attempt),
        _value("KILN_RESULT_FILE", RESULT_FILE),
        _value("TMPDIR", TMP_DIR),
        _value("KILN_PREEMPTED_FILE", PREEMPTED_FILE),
        *_distributed_env(job, rank, world_size),
    ]
    if spec.checkpoint is not None:
        env.append(_value("KILN_CHECKPOINT_DIR", spec.checkpoint.mount_path))
        if spec.checkpoint.uri is not None:
            env.append(_value("KILN_CHECKPOINT_URI", f"{spec.checkpoint.uri.rstrip('/')}/{job.name}"))
    for annotation, variable in (
        (CODE_REPOSITORY_ANNOTATION, "KILN_CODE_REPOSITORY"),
        (CODE_COMMIT_ANNOTATION, "KILN_CODE_COMMIT"),
    ):
        if job.annotations.get(annotation):
            env.append(_value(variable, job.annotations[annotation]))
    if spec.sklearn is not None:
        env += _sklearn_env(spec.sklearn, spec.output)
    return env


def _claim_of(uri: str) -> tuple[str, str]:
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    return claim, path


def _sklearn_env(sklearn: trainingjob.SklearnTrainer, output: trainingjob.Output | None) -> list[Object]:
    env = [_value("KILN_SKLEARN", json.dumps(sklearn.to_wire(), sort_keys=True))]
    uri = sklearn.dataset.uri
    if uri and uri.startswith("pvc://"):
        claim, path = _claim_of(uri)
        env.append(_value("KILN_DATASET_PATH", f"{DATASETS_DIR}/{claim}/{path}"))
    if output is not None:
        artifact_uri, artifact_path = artifact_location(output)
        env += [
            _value("KILN_OUTPUT", json.dumps(output.to_wire(), sort_keys=True)),
            _value("KILN_ARTIFACT_URI", artifact_uri),
        ]
        if artifact_path is not None:
            env.append(_value("KILN_ARTIFACT_PATH", artifact_path))
    return env


def _volumes(job: Job) -> tuple[list[Object], list[Object]]:
    """The pod's volumes and the trainer's mounts of them."""
    spec = job.spec
    # The root filesystem is read-only: the trainer writes its result, temporary files and (torch's
    # collectives between ranks) shared memory to volumes.
    # A worker told to stop reads from podinfo whether it was preempted (kiln.runtime.preemption).
    preempted = {"path": "preempted", "fieldRef": {"fieldPath": f"metadata.annotations['{PREEMPTED_ANNOTATION}']"}}
    volumes: list[Object] = [
        {"name": "kiln-output", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "kiln-podinfo", "downwardAPI": {"items": [preempted]}},
    ]
    mounts: list[Object] = [
        {"name": "kiln-output", "mountPath": OUTPUT_DIR},
        {"name": "tmp", "mountPath": TMP_DIR},
        {"name": "kiln-podinfo", "mountPath": PODINFO_DIR, "readOnly": True},
    ]
    if spec.workers > 1 or spec.elastic is not None:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": SHM_DIR})
    claim = checkpoint_claim(job)
    if spec.checkpoint is not None and (claim or spec.checkpoint.uri):
        # With an object store the directory only stages what is uploaded and downloaded.
        source: Object = {"persistentVolumeClaim": {"claimName": claim}} if claim else {"emptyDir": {}}
        volumes.append({"name": "checkpoint", **source})
        mounts.append({"name": "checkpoint", "mountPath": spec.checkpoint.mount_path})
    if spec.sklearn is not None and spec.output is not None and spec.output.store.uri is None:
        store = spec.output.store.claim_name
        volumes.append({"name": "model-store", "persistentVolumeClaim": {"claimName": store}})
        mounts.append({"name": "model-store", "mountPath": MODEL_STORE_DIR})
    uri = spec.sklearn.dataset.uri if spec.sklearn is not None else None
    if uri and uri.startswith("pvc://"):
        claim, _ = _claim_of(uri)
        volumes.append({"name": "dataset", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "dataset", "mountPath": f"{DATASETS_DIR}/{claim}", "readOnly": True})
    return volumes, mounts


def _container(
    job: Job, rank: int, attempt: int, where: Placement, *, mounts: list[Object], image: str, world_size: int
) -> Object:
    spec = job.spec
    container: Object = {"name": TRAINER_CONTAINER}
    kiln_env = _kiln_env(job, rank, attempt, world_size)
    if spec.container is not None:
        user = spec.container
        own = {variable.name for variable in user.env}
        container.update(image=user.image, command=list(user.command), args=list(user.args))
        # The user's variables come last so they may refer to Kiln's as $(MASTER_ADDR), and win.
        container["env"] = [variable for variable in kiln_env if variable["name"] not in own] + [
            variable.to_wire() for variable in user.env
        ]
        if user.working_dir:
            container["workingDir"] = user.working_dir
        if not container["command"]:
            del container["command"]
    else:
        container.update(image=image, command=["kiln-trainer"], env=kiln_env)
    resources: Object = {}
    if where.requests:
        resources["requests"] = dict(where.requests)
    if where.limits:
        resources["limits"] = dict(where.limits)
    secrets = []
    if spec.output is not None and spec.output.store.uri is not None and spec.output.store.credentials_secret:
        secrets.append(spec.output.store.credentials_secret)
    if spec.checkpoint is not None and spec.checkpoint.uri is not None and spec.checkpoint.credentials_secret:
        secrets.append(spec.checkpoint.credentials_secret)
    if secrets:
        container["envFrom"] = [{"secretRef": {"name": name}} for name in dict.fromkeys(secrets)]
    container.update(
        resources=resources,
        volumeMounts=mounts,
        ports=[{"name": "rendezvous", "containerPort": master_port(spec), "protocol": "TCP"}],
        # Rank 0's result reaches the operator in the pod's status, and a failure's last log lines.
        terminationMessagePath=RESULT_FILE,
        terminationMessagePolicy="FallbackToLogsOnError",
        securityContext=common.restricted_container_security(),
    )
    return container


def _gpu_free_affinity() -> Object:
    term = {"matchExpressions": [{"key": GPU_PRESENT_LABEL, "operator": "NotIn", "values": ["true"]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def worker_pod(
    job: Job, rank: int, attempt: int, where: Placement, trainer_image: str, *, world_size: int | None = None
) -> Object:
    """Worker `rank` of the job's attempt `attempt` (restarts and resizes so far) of `world_size`
    workers (`spec.workers` unless elastic admission sized the gang); sklearn jobs run
    `kiln-trainer` from `trainer_image`."""
    spec = job.spec
    world = world_size or spec.workers
    name = worker_name(job.name, rank)
    labels = {RANK_LABEL: str(rank), ATTEMPT_LABEL: str(attempt)}
    metadata = _owned_metadata(job, name, labels)
    volumes, mounts = _volumes(job)
    pod_spec: Object = {
        "restartPolicy": "Never",
        # hostname.subdomain is rank's stable DNS name behind the headless Service.
        "hostname": name,
        "subdomain": job.name,
        "serviceAccountName": worker_account(job),
        # Every worker may talk to the API: rank 0 reports its progress on its own pod, and
        # kiln-trainer registers ModelVersions.
        "automountServiceAccountToken": True,
        "securityContext": common.restricted_pod_security(),
        "containers": [_container(job, rank, attempt, where, mounts=mounts, image=trainer_image, world_size=world)],
        "volumes": volumes,
    }
    if where.node_selector:
        pod_spec["nodeSelector"] = dict(where.node_selector)
    if where.tolerations:
        pod_spec["tolerations"] = list(where.tolerations)
    if where.avoid_gpu_nodes:
        pod_spec["affinity"] = _gpu_free_affinity()
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    scheduler = spec.gang_scheduling.scheduler
    if scheduler is trainingjob.GangScheduler.COSCHEDULING:
        metadata["labels"][COSCHEDULING_GROUP_LABEL] = job.name
    elif scheduler is trainingjob.GangScheduler.VOLCANO:
        metadata["annotations"] = {VOLCANO_GROUP_ANNOTATION: job.name}
        pod_spec["schedulerName"] = VOLCANO_SCHEDULER_NAME
    elif scheduler is trainingjob.GangScheduler.KUEUE:
        # One pod group per attempt: a restarted gang is a new workload Kueue admits afresh.
        metadata["labels"][KUEUE_QUEUE_LABEL] = str(spec.gang_scheduling.queue_name)
        metadata["labels"][KUEUE_GROUP_LABEL] = f"{job.name}-{attempt}"
        metadata["annotations"] = {KUEUE_GROUP_COUNT_ANNOTATION: str(world)}
        pod_spec["schedulingGates"] = [{"name": KUEUE_ADMISSION_GATE}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def headless_service(job: Job) -> Object:
    """Gives each worker the stable name `<job>-worker-<rank>.<job>`; not-ready workers are published
    too, because rank 0 must be reachable before anyone is ready."""
    port = master_port(job.spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _owned_metadata(job, job.name),
        "spec": {
            "clusterIP": "None",
            "selector": {JOB_LABEL: job.name},
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def checkpoint_pvc(job: Job) -> Object | None:
    """The checkpoint claim Kiln creates and owns (spec.checkpoint.size); None for a named claim."""
    checkpoint = job.spec.checkpoint
    if checkpoint is None or checkpoint.size is None:
        return None
    claim = checkpoint_claim(job)
    assert claim is not None
    pvc_spec: Object = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": checkpoint.size}}}
    if checkpoint.storage_class_name:
        pvc_spec["storageClassName"] = checkpoint.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _owned_metadata(job, claim),
        "spec": pvc_spec,
    }


def model_store_pvc(job: Job) -> Object | None:
    """The namespace's model store, shared by every job and owned by none, so artifacts outlive jobs."""
    output = job.spec.output
    if output is None or job.spec.sklearn is None or output.store.uri is not None:
        return None
    store = output.store
    pvc_spec: Object = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": store.size}}}
    if store.storage_class_name:
        pvc_spec["storageClassName"] = store.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": store.claim_name, "namespace": job.namespace, "labels": dict(MANAGED_BY)},
        "spec": pvc_spec,
    }


def pod_group(job: Job) -> Object | None:
    """The PodGroup an external gang scheduler binds by, with minMember; None for builtin."""
    spec = job.spec
    min_member = spec.elastic.min_workers if spec.elastic else spec.workers
    scheduler = spec.gang_scheduling.scheduler
    if scheduler is trainingjob.GangScheduler.COSCHEDULING:
        api_version = "scheduling.x-k8s.io/v1alpha1"
        group_spec: Object = {
            "minMember": min_member,
            "scheduleTimeoutSeconds": spec.gang_scheduling.timeout_seconds,
        }
    elif scheduler is trainingjob.GangScheduler.VOLCANO:
        api_version = "scheduling.volcano.sh/v1beta1"
        group_spec = {"minMember": min_member}
        if spec.priority_class_name:
            group_spec["priorityClassName"] = spec.priority_class_name
    else:
        return None
    metadata = _owned_metadata(job, job.name)
    return {"apiVersion": api_version, "kind": "PodGroup", "metadata": metadata, "spec": group_spec}


def worker_account(job: Job) -> str:
    """The service account the workers run as: the one the spec names, else kiln-trainer for the
    sklearn trainer, else the job's own (`worker_access`)."""
    if job.spec.service_account_name:
        return job.spec.service_account_name
    return TRAINER_ACCOUNT if job.spec.sklearn is not None else f"{job.name}-workers"


def worker_access(job: Job) -> list[Object]:
    """What lets the workers report progress on their own pods, and read whether they were
    preempted, and nothing else: a Role that may get and patch only the job's worker pods (by name,
    up to the most workers the job may have), bound to the workers' account; and that account, when
    it is the job's own. All owned by the job."""
    name = f"{job.name}-workers"
    metadata = _owned_metadata(job, name)
    elastic = job.spec.elastic
    most = max(job.spec.workers, elastic.max_workers if elastic else 0)
    pods = [worker_name(job.name, rank) for rank in range(most)]
    account = worker_account(job)
    objects: list[Object] = []
    if account == name:
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata})
    rules = [{"apiGroups": [""], "resources": ["pods"], "resourceNames": pods, "verbs": ["get", "patch"]}]
    return [
        *objects,
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata, "rules": rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": job.namespace}],
        },
    ]


def needs_trainer_account(job: Job) -> bool:
    """Whether the job's workers run as Kiln's trainer account: the sklearn trainer, with none named."""
    return job.spec.sklearn is not None and job.spec.service_account_name is None


def trainer_account(namespace: str) -> list[Object]:
    """The service account kiln-trainer runs as: it may register ModelVersions in its namespace."""
    metadata = {"name": TRAINER_ACCOUNT, "namespace": namespace, "labels": dict(MANAGED_BY)}
    rules = [
        {"apiGroups": [base.GROUP], "resources": ["modelversions"], "verbs": ["create", "get", "list"]},
        {"apiGroups": [base.GROUP], "resources": ["trainingjobs"], "verbs": ["get"]},
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata, "rules": rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TRAINER_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": TRAINER_ACCOUNT, "namespace": namespace}],
        },
    ]
