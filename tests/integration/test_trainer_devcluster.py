"""`kiln-trainer` for real against the dev cluster, with no operator running: as a subprocess with
the environment the operator gives it, and as a pod, whose termination message carries its result.

Given a TrainingJob object (so the ModelVersion's ownerReference names a real uid), when the trainer
runs, then the ModelVersion it registers has the digest of the artifact file, the metrics of the
seeded split and fit recomputed here, its job as owner, its lineage and a baseline.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kiln_cluster import GROUP, VERSION, Kiln, cluster_with_crds
from polling import eventually
from sklearn import datasets as sk_datasets
from sklearn import metrics as sk_metrics
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

from kiln.api import modelversion, trainingjob
from kiln.training import workers

TRAINER = str(pathlib.Path(sys.executable).parent / "kiln-trainer")
SEED = 3
WAIT = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiln]:
    """A dev cluster with Kiln's CRDs, and no operator: the trainer alone acts."""
    with cluster_with_crds(tmp_path_factory.mktemp("trainer")) as setup:
        yield setup


@pytest.fixture
def namespace(cluster: Kiln) -> str:
    name = f"trainer-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    return name


def sklearn_spec(**overrides: Any) -> dict[str, Any]:
    return {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "params": {"n_estimators": 20},
        "dataset": {"builtin": "iris"},
        "testSize": 0.3,
        "randomSeed": SEED,
        **overrides,
    }


def create_job(cluster: Kiln, namespace: str, name: str, sklearn: dict[str, Any], output: dict[str, Any]) -> str:
    """The TrainingJob object, as a user would apply it; its uid."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {"sklearn": sklearn, "output": output},
    }
    created = cluster.api().create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", body)
    return str(created["metadata"]["uid"])


def trainer_env(namespace: str, job: str, uid: str, sklearn: dict[str, Any], output: dict[str, Any]) -> dict[str, str]:
    """The contract's variables, less the paths, which differ between a process and a pod."""
    return {
        "KILN_SKLEARN": json.dumps(sklearn),
        "KILN_OUTPUT": json.dumps(output),
        "KILN_TRAINING_JOB": job,
        "KILN_TRAINING_JOB_UID": uid,
        "KILN_NAMESPACE": namespace,
        "KILN_ARTIFACT_URI": f"pvc://kiln-models/{output['modelName']}/{output['version']}/model.skops",
    }


def run_trainer(cluster: Kiln, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRAINER], env={**cluster.env, **env}, capture_output=True, text=True, timeout=120, check=False
    )


def expected_iris_metrics() -> dict[str, float]:
    features, target = sk_datasets.load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=0.3, random_state=SEED, stratify=target
    )
    predicted = RandomForestClassifier(n_estimators=20, random_state=SEED).fit(x_train, y_train).predict(x_test)
    return {
        "accuracy": sk_metrics.accuracy_score(y_test, predicted),
        "f1_macro": sk_metrics.f1_score(y_test, predicted, average="macro"),
        "precision_macro": sk_metrics.precision_score(y_test, predicted, average="macro"),
        "recall_macro": sk_metrics.recall_score(y_test, predicted, average="macro"),
    }


def model_version(cluster: Kiln, namespace: str, name: str) -> tuple[dict[str, Any], modelversion.ModelVersion]:
    stored = cluster.model_version(namespace, name)
    return stored, modelversion.ModelVersion.model_validate(stored)


def test_the_trainer_registers_iris_with_the_digest_metrics_owner_and_lineage(cluster: Kiln, namespace: str) -> None:
    output = {"modelName": "iris", "version": "1.0.0", "gates": [{"metric": "accuracy", "min": 0.8}]}
    uid = create_job(cluster, namespace, "train-iris", sklearn_spec(), output)
    artifact_file = cluster.pvc_root / namespace / "kiln-models" / "iris" / "1.0.0" / "model.skops"
    result_file = cluster.pvc_root.parent / f"{namespace}-result.json"
    env = {
        **trainer_env(namespace, "train-iris", uid, sklearn_spec(), output),
        "KILN_ARTIFACT_PATH": str(artifact_file),
        "KILN_RESULT_FILE": str(result_file),
        "KILN_CODE_REPOSITORY": "https://git.example/ml/iris",
        "KILN_CODE_COMMIT": "0123abcd",
    }

    finished = run_trainer(cluster, env)

    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert f"kiln-trainer: registered modelversion {namespace}/iris-1.0.0" in finished.stdout.splitlines()
    stored, version = model_version(cluster, namespace, "iris-1.0.0")
    assert version.spec.artifact.sha256 == hashlib.sha256(artifact_file.read_bytes()).hexdigest()
    assert version.spec.metrics == pytest.approx(expected_iris_metrics(), abs=1e-12)
    (owner,) = stored["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("TrainingJob", "train-iris", uid, True)
    assert stored["metadata"]["labels"]["kiln.dev/trainingjob"] == "train-iris"
    lineage = version.spec.lineage
    assert (lineage.training_job, lineage.code) == (
        "train-iris",
        modelversion.CodeRef(repository="https://git.example/ml/iris", commit="0123abcd"),
    )
    assert lineage.dataset is not None
    assert lineage.dataset.uri == "sklearn://iris"
    assert lineage.parameters["params.n_estimators"] == "20"
    assert version.spec.baseline is not None
    assert version.spec.baseline.sample_size == 105  # 150 rows less the 30% held out
    assert [sum(feature.counts) for feature in version.spec.baseline.features] == [105] * 4
    assert [gate.metric for gate in version.spec.gates] == ["accuracy"]
    result = trainingjob.TrainingResult.model_validate_json(result_file.read_text())
    assert (result.model_version, result.artifact, result.metrics) == (
        "iris-1.0.0",
        version.spec.artifact,
        version.spec.metrics,
    )


def test_a_csv_on_a_claim_reruns_idempotently_and_a_different_model_for_the_same_version_fails(
    cluster: Kiln, namespace: str
) -> None:
    iris = sk_datasets.load_iris()
    dataset = cluster.pvc_root / namespace / "datasets" / "iris.csv"
    dataset.parent.mkdir(parents=True)
    rows = [
        ",".join([*(f"{value:g}" for value in row), str(label)])
        for row, label in zip(iris.data, iris.target, strict=True)
    ]
    dataset.write_text("\n".join([",".join([*iris.feature_names, "target"]), *rows]) + "\n")
    sklearn = sklearn_spec(dataset={"uri": "pvc://datasets/iris.csv"}, targetColumn="target")
    output = {"modelName": "iris-csv", "version": "1.0.0"}
    uid = create_job(cluster, namespace, "train-csv", sklearn, output)
    artifact_file = cluster.pvc_root / namespace / "kiln-models" / "iris-csv" / "1.0.0" / "model.skops"
    env = {
        **trainer_env(namespace, "train-csv", uid, sklearn, output),
        "KILN_ARTIFACT_PATH": str(artifact_file),
        "KILN_DATASET_PATH": str(dataset),
    }

    first = run_trainer(cluster, env)
    again = run_trainer(cluster, env)
    other = run_trainer(cluster, {**env, "KILN_SKLEARN": json.dumps({**sklearn, "params": {"n_estimators": 3}})})

    assert first.returncode == 0, first.stdout + first.stderr
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"modelversion {namespace}/iris-csv-1.0.0 was already registered with this artifact" in again.stdout
    _, version = model_version(cluster, namespace, "iris-csv-1.0.0")
    assert version.spec.lineage.dataset == modelversion.DatasetRef(
        uri="pvc://datasets/iris.csv", sha256=hashlib.sha256(dataset.read_bytes()).hexdigest()
    )
    assert other.returncode == 1
    assert other.stderr.splitlines()[-1].startswith(
        f"kiln-trainer: failed: modelversion {namespace}/iris-csv-1.0.0 already exists with artifact sha256 "
        f"{version.spec.artifact.sha256}"
    )


MODEL_STORE = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "kiln-models"},
    "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
}


