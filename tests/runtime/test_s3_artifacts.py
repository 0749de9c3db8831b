"""s3:// artifacts end to end, as processes: kiln-trainer uploads to a real S3 protocol server (moto's
server mode on loopback), the registry (`kiln run` against a dev cluster) verifies the object by its
digest, and kiln-server downloads it into its cache and serves it.

Given a TrainingJob whose output.store.uri names an S3 prefix, when its trainer runs, then the
ModelVersion it registers points at the uploaded object, the registry marks it Validated with its
digest checked, `kiln models` and `kiln lineage` show its URI and size, and kiln-server serves the
model it downloaded, from its cache once it has it; a ModelDeployment serves it too, its pods
given the credentials from a Secret through spec.server.env, and a restarted container reads it from
its emptyDir instead of downloading it again. A tampered object (same key, other bytes) is
refused by the registry and by the server; missing credentials and a wrong endpoint are named. And
the whole path on the dev cluster: a TrainingJob's trainer pod, its credentials from
output.store.credentialsSecret, uploads what a ModelDeployment then serves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import s3_server
from kiln_cluster import GROUP, VERSION, Kiln, condition, operated_cluster
from polling import eventually
from server_process import RunningServer, kiln_server
from test_training import wait_for_phase

TRAINER = str(pathlib.Path(sys.executable).with_name("kiln-trainer"))
NAMESPACE = "ml"
BUCKET = "models"
PREFIX = f"s3://{BUCKET}/kiln"
SKLEARN = {
    "estimator": "sklearn.linear_model.LogisticRegression",
    "params": {"max_iter": 500},
    "dataset": {"builtin": "iris"},
    "randomSeed": 1,
}
SETOSA = [5.1, 3.5, 1.4, 0.2]


@dataclass
class World:
    kiln: Kiln
    s3: s3_server.S3Server
    root: pathlib.Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """An S3 server with a bucket, and a dev cluster whose operator reaches it by the AWS_* environment."""
    root = tmp_path_factory.mktemp("s3-artifacts")
    with s3_server.s3_server(root) as s3, operated_cluster(root, **s3.env()) as kiln:
        s3.create_bucket(BUCKET)
        kiln.kubectl("create", "namespace", NAMESPACE)
        yield World(kiln, s3, root)


def output(version: str) -> dict[str, Any]:
    return {
        "modelName": "iris",
        "version": version,
        "gates": [{"metric": "accuracy", "min": 0.8}],
        "store": {"uri": PREFIX},
    }


def suspended_job(world: World, name: str, version: str) -> str:
    """A TrainingJob the operator leaves alone (its trainer runs here instead); its uid."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {"sklearn": SKLEARN, "output": output(version), "suspend": True},
    }
    created = world.kiln.api().create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "trainingjobs", body)
    return str(created["metadata"]["uid"])


def train(world: World, version: str, **aws: str) -> subprocess.CompletedProcess[str]:
    """kiln-trainer with the environment the operator gives a trainer pod, plus the AWS_* of `aws`."""
    job = f"train-iris-{version.replace('.', '-')}"
    env = {
        **world.kiln.env,
        **world.s3.env(),
        **aws,
        "KILN_SKLEARN": json.dumps(SKLEARN),
        "KILN_OUTPUT": json.dumps(output(version)),
        "KILN_TRAINING_JOB": job,
        "KILN_TRAINING_JOB_UID": suspended_job(world, job, version),
        "KILN_NAMESPACE": NAMESPACE,
    }
    return subprocess.run([TRAINER], env=env, capture_output=True, text=True, timeout=120, check=False)


def served_version(world: World, name: str) -> dict[str, Any]:
    """The ModelVersion as a serving pod is told it: what it is, without the cluster's bookkeeping."""
    stored = world.kiln.model_version(NAMESPACE, name)
    return {
        "apiVersion": stored["apiVersion"],
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": stored["spec"],
    }


def server_env(world: World, cache: pathlib.Path, **overrides: str) -> dict[str, str]:
    return {**world.s3.env(), "KILN_ARTIFACT_CACHE": str(cache), **overrides}


@pytest.fixture(scope="module")
def trained(world: World) -> dict[str, Any]:
    """The trainer has run for iris 1.0.0 and the registry has validated what it uploaded."""
    finished = train(world, "1.0.0")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    world.kiln.wait_for_phase(NAMESPACE, "iris-1.0.0", "Validated")
    return {"run": finished, "version": served_version(world, "iris-1.0.0")}


