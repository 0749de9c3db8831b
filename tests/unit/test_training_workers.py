"""The objects a TrainingJob owns, built from its wire spec: GPU placement, the torchrun
environment of every rank, the trainer's volumes and variables, the gang schedulers' marks, the
headless Service, the claims, the PodGroup and the trainer's service account."""

from __future__ import annotations

import json
from typing import Any

import pytest
import training_fixtures as fx

from kiln.training import workers

Object = dict[str, Any]
IMAGE = "ghcr.io/kiln-dev/kiln:0.1.0"
GPU_TOLERATION = {"key": fx.GPU, "operator": "Exists", "effect": "NoSchedule"}
SPOT_TOLERATION = {"key": "cloud.example/spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
GPU_FREE = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]}]}
            ]
        }
    }
}
IRIS_OUTPUT = {"modelName": "iris", "version": "1.2.0"}


def build(rank: int = 0, attempt: int = 0, *, cpu_nodes: bool = False, **kwargs: Any) -> Object:
    one = fx.job(**kwargs)
    return workers.worker_pod(one, rank, attempt, workers.placement(one.spec, cpu_nodes), IMAGE)


def trainer(pod: Object) -> Object:
    [container] = pod["spec"]["containers"]
    assert container["name"] == "trainer"
    return container


def env_names(pod: Object) -> list[str]:
    return [variable["name"] for variable in trainer(pod)["env"]]


def env(pod: Object) -> dict[str, str]:
    return {variable["name"]: variable.get("value", "") for variable in trainer(pod)["env"]}


# -- placement ------------------------------------------------------------------------------------


P = workers.Placement


@pytest.mark.parametrize(
    ("spec", "cpu_nodes", "expected"),
    [
        pytest.param(
            {"resources": {"cpu": "500m", "memory": "1Gi"}},
            True,
            P({"cpu": "500m", "memory": "1Gi"}, {"memory": "1Gi"}, {}, (), avoid_gpu_nodes=True),
            id="cpu-job-is-kept-off-gpu-nodes-when-cpu-nodes-exist",
        ),
        pytest.param(
            {"resources": {"cpu": "2"}},
            False,
            P({"cpu": "2"}, {}, {}, (), avoid_gpu_nodes=False),
            id="cpu-job-may-use-gpu-nodes-when-there-are-no-others",
        ),
        pytest.param(
            {"resources": {"cpu": "2", "cpuLimit": "4"}},
            True,
            P({"cpu": "2"}, {"cpu": "4"}, {}, (), avoid_gpu_nodes=True),
            id="cpu-limit-only-when-asked",
        ),
        pytest.param(
            {"resources": {"gpus": {"count": 4}}},
            True,
            P({fx.GPU: 4}, {fx.GPU: 4}, {}, (GPU_TOLERATION,), avoid_gpu_nodes=False),
            id="gpus-are-requested-and-limited-and-tolerated",
        ),
        pytest.param(
            {"resources": {"gpus": {"count": 8, "product": fx.H100}}, "nodeSelector": {"zone": "eu-west-1a"}},
            False,
            P(
                {fx.GPU: 8},
                {fx.GPU: 8},
                {"zone": "eu-west-1a", "nvidia.com/gpu.product": fx.H100},
                (GPU_TOLERATION,),
                avoid_gpu_nodes=False,
            ),
            id="gpu-product-joins-the-users-node-selector",
        ),
        pytest.param(
            {"resources": {"gpus": {"count": 1}}, "tolerations": [GPU_TOLERATION]},
            False,
            P({fx.GPU: 1}, {fx.GPU: 1}, {}, (GPU_TOLERATION,), avoid_gpu_nodes=False),
            id="users-gpu-toleration-is-not-duplicated",
        ),
        pytest.param(
            {"resources": {"gpus": {"count": 2}}, "tolerations": [SPOT_TOLERATION]},
            False,
            P({fx.GPU: 2}, {fx.GPU: 2}, {}, (SPOT_TOLERATION, GPU_TOLERATION), avoid_gpu_nodes=False),
            id="users-tolerations-come-first",
        ),
        pytest.param(
            {"tolerations": [SPOT_TOLERATION], "nodeSelector": {"pool": "batch"}},
            True,
            P({}, {}, {"pool": "batch"}, (SPOT_TOLERATION,), avoid_gpu_nodes=True),
            id="cpu-job-gets-no-gpu-toleration",
        ),
    ],
)
def test_placement(spec: Object, cpu_nodes: bool, expected: workers.Placement) -> None:
    assert workers.placement(fx.job(**spec).spec, cpu_nodes) == expected