def trainer_pod(name: str, env: dict[str, str]) -> dict[str, Any]:
    """The trainer's pod as the operator would build it: its service account, the result file in an
    emptyDir that is also the termination message path, the model store claim mounted, the namespace
    from the downward API."""
    variables = [{"name": key, "value": value} for key, value in env.items() if key != "KILN_NAMESPACE"]
    variables.append({"name": "KILN_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": workers.TRAINER_ACCOUNT,
            "volumes": [
                {"name": "output", "emptyDir": {}},
                {"name": "models", "persistentVolumeClaim": {"claimName": "kiln-models"}},
            ],
            "containers": [
                {
                    "name": "trainer",
                    "image": "kiln:dev",
                    "command": ["kiln-trainer"],
                    "env": variables,
                    "volumeMounts": [
                        {"name": "output", "mountPath": "/var/run/kiln/output"},
                        {"name": "models", "mountPath": "/var/run/kiln/models"},
                    ],
                    "terminationMessagePath": "/var/run/kiln/output/result.json",
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
        },
    }


def terminated(cluster: Kiln, namespace: str, name: str) -> Any:
    def check() -> Any:
        found = cluster.core().read_namespaced_pod(name, namespace)
        return found if found.status.phase in ("Succeeded", "Failed") else None

    (status,) = eventually(check, f"pod {name} to finish", WAIT).status.container_statuses
    return status.state.terminated


def test_in_a_pod_the_trainer_registers_with_its_service_account_and_its_result_is_the_termination_message(
    cluster: Kiln, namespace: str
) -> None:
    output = {"modelName": "iris", "version": "2.0.0"}
    uid = create_job(cluster, namespace, "train-in-pod", sklearn_spec(), output)
    env = {
        **trainer_env(namespace, "train-in-pod", uid, sklearn_spec(), output),
        "KILN_ARTIFACT_PATH": "/var/run/kiln/models/iris/2.0.0/model.skops",
        "KILN_RESULT_FILE": "/var/run/kiln/output/result.json",
    }
    bad = {**env, "KILN_SKLEARN": json.dumps(sklearn_spec(estimator="sklearn.utils.Bunch"))}
    cluster.apply(namespace, MODEL_STORE)
    for account in workers.trainer_account(namespace):  # the ServiceAccount, Role and RoleBinding the operator makes
        cluster.apply(namespace, account)
    cluster.core().create_namespaced_pod(namespace, trainer_pod("train-in-pod", env))
    cluster.core().create_namespaced_pod(namespace, trainer_pod("train-bad", bad))

    succeeded = terminated(cluster, namespace, "train-in-pod")
    failed = terminated(cluster, namespace, "train-bad")

    assert succeeded.exit_code == 0
    result = trainingjob.TrainingResult.model_validate_json(succeeded.message)
    _, version = model_version(cluster, namespace, "iris-2.0.0")
    artifact_file = cluster.pvc_root / namespace / "kiln-models" / "iris" / "2.0.0" / "model.skops"
    assert result.model_version == "iris-2.0.0"
    assert result.artifact == version.spec.artifact
    assert version.spec.artifact.sha256 == hashlib.sha256(artifact_file.read_bytes()).hexdigest()
    assert version.spec.metrics == pytest.approx(expected_iris_metrics(), abs=1e-12)
    assert failed.exit_code == 1
    assert failed.message.splitlines()[-1] == (
        "kiln-trainer: failed: sklearn.estimator: sklearn.utils.Bunch is not a scikit-learn estimator class"
    )