def test_the_trainer_uploads_and_the_registry_verifies_the_object(world: World, trained: dict[str, Any]) -> None:
    artifact = trained["version"]["spec"]["artifact"]
    uri = f"{PREFIX}/iris/1.0.0/model.skops"
    uploaded = world.s3.get(BUCKET, "kiln/iris/1.0.0/model.skops")
    assert f"kiln-trainer: uploaded {uri} (sha256 {artifact['sha256']}, {len(uploaded)} bytes)" in (
        trained["run"].stdout.splitlines()
    )
    assert artifact == {"uri": uri, "sha256": hashlib.sha256(uploaded).hexdigest(), "sizeBytes": len(uploaded)} | {
        "format": "skops"
    }
    verified = condition(world.kiln.status(NAMESPACE, "iris-1.0.0"), "ArtifactVerified")
    assert (verified["status"], verified["reason"]) == ("True", "DigestMatches")
    assert verified["message"] == f"{uri} has sha256 {artifact['sha256']} ({len(uploaded)} bytes)"


def test_kiln_models_and_lineage_show_the_uri_and_size(world: World, trained: dict[str, Any]) -> None:
    artifact = trained["version"]["spec"]["artifact"]
    size = f"{artifact['sizeBytes'] / 1024:.1f} KiB"
    listed = world.kiln.kiln("models", "-n", NAMESPACE).stdout
    row = next(line.split() for line in listed.splitlines() if " 1.0.0 " in line)
    assert row[-3:] == [*size.split(), artifact["uri"]]
    lineage = world.kiln.kiln("lineage", "mv/iris-1.0.0", "-n", NAMESPACE).stdout
    assert f"artifact {artifact['uri']} sha256:{artifact['sha256']} (skops, {size})" in lineage