@pytest.mark.parametrize(
    ("spec", "cpu_nodes", "has_affinity"),
    [
        pytest.param({"resources": {"cpu": "1"}}, True, True, id="cpu-job-with-cpu-nodes"),
        pytest.param({"resources": {"cpu": "1"}}, False, False, id="cpu-job-on-an-all-gpu-cluster"),
        pytest.param({"resources": {"gpus": {"count": 1}}}, True, False, id="gpu-job"),
    ],
)
def test_only_cpu_jobs_are_kept_off_gpu_nodes_and_only_while_cpu_nodes_exist(
    spec: Object, cpu_nodes: bool, has_affinity: bool
) -> None:
    pod = build(cpu_nodes=cpu_nodes, **spec)

    assert pod["spec"].get("affinity") == (GPU_FREE if has_affinity else None)


def test_gpu_worker_asks_for_its_gpus_and_its_product_and_tolerates_the_gpu_taint() -> None:
    pod = build(resources={"cpu": "8", "memory": "64Gi", "gpus": {"count": 4, "product": fx.A100}})

    assert trainer(pod)["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi", fx.GPU: 4},
        "limits": {"memory": "64Gi", fx.GPU: 4},
    }
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": fx.A100}
    assert pod["spec"]["tolerations"] == [GPU_TOLERATION]


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"resources": {"gpus": {"count": 8}}}, id="gpu-container"),
        pytest.param({"sklearn": fx.sklearn_spec(), "output": IRIS_OUTPUT}, id="sklearn"),
    ],
)
def test_kiln_never_sets_cuda_visible_devices(spec: Object) -> None:
    assert "CUDA_VISIBLE_DEVICES" not in env_names(build(**spec))


# -- the torchrun environment ---------------------------------------------------------------------


@pytest.mark.parametrize("rank", [0, 3])
def test_every_rank_gets_the_rendezvous_and_its_own_rank(rank: int) -> None:
    variables = env(build(rank, attempt=2, name="bert", workers=4))

    assert {key: variables[key] for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")} == {
        "MASTER_ADDR": "bert-worker-0.bert",
        "MASTER_PORT": "29500",
        "WORLD_SIZE": "4",
        "RANK": str(rank),
        "LOCAL_RANK": "0",
    }
    assert variables["NODE_RANK"] == str(rank)
    assert variables["KILN_ATTEMPT"] == "2"
    assert variables["KILN_TRAINING_JOB"] == "bert"
    assert variables["KILN_TRAINING_JOB_UID"] == fx.UID
    assert variables["KILN_RESULT_FILE"] == "/var/run/kiln/output/result.json"


