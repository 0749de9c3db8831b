"""A tiny kopf operator runs against the dev cluster: status patches, finalizers, delete handlers.

The operator module is written to tmp_path and run with kopf's own runner, as
`kopf run --standalone` would run it. It handles ModelVersions: on create it
writes `status.phase: Validating`; on delete (behind kopf's finalizer) it waits
until the test releases it with a ConfigMap `release-<name>`, then records the
deletion as a ConfigMap `deleted-<name>`.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.config import kube_config
from polling import eventually

from kiln.devcluster import cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLE = REPO / "examples" / "model-registry" / "modelversion.yaml"
GROUP, VERSION, PLURAL, NS = "kiln.dev", "v1alpha1", "modelversions", "default"
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
WAIT_SECONDS = 30.0

T = TypeVar("T")

OPERATOR = """
import kopf
import kubernetes
from kubernetes.client.rest import ApiException


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    # kopf's default progress storage writes status.kopf, which a structural schema prunes
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
    settings.watching.server_timeout = 5
    settings.watching.client_timeout = 15


def core():
    return kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config())


@kopf.on.create("kiln.dev", "v1alpha1", "modelversions")
def validating(patch, **_):
    patch.status["phase"] = "Validating"
    patch.status["message"] = "picked up by the test operator"


@kopf.on.delete("kiln.dev", "v1alpha1", "modelversions")
def record_deletion(name, namespace, **_):
    api = core()
    try:
        api.read_namespaced_config_map(f"release-{name}", namespace)
    except ApiException as error:
        if error.status == 404:
            raise kopf.TemporaryError("waiting for the test to release the deletion", delay=0.5)
        raise
    api.create_namespaced_config_map(
        namespace, {"metadata": {"name": f"deleted-{name}"}, "data": {"deleted": name}}
    )
"""


def read_or_none(call: Callable[..., T], *args: Any) -> T | None:
    try:
        return call(*args)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """kopf configures the root logger of the process it runs in; put it back for the tests after this one."""
    root, quiet = logging.getLogger(), logging.getLogger("asyncio")
    saved = (root.level, root.handlers[:], quiet.propagate, quiet.handlers[:])
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    quiet.propagate = saved[2]
    quiet.handlers[:] = saved[3]


@pytest.fixture
def api(devcluster: cluster.DevCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[client.ApiClient]:
    # kopf logs in through the kubernetes client, whose default kubeconfig path is read from
    # $KUBECONFIG once, at import time: set both.
    monkeypatch.setenv("KUBECONFIG", str(devcluster.kubeconfig_path))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(devcluster.kubeconfig_path))
    config.load_kube_config(config_file=str(devcluster.kubeconfig_path))
    with client.ApiClient() as api_client:
        yield api_client


def test_a_kopf_operator_writes_status_and_honours_its_finalizer(
    tmp_path: pathlib.Path, api: client.ApiClient, kubectl: Callable[..., Any]
) -> None:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    kubectl("apply", "-f", str(CRDS))
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    operator = tmp_path / "operator.py"
    operator.write_text(OPERATOR)
    name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]

    def model_version() -> dict[str, Any] | None:
        return read_or_none(custom.get_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, name)

    with KopfRunner(["run", "--standalone", "--namespace", NS, str(operator)], timeout=60) as runner:
        kubectl("apply", "-f", str(EXAMPLE))

        validating = eventually(
            lambda: (mv := model_version()) and mv.get("status", {}).get("phase") == "Validating" and mv,
            "the operator to write status.phase",
            timeout=WAIT_SECONDS,
        )
        assert validating["status"]["message"] == "picked up by the test operator"
        assert KOPF_FINALIZER in validating["metadata"]["finalizers"]
        assert validating["metadata"]["generation"] == 1
        assert validating["spec"]["modelName"] == "iris"

        before_delete = int(validating["metadata"]["resourceVersion"])
        kubectl("delete", "modelversion", name, "--wait=false")

        # the finalizer holds the object while the delete handler waits for the release
        deleting = eventually(model_version, "the ModelVersion to still exist", timeout=WAIT_SECONDS)
        assert deleting["metadata"]["deletionTimestamp"]
        assert KOPF_FINALIZER in deleting["metadata"]["finalizers"]
        eventually(
            lambda: (mv := model_version()) and "record_deletion" in json.dumps(mv["metadata"].get("annotations", {})),
            "the delete handler to have been tried and postponed",
            timeout=WAIT_SECONDS,
        )
        assert model_version() is not None
        assert read_or_none(core.read_namespaced_config_map, f"deleted-{name}", NS) is None

        core.create_namespaced_config_map(NS, {"metadata": {"name": f"release-{name}"}})
        record = eventually(
            lambda: read_or_none(core.read_namespaced_config_map, f"deleted-{name}", NS),
            "the delete handler to record the deletion",
            timeout=WAIT_SECONDS,
        )
        assert record.data == {"deleted": name}
        gone = "kopf to remove its finalizer and the object to go"
        eventually(lambda: model_version() is None, gone, timeout=WAIT_SECONDS)

        # the order the API server saw: deletion requested, record written, object gone
        history = []
        for event in watch.Watch().stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            NS,
            PLURAL,
            resource_version=str(before_delete),
            timeout_seconds=1,
        ):
            history.append((event["type"], event["raw_object"]["metadata"]))
        assert history[0][0] == "MODIFIED"
        assert history[0][1]["deletionTimestamp"]
        assert history[-1][0] == "DELETED"
        assert [kind for kind, _ in history].count("DELETED") == 1
        assert (
            int(history[0][1]["resourceVersion"])
            < int(record.metadata.resource_version)
            < int(history[-1][1]["resourceVersion"])
        )

    assert runner.exit_code == 0, runner.output
    assert runner.exception is None
    assert "Traceback" not in runner.output, runner.output
    assert "Handler 'validating' succeeded" in runner.output
    assert "Handler 'record_deletion' succeeded" in runner.output
    assert "Patching failed with inconsistencies" not in runner.output, runner.output