def test_kiln_server_serves_the_model_it_downloaded_and_keeps_it_across_a_restart(
    world: World, trained: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    cache, version = tmp_path / "cache", trained["version"]
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": SETOSA}]}
    with kiln_server(tmp_path, [version], env=server_env(world, cache), through_env=True) as server:
        server.wait_ready()
        answer = server.infer(body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [0]
    digest = version["spec"]["artifact"]["sha256"]
    assert [path.name for path in cache.iterdir()] == [digest]

    # The container restarts over the same emptyDir, and the store is out of reach: the cached,
    # verified file is served.
    nowhere = f"http://127.0.0.1:{s3_server.free_port()}"
    with kiln_server(
        tmp_path, [version], env=server_env(world, cache, AWS_ENDPOINT_URL=nowhere), through_env=True
    ) as restarted:
        restarted.wait_ready()
        assert restarted.infer(body).json()["outputs"][0]["data"] == [0]


def test_a_model_deployment_serves_the_object_with_credentials_from_a_secret(
    world: World, trained: dict[str, Any]
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-credentials"},
        "data": {
            "AWS_ACCESS_KEY_ID": base64.b64encode(s3_server.ACCESS_KEY_ID.encode()).decode(),
            "AWS_SECRET_ACCESS_KEY": base64.b64encode(s3_server.SECRET_ACCESS_KEY.encode()).decode(),
        },
    }
    from_secret = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": key}}}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    env = [{"name": "AWS_ENDPOINT_URL", "value": world.s3.endpoint}, {"name": "AWS_REGION", "value": s3_server.REGION}]
    deployment = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {"model": "iris", "version": "1.0.0", "server": {"env": env + from_secret}},
    }
    world.kiln.apply(NAMESPACE, secret)
    world.kiln.apply(NAMESPACE, deployment)

    def healthy() -> dict[str, Any] | None:
        body = world.kiln.api().get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", "iris")
        status = body.get("status") or {}
        return status if status.get("phase") == "Healthy" and status.get("stableVersion") == "1.0.0" else None

    try:
        eventually(healthy, f"md/iris to serve 1.0.0 from {PREFIX} (see {world.kiln.operator_log})", 120)
    except AssertionError as error:
        pods = world.kiln.kubectl("describe", "pods", "-n", NAMESPACE, check=False).stdout
        raise AssertionError(f"{error}; the pods:\n{pods}") from None
    service = world.kiln.core().read_namespaced_service("iris", NAMESPACE)
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": SETOSA}]}
    answer = httpx.post(f"http://{service.spec.cluster_ip}:80/v2/models/iris/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [0]
    (pod,) = world.kiln.core().list_namespaced_pod(NAMESPACE, label_selector="kiln.dev/component=server").items
    (container,) = pod.spec.containers
    assert any(mount.mount_path == "/var/run/kiln/artifacts" for mount in container.volume_mounts)

    # The container dies and the kubelet starts it again over the same emptyDir: it loads the
    # verified file there and does not download the object again.
    downloads = downloads_of(world, "kiln/iris/1.0.0/model.skops")
    assert downloads >= 1  # this pod's download, at least
    os.kill(int(pod.status.container_statuses[0].container_id.removeprefix("kiln-process://")), signal.SIGKILL)

    def restarted_and_ready() -> bool:
        found = world.kiln.core().read_namespaced_pod(pod.metadata.name, NAMESPACE).status.container_statuses[0]
        return bool(found.restart_count >= 1 and found.ready)

    eventually(restarted_and_ready, "the server container to restart and be ready", 60)
    again = httpx.post(f"http://{service.spec.cluster_ip}:80/v2/models/iris/infer", json=body, timeout=10)
    assert again.json()["outputs"][0]["data"] == [0]
    assert downloads_of(world, "kiln/iris/1.0.0/model.skops") == downloads


def test_a_checkpoint_in_the_object_store_lets_a_trainer_on_another_node_resume(
    world: World, tmp_path: pathlib.Path
) -> None:
    uri = f"s3://{BUCKET}/checkpoints/train-iris-3-0-0"
    first_node, second_node = tmp_path / "first", tmp_path / "second"
    first_node.mkdir()
    second_node.mkdir()

    fitted = train(world, "3.0.0", KILN_CHECKPOINT_DIR=str(first_node), KILN_CHECKPOINT_URI=uri)
    resumed = train(world, "3.0.1", KILN_CHECKPOINT_DIR=str(second_node), KILN_CHECKPOINT_URI=uri)

    assert fitted.returncode == 0, fitted.stdout + fitted.stderr
    assert f"checkpointed the fitted estimator in {uri}" in fitted.stdout + fitted.stderr
    assert world.s3.get(BUCKET, "checkpoints/train-iris-3-0-0/trainer-estimator.skops")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from the checkpoint in {uri}: not fitting again" in resumed.stdout + resumed.stderr
    digests = [
        world.kiln.model_version(NAMESPACE, name)["spec"]["artifact"]["sha256"] for name in ("iris-3.0.0", "iris-3.0.1")
    ]
    assert digests[0] == digests[1], "the same estimator, not fitted again"


def test_a_training_job_on_the_cluster_uploads_and_a_deployment_serves_what_it_trained(world: World) -> None:
    """The whole path on the dev cluster: the operator's trainer pod (credentials from a Secret through
    output.store.credentialsSecret, no claim) uploads, the registry verifies, a ModelDeployment serves."""
    credentials = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "trainer-s3"},
        "stringData": world.s3.env(),
    }
    job = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": "train-on-cluster"},
        "spec": {
            "sklearn": SKLEARN,
            "output": {**output("2.0.0"), "store": {"uri": PREFIX, "credentialsSecret": "trainer-s3"}},
        },
    }
    world.kiln.apply(NAMESPACE, credentials)
    world.kiln.apply(NAMESPACE, job)

    finished = wait_for_phase(world.kiln, NAMESPACE, "train-on-cluster", "Succeeded", 120)
    world.kiln.wait_for_phase(NAMESPACE, "iris-2.0.0", "Validated")

    assert finished["modelVersion"] == "iris-2.0.0"
    artifact = world.kiln.model_version(NAMESPACE, "iris-2.0.0")["spec"]["artifact"]
    uploaded = world.s3.get(BUCKET, "kiln/iris/2.0.0/model.skops")
    assert artifact["uri"] == f"{PREFIX}/iris/2.0.0/model.skops"
    assert artifact["sha256"] == hashlib.sha256(uploaded).hexdigest()
    (pod,) = (
        world.kiln.core().list_namespaced_pod(NAMESPACE, label_selector="kiln.dev/trainingjob=train-on-cluster").items
    )
    assert not any(volume.persistent_volume_claim for volume in pod.spec.volumes), "no claim: the store is S3"
    from_secret = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": "trainer-s3", "key": key}}} for key in world.s3.env()
    ]
    deployment = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris-trained"},
        "spec": {"model": "iris", "version": "2.0.0", "server": {"env": from_secret}},
    }
    world.kiln.apply(NAMESPACE, deployment)

    def serving() -> bool:
        body = world.kiln.api().get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "modeldeployments", "iris-trained"
        )
        return (body.get("status") or {}).get("phase") == "Healthy"

    eventually(serving, f"md/iris-trained to serve 2.0.0 (see {world.kiln.operator_log})", 120)
    service = world.kiln.core().read_namespaced_service("iris-trained", NAMESPACE)
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": SETOSA}]}
    answer = httpx.post(f"http://{service.spec.cluster_ip}:80/v2/models/iris/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["model_version"], answer.json()["outputs"][0]["data"]) == ("2.0.0", [0])


def downloads_of(world: World, key: str) -> int:
    """How many times the object was read, by moto's request log."""
    return world.s3.log.read_text().count(f'"GET /{BUCKET}/{key} ')


def test_a_tampered_object_is_refused_by_the_registry_and_by_the_server(
    world: World, trained: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    key = "kiln/iris/1.0.0/model.skops"
    original = world.s3.get(BUCKET, key)
    artifact = trained["version"]["spec"]["artifact"]
    world.s3.put(BUCKET, key, original + b"tampered")
    tampered = hashlib.sha256(original + b"tampered").hexdigest()
    try:
        # The same object registered again, as a new version pinning the digest it was uploaded with.
        world.kiln.apply(
            NAMESPACE,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelVersion",
                "metadata": {"name": "iris-1.0.1"},
                "spec": {"modelName": "iris", "version": "1.0.1", "artifact": artifact},
            },
        )
        status = world.kiln.wait_for_phase(NAMESPACE, "iris-1.0.1", "Rejected")
        refused = condition(status, "ArtifactVerified")
        assert (refused["status"], refused["reason"]) == ("False", "DigestMismatch")
        assert refused["message"] == (
            f"the sha256 of {artifact['uri']} is {tampered}, not the {artifact['sha256']} the ModelVersion pins"
        )

        with kiln_server(
            tmp_path, [trained["version"]], env=server_env(world, tmp_path / "cache"), through_env=True
        ) as server:
            reason = server_reason(server)
            assert artifact["uri"] in reason
            assert tampered in reason
            assert artifact["sha256"] in reason
        assert list((tmp_path / "cache").iterdir()) == []
    finally:
        world.s3.put(BUCKET, key, original)


def server_reason(server: RunningServer) -> str:
    """The reason readiness gives once loading has failed."""

    def failed() -> str | None:
        ready = server.get("/v2/health/ready")
        reason = ready.json().get("reason", "") if ready.status_code == 503 else ""
        return reason if reason and "loading the artifact" not in reason else None

    found: str = eventually(failed, "kiln-server to say why it is not ready", 30)
    return found


def test_missing_credentials_are_named_by_the_server(
    world: World, trained: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    env = {"AWS_ENDPOINT_URL": world.s3.endpoint, "KILN_ARTIFACT_CACHE": str(tmp_path / "cache")}
    with kiln_server(tmp_path, [trained["version"]], env=env, through_env=True) as server:
        reason = server_reason(server)
    assert "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in reason


def test_a_wrong_endpoint_fails_the_trainer_naming_the_setting(world: World) -> None:
    nowhere = f"http://127.0.0.1:{s3_server.free_port()}"
    finished = train(world, "1.1.0", AWS_ENDPOINT_URL=nowhere)
    assert finished.returncode == 1
    last = finished.stderr.strip().splitlines()[-1]
    assert last.startswith(f"kiln-trainer: failed: uploading the artifact failed: {PREFIX}/iris/1.1.0/model.skops: ")
    assert f"the endpoint {nowhere} (AWS_ENDPOINT_URL) could not be used" in last


def test_no_secret_reaches_a_log_a_status_or_an_event(world: World, trained: dict[str, Any]) -> None:
    secret = s3_server.SECRET_ACCESS_KEY
    assert secret not in trained["run"].stdout + trained["run"].stderr
    assert secret not in world.kiln.operator_log.read_text()
    kinds = "modelversions,trainingjobs,modeldeployments,events"
    recorded = world.kiln.kubectl("get", kinds, "-n", NAMESPACE, "-o", "json").stdout
    assert "DigestMatches" in recorded
    assert secret not in recorded
    served = world.kiln.kubectl("logs", "-n", NAMESPACE, "-l", "kiln.dev/component=server", check=False)
    assert secret not in served.stdout + served.stderr