def test_the_namespace_comes_from_the_downward_api() -> None:
    [namespace] = [v for v in trainer(build())["env"] if v["name"] == "KILN_NAMESPACE"]

    assert namespace == {"name": "KILN_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}


def test_a_users_master_port_is_used_everywhere_and_set_once() -> None:
    one = fx.job(
        workers=2,
        container={"image": "registry.example/t:1", "env": [{"name": "MASTER_PORT", "value": "23456"}]},
    )
    pod = workers.worker_pod(one, 1, 0, workers.placement(one.spec, False), IMAGE)

    assert env_names(pod).count("MASTER_PORT") == 1
    assert env(pod)["MASTER_PORT"] == "23456"
    assert trainer(pod)["ports"] == [{"name": "rendezvous", "containerPort": 23456, "protocol": "TCP"}]
    assert workers.headless_service(one)["spec"]["ports"][0]["port"] == 23456


def test_user_variables_come_after_kilns_and_win_a_clash() -> None:
    user = [
        {"name": "NCCL_DEBUG", "value": "INFO"},
        {"name": "RANK", "value": "7"},
        {"name": "DATA", "value": "$(MASTER_ADDR):/data"},
    ]
    pod = build(container={"image": "registry.example/t:1", "env": user})
    names = env_names(pod)

    assert names[-3:] == ["NCCL_DEBUG", "RANK", "DATA"]
    assert names.count("RANK") == 1
    assert env(pod)["RANK"] == "7"
    assert names.index("MASTER_ADDR") < names.index("DATA")


def test_elastic_jobs_tell_torchrun_their_bounds() -> None:
    variables = env(build(workers=3, elastic={"minWorkers": 2, "maxWorkers": 6, "maxRestarts": 5}))

    assert variables["PET_NNODES"] == "2:6"
    assert variables["PET_MAX_RESTARTS"] == "5"
    assert (variables["KILN_MIN_WORKERS"], variables["KILN_MAX_WORKERS"]) == ("2", "6")
    assert variables["WORLD_SIZE"] == "3"


def test_a_fixed_size_job_gets_no_elastic_variables() -> None:
    assert not [name for name in env_names(build(workers=2)) if name.startswith("PET_")]


def test_code_annotations_reach_the_trainer() -> None:
    variables = env(
        build(
            annotations={
                "kiln.dev/code-repository": "https://git.example/ml/resnet",
                "kiln.dev/code-commit": "4f2a9c1",
            }
        )
    )

    assert variables["KILN_CODE_REPOSITORY"] == "https://git.example/ml/resnet"
    assert variables["KILN_CODE_COMMIT"] == "4f2a9c1"


# -- the pod --------------------------------------------------------------------------------------


def test_a_worker_has_a_stable_dns_name_and_never_restarts_in_place() -> None:
    pod = build(2, 1, name="bert", workers=4)

    assert pod["metadata"]["name"] == "bert-worker-2"
    assert pod["metadata"]["namespace"] == fx.NAMESPACE
    assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == ("bert-worker-2", "bert")
    assert pod["spec"]["restartPolicy"] == "Never"
    assert trainer(pod)["terminationMessagePath"] == "/var/run/kiln/output/result.json"
    assert trainer(pod)["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": "kiln-output", "mountPath": "/var/run/kiln/output"} in trainer(pod)["volumeMounts"]


def test_a_worker_is_labelled_with_its_rank_and_attempt_and_owned_by_the_job() -> None:
    pod = build(3, 2, name="bert", workers=4)

    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "kiln",
        "kiln.dev/trainingjob": "bert",
        "kiln.dev/rank": "3",
        "kiln.dev/attempt": "2",
    }
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kiln.dev/v1alpha1",
            "kind": "TrainingJob",
            "name": "bert",
            "uid": fx.UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_a_users_container_runs_as_written() -> None:
    pod = build(
        container={
            "image": "registry.example/t:2",
            "args": ["--epochs", "10"],
            "workingDir": "/workspace",
        },
        priorityClassName="research-high",
    )

    assert trainer(pod)["image"] == "registry.example/t:2"
    assert "command" not in trainer(pod)
    assert trainer(pod)["args"] == ["--epochs", "10"]
    assert trainer(pod)["workingDir"] == "/workspace"
    assert pod["spec"]["priorityClassName"] == "research-high"
    assert pod["spec"]["serviceAccountName"] == "resnet-workers"


@pytest.mark.parametrize(
    ("spec", "account"),
    [
        pytest.param({}, "resnet-workers", id="container-job-as-its-own-account"),
        pytest.param({"sklearn": fx.sklearn_spec()}, "kiln-trainer", id="sklearn-job"),
        pytest.param({"sklearn": fx.sklearn_spec(), "serviceAccountName": "ml-bot"}, "ml-bot", id="users-account"),
    ],
)
def test_service_account(spec: Object, account: str) -> None:
    assert build(**spec)["spec"]["serviceAccountName"] == account


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({}, id="container-job"),
        pytest.param({"serviceAccountName": "ml-bot"}, id="container-as-users-account"),
        pytest.param({"sklearn": fx.sklearn_spec()}, id="sklearn-job"),
    ],
)
def test_every_worker_keeps_its_token_to_report_progress(spec: Object) -> None:
    assert build(**spec)["spec"]["automountServiceAccountToken"] is True


def test_workers_see_their_preempted_annotation_in_a_downward_api_file() -> None:
    pod = build()

    items = [{"path": "preempted", "fieldRef": {"fieldPath": "metadata.annotations['kiln.dev/preempted']"}}]
    assert {"name": "kiln-podinfo", "downwardAPI": {"items": items}} in pod["spec"]["volumes"]
    mount = {"name": "kiln-podinfo", "mountPath": "/var/run/kiln/podinfo", "readOnly": True}
    assert mount in trainer(pod)["volumeMounts"]
    assert env(pod)["KILN_PREEMPTED_FILE"] == "/var/run/kiln/podinfo/preempted"


def test_workers_learn_their_pods_name_and_namespace_from_the_downward_api() -> None:
    env = {variable["name"]: variable for variable in trainer(build())["env"]}

    assert env["KILN_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["KILN_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


@pytest.mark.parametrize(
    ("spec", "pods"),
    [
        pytest.param({"workers": 2}, ["bert-worker-0", "bert-worker-1"], id="its-workers"),
        pytest.param(
            {"workers": 2, "elastic": {"minWorkers": 2, "maxWorkers": 3}},
            ["bert-worker-0", "bert-worker-1", "bert-worker-2"],
            id="elastic-up-to-its-maximum",
        ),
    ],
)
def test_the_workers_may_patch_only_their_own_pods(spec: Object, pods: list[str]) -> None:
    account, role, binding = workers.worker_access(fx.job(name="bert", **spec))

    assert (account["kind"], role["kind"], binding["kind"]) == ("ServiceAccount", "Role", "RoleBinding")
    assert {obj["metadata"]["name"] for obj in (account, role, binding)} == {"bert-workers"}
    assert {obj["metadata"]["ownerReferences"][0]["uid"] for obj in (account, role, binding)} == {fx.UID}
    own_pods = {"apiGroups": [""], "resources": ["pods"], "resourceNames": pods, "verbs": ["get", "patch"]}
    assert role["rules"] == [own_pods]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bert-workers"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bert-workers", "namespace": fx.NAMESPACE}]


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({}, id="container-job"),
        pytest.param({"sklearn": fx.sklearn_spec(), "output": IRIS_OUTPUT}, id="sklearn-job"),
        pytest.param({"workers": 4, "resources": {"gpus": {"count": 8}}}, id="distributed-gpu-job"),
    ],
)
def test_a_worker_meets_the_restricted_pod_security_profile(spec: Object) -> None:
    pod = build(**spec)
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["runAsGroup"] == security["fsGroup"] == 65532
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    container = trainer(pod)["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in container
    # Restricted allows only these volume types; none is a hostPath.
    allowed = {"emptyDir", "persistentVolumeClaim", "configMap", "secret", "projected", "downwardAPI"}
    for volume in pod["spec"]["volumes"]:
        assert set(volume) - {"name"} <= allowed
    mounts = {mount["mountPath"]: mount["name"] for mount in trainer(pod)["volumeMounts"]}
    assert {"name": mounts[env(pod)["TMPDIR"]], "emptyDir": {}} in pod["spec"]["volumes"]


@pytest.mark.parametrize(("workers", "shm"), [(1, False), (2, True)])
def test_distributed_workers_get_shared_memory(workers: int, shm: bool) -> None:
    pod = build(workers=workers)
    mounts = {mount["mountPath"]: mount["name"] for mount in trainer(pod)["volumeMounts"]}
    assert ("/dev/shm" in mounts) is shm
    if shm:
        assert {"name": mounts["/dev/shm"], "emptyDir": {"medium": "Memory"}} in pod["spec"]["volumes"]


@pytest.mark.parametrize(
    ("checkpoint", "claim"),
    [
        pytest.param({"size": "50Gi"}, "resnet-checkpoint", id="kiln-made-claim"),
        pytest.param({"claimName": "shared-ckpt", "mountPath": "/ckpt"}, "shared-ckpt", id="users-claim"),
    ],
)
def test_the_checkpoint_volume_is_mounted_and_announced(checkpoint: Object, claim: str) -> None:
    pod = build(checkpoint=checkpoint)
    mount_path = checkpoint.get("mountPath", "/var/run/kiln/checkpoints")

    assert {"name": "checkpoint", "persistentVolumeClaim": {"claimName": claim}} in pod["spec"]["volumes"]
    assert {"name": "checkpoint", "mountPath": mount_path} in trainer(pod)["volumeMounts"]
    assert env(pod)["KILN_CHECKPOINT_DIR"] == mount_path


def test_a_checkpoint_in_an_object_store_is_staged_in_an_empty_dir_and_named_per_job() -> None:
    checkpoint = {"uri": "s3://training/checkpoints/", "credentialsSecret": "ckpt-s3"}
    pod = build(checkpoint=checkpoint)

    assert {"name": "checkpoint", "emptyDir": {}} in pod["spec"]["volumes"]
    assert env(pod)["KILN_CHECKPOINT_DIR"] == "/var/run/kiln/checkpoints"
    assert env(pod)["KILN_CHECKPOINT_URI"] == "s3://training/checkpoints/resnet"
    assert trainer(pod)["envFrom"] == [{"secretRef": {"name": "ckpt-s3"}}]
    assert workers.checkpoint_pvc(fx.job(checkpoint=checkpoint)) is None


def test_a_job_without_checkpoint_has_no_checkpoint_dir() -> None:
    pod = build()

    assert "KILN_CHECKPOINT_DIR" not in env_names(pod)
    assert [volume["name"] for volume in pod["spec"]["volumes"]] == ["kiln-output", "tmp", "kiln-podinfo"]


@pytest.mark.parametrize(
    ("scheduler", "scheduler_name", "annotations", "group_label"),
    [
        pytest.param("builtin", None, None, None, id="builtin"),
        pytest.param("volcano", "volcano", {"scheduling.k8s.io/group-name": "bert"}, None, id="volcano"),
        pytest.param("coscheduling", None, None, "bert", id="coscheduling"),
    ],
)
def test_gang_scheduler_marks(
    scheduler: str, scheduler_name: str | None, annotations: Object | None, group_label: str | None
) -> None:
    pod = build(name="bert", workers=2, gangScheduling={"scheduler": scheduler})

    assert pod["spec"].get("schedulerName") == scheduler_name
    assert pod["metadata"].get("annotations") == annotations
    assert pod["metadata"]["labels"].get("scheduling.x-k8s.io/pod-group") == group_label


def test_kueue_workers_are_one_gated_pod_group_per_attempt_in_the_local_queue() -> None:
    kueue = {"scheduler": "kueue", "queueName": "team-a"}

    first, restarted = (
        build(rank=1, attempt=attempt, name="bert", workers=4, gangScheduling=kueue) for attempt in (0, 2)
    )

    labels = first["metadata"]["labels"]
    assert (labels["kueue.x-k8s.io/queue-name"], labels["kueue.x-k8s.io/pod-group-name"]) == ("team-a", "bert-0")
    assert first["metadata"]["annotations"] == {"kueue.x-k8s.io/pod-group-total-count": "4"}
    assert first["spec"]["schedulingGates"] == [{"name": "kueue.x-k8s.io/admission"}]
    assert "schedulerName" not in first["spec"]
    assert restarted["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] == "bert-2"
    assert workers.pod_group(fx.job(name="bert", workers=4, gangScheduling=kueue)) is None


@pytest.mark.parametrize("scheduler", ["builtin", "volcano", "coscheduling"])
def test_only_kueue_workers_are_gated(scheduler: str) -> None:
    pod = build(name="bert", workers=2, gangScheduling={"scheduler": scheduler})

    assert "schedulingGates" not in pod["spec"]
    assert not any(label.startswith("kueue.x-k8s.io/") for label in pod["metadata"]["labels"])


# -- the sklearn trainer --------------------------------------------------------------------------


def test_an_sklearn_worker_runs_kiln_trainer_with_its_spec_output_and_artifact_location() -> None:
    sklearn = fx.sklearn_spec(testSize=0.25, randomSeed=7)
    output = {**IRIS_OUTPUT, "gates": [{"metric": "accuracy", "min": 0.9}]}
    pod = build(name="iris-rf", sklearn=sklearn, output=output)
    variables = env(pod)

    assert trainer(pod)["image"] == IMAGE
    assert trainer(pod)["command"] == ["kiln-trainer"]
    assert json.loads(variables["KILN_SKLEARN"]) == {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "params": {"n_estimators": 200},
        "dataset": {"builtin": "iris"},
        "testSize": 0.25,
        "randomSeed": 7,
    }
    assert json.loads(variables["KILN_OUTPUT"])["modelName"] == "iris"
    assert json.loads(variables["KILN_OUTPUT"])["gates"] == [{"metric": "accuracy", "min": 0.9, "higherIsBetter": True}]
    assert variables["KILN_ARTIFACT_URI"] == "pvc://kiln-models/iris/1.2.0/model.skops"
    assert variables["KILN_ARTIFACT_PATH"] == "/var/run/kiln/models/iris/1.2.0/model.skops"
    assert {"name": "model-store", "persistentVolumeClaim": {"claimName": "kiln-models"}} in pod["spec"]["volumes"]
    assert {"name": "model-store", "mountPath": "/var/run/kiln/models"} in trainer(pod)["volumeMounts"]


def test_an_sklearn_worker_writes_to_the_model_store_the_output_names() -> None:
    output = {**IRIS_OUTPUT, "store": {"claimName": "team-models"}}
    pod = build(sklearn=fx.sklearn_spec(), output=output)

    assert env(pod)["KILN_ARTIFACT_URI"] == "pvc://team-models/iris/1.2.0/model.skops"
    assert {"name": "model-store", "persistentVolumeClaim": {"claimName": "team-models"}} in pod["spec"]["volumes"]


def test_an_sklearn_worker_uploading_to_an_object_store_mounts_no_claim_and_gets_its_credentials() -> None:
    store = {"uri": "s3://models/kiln", "credentialsSecret": "s3-credentials"}
    pod = build(sklearn=fx.sklearn_spec(), output={**IRIS_OUTPUT, "store": store})

    assert env(pod)["KILN_ARTIFACT_URI"] == "s3://models/kiln/iris/1.2.0/model.skops"
    assert "KILN_ARTIFACT_PATH" not in env(pod)
    assert "model-store" not in [volume["name"] for volume in pod["spec"]["volumes"]]
    assert trainer(pod)["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    web_identity = build(sklearn=fx.sklearn_spec(), output={**IRIS_OUTPUT, "store": {"uri": "s3://models/kiln"}})
    assert "envFrom" not in trainer(web_identity)


def test_an_sklearn_worker_without_output_has_no_model_store() -> None:
    pod = build(sklearn=fx.sklearn_spec())

    assert not {"KILN_OUTPUT", "KILN_ARTIFACT_URI", "KILN_ARTIFACT_PATH"} & set(env_names(pod))
    assert "model-store" not in [volume["name"] for volume in pod["spec"]["volumes"]]


@pytest.mark.parametrize(
    ("dataset", "path", "volume"),
    [
        pytest.param(
            {"uri": "pvc://datasets/tabular/churn.parquet"},
            "/var/run/kiln/datasets/datasets/tabular/churn.parquet",
            {"name": "dataset", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
            id="pvc-dataset-is-mounted-read-only",
        ),
        pytest.param({"uri": "file:///data/churn.csv"}, None, None, id="file-dataset-is-not-mounted"),
        pytest.param({"builtin": "wine"}, None, None, id="builtin-dataset-is-not-mounted"),
    ],
)
def test_dataset(dataset: Object, path: str | None, volume: Object | None) -> None:
    sklearn = fx.sklearn_spec(dataset=dataset, **({"targetColumn": "churned"} if "uri" in dataset else {}))
    pod = build(sklearn=sklearn)
    volumes = [v for v in pod["spec"]["volumes"] if v["name"] == "dataset"]
    mounts = [m for m in trainer(pod)["volumeMounts"] if m["name"] == "dataset"]

    assert env(pod).get("KILN_DATASET_PATH") == path
    assert volumes == ([volume] if volume else [])
    assert mounts == (
        [{"name": "dataset", "mountPath": "/var/run/kiln/datasets/datasets", "readOnly": True}] if volume else []
    )


# -- the other children ---------------------------------------------------------------------------


def test_the_headless_service_publishes_every_worker_before_it_is_ready() -> None:
    service = workers.headless_service(fx.job(name="bert", workers=4))

    assert service["metadata"]["name"] == "bert"
    assert service["metadata"]["ownerReferences"][0]["uid"] == fx.UID
    assert service["spec"] == {
        "clusterIP": "None",
        "selector": {"kiln.dev/trainingjob": "bert"},
        "publishNotReadyAddresses": True,
        "ports": [{"name": "rendezvous", "port": 29500, "targetPort": 29500, "protocol": "TCP"}],
    }


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [
        pytest.param(None, None, id="no-checkpoint"),
        pytest.param({"claimName": "shared-ckpt"}, None, id="users-claim-is-not-created"),
        pytest.param(
            {"size": "50Gi"},
            {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "50Gi"}}},
            id="sized-claim",
        ),
        pytest.param(
            {"size": "1Ti", "storageClassName": "fast-nfs"},
            {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Ti"}},
                "storageClassName": "fast-nfs",
            },
            id="sized-claim-with-class",
        ),
    ],
)
def test_checkpoint_pvc(checkpoint: Object | None, expected: Object | None) -> None:
    spec = {"checkpoint": checkpoint} if checkpoint else {}
    claim = workers.checkpoint_pvc(fx.job(name="bert", **spec))

    if expected is None:
        assert claim is None
        return
    assert claim is not None
    assert claim["metadata"]["name"] == "bert-checkpoint"
    assert claim["metadata"]["ownerReferences"][0]["name"] == "bert"
    assert claim["spec"] == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"output": IRIS_OUTPUT}, None, id="container-job-writes-its-own-artifact"),
        pytest.param({"sklearn": fx.sklearn_spec()}, None, id="sklearn-without-output"),
        pytest.param(
            {"sklearn": fx.sklearn_spec(), "output": {**IRIS_OUTPUT, "store": {"uri": "s3://models/kiln"}}},
            None,
            id="object-store",
        ),
        pytest.param(
            {"sklearn": fx.sklearn_spec(), "output": IRIS_OUTPUT},
            ("kiln-models", {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}}),
            id="default-store",
        ),
        pytest.param(
            {
                "sklearn": fx.sklearn_spec(),
                "output": {
                    **IRIS_OUTPUT,
                    "store": {"claimName": "team-models", "size": "200Gi", "storageClassName": "nfs"},
                },
            },
            (
                "team-models",
                {
                    "accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "200Gi"}},
                    "storageClassName": "nfs",
                },
            ),
            id="named-store",
        ),
    ],
)
def test_model_store_pvc_is_shared_and_owned_by_no_job(spec: Object, expected: tuple[str, Object] | None) -> None:
    claim = workers.model_store_pvc(fx.job(**spec))

    if expected is None:
        assert claim is None
        return
    assert claim is not None
    assert claim["metadata"] == {
        "name": expected[0],
        "namespace": fx.NAMESPACE,
        "labels": {"app.kubernetes.io/managed-by": "kiln"},
    }
    assert claim["spec"] == expected[1]


@pytest.mark.parametrize(
    ("spec", "api_version", "group_spec"),
    [
        pytest.param({"workers": 4}, None, None, id="builtin-has-none"),
        pytest.param(
            {"workers": 4, "gangScheduling": {"scheduler": "volcano"}},
            "scheduling.volcano.sh/v1beta1",
            {"minMember": 4},
            id="volcano",
        ),
        pytest.param(
            {"workers": 4, "gangScheduling": {"scheduler": "coscheduling", "timeoutSeconds": 120}},
            "scheduling.x-k8s.io/v1alpha1",
            {"minMember": 4, "scheduleTimeoutSeconds": 120},
            id="coscheduling",
        ),
        pytest.param(
            {
                "workers": 6,
                "elastic": {"minWorkers": 2, "maxWorkers": 8},
                "gangScheduling": {"scheduler": "volcano"},
                "priorityClassName": "research-high",
            },
            "scheduling.volcano.sh/v1beta1",
            {"minMember": 2, "priorityClassName": "research-high"},
            id="elastic-needs-only-its-minimum",
        ),
    ],
)
def test_pod_group(spec: Object, api_version: str | None, group_spec: Object | None) -> None:
    group = workers.pod_group(fx.job(name="bert", **spec))

    if api_version is None:
        assert group is None
        return
    assert group is not None
    assert (group["apiVersion"], group["kind"], group["metadata"]["name"]) == (api_version, "PodGroup", "bert")
    assert group["metadata"]["ownerReferences"][0]["uid"] == fx.UID
    assert group["spec"] == group_spec


def test_the_trainer_account_may_register_model_versions_in_its_namespace_only() -> None:
    account, role, binding = workers.trainer_account("ml")

    assert (account["kind"], role["kind"], binding["kind"]) == ("ServiceAccount", "Role", "RoleBinding")
    assert {obj["metadata"]["name"] for obj in (account, role, binding)} == {"kiln-trainer"}
    assert {obj["metadata"]["namespace"] for obj in (account, role, binding)} == {"ml"}
    assert role["rules"] == [
        {"apiGroups": ["kiln.dev"], "resources": ["modelversions"], "verbs": ["create", "get", "list"]},
        {"apiGroups": ["kiln.dev"], "resources": ["trainingjobs"], "verbs": ["get"]},
    ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kiln-trainer"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kiln-trainer", "namespace": "ml"}]
