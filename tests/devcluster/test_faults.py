"""API fault injection against real clients: the `kubernetes` Python client, kubectl and a kopf
operator see the injected 429, 503, 500, 409 and cut-short watches as they would see
kube-apiserver's, and every injected fault is marked in the audit log.

Each test starts a dev cluster whose rules name namespaces of their own, so only the requests
a test means to fault are faulted.
"""

from __future__ import annotations

import json
import logging
import pathlib
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import yaml
from conftest import Kube, StartKube
from kopf.testing import KopfRunner
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.config import kube_config
from polling import eventually

from kiln.devcluster import faults

REPO = pathlib.Path(__file__).resolve().parents[2]
MODELVERSION_CRD = REPO / "crds" / "kiln.dev_modelversions.yaml"
EXAMPLE = REPO / "examples" / "model-registry" / "modelversion.yaml"
GROUP, VERSION, PLURAL = "kiln.dev", "v1alpha1", "modelversions"
INJECTED = "an injected fault (kiln dev cluster fault injection)"
STALE = "the object has been modified; please apply your changes to the latest version and try again"

T = TypeVar("T")


def audit(kube: Kube) -> list[dict[str, Any]]:
    return [json.loads(line) for line in kube.cluster.audit_path.read_text().splitlines()]


def injected(kube: Kube, namespace: str) -> list[tuple[str, str]]:
    """(verb, injected fault) of the audit entries of a namespace that had a fault injected."""
    return [
        (entry["verb"], entry["annotations"][faults.ANNOTATION])
        for entry in audit(kube)
        if entry["namespace"] == namespace and faults.ANNOTATION in entry.get("annotations", {})
    ]


def namespace(kube: Kube, name: str) -> None:
    kube.core.create_namespace({"metadata": {"name": name}})


def configmap(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {"key": name}}


def without_retries(kubeconfig: pathlib.Path) -> client.CoreV1Api:
    """A `kubernetes` client that hands back a Retry-After answer instead of retrying it."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.retries = False
    return client.CoreV1Api(client.ApiClient(configuration))


def seed_failing_once(rate: float) -> int:
    """A seed whose first draw fires a rule of this rate and whose second does not."""
    return next(s for s in range(1000) if (draw := random.Random(s)).random() < rate <= draw.random())


def test_the_python_client_sees_429_and_503_with_retry_after_and_kube_apiservers_status(
    start_kube: StartKube,
) -> None:
    kube = start_kube({
        "faults": {
            "seed": seed_failing_once(0.5),
            "rules": [
                {"verbs": ["get"], "resources": ["configmaps"], "namespaces": ["flaky"], "status": 503,
                 "retryAfterSeconds": 0, "rate": 0.5},
                {"verbs": ["create"], "resources": ["configmaps"], "namespaces": ["throttled"], "status": 429,
                 "retryAfterSeconds": 2, "rate": 1},
                {"verbs": ["list", "get"], "resources": ["configmaps"], "namespaces": ["unavailable"],
                 "status": 503, "retryAfterSeconds": 1, "rate": 1},
                {"verbs": ["*"], "resources": ["configmaps"], "namespaces": ["stale"], "status": 409, "rate": 1},
            ],
        }
    })  # fmt: skip
    for name in ("flaky", "stale"):
        namespace(kube, name)
        kube.core.create_namespaced_config_map(name, configmap("settings"))

    # the client retries a GET answered with Retry-After, as urllib3 does: the first 503 is not seen
    assert kube.core.read_namespaced_config_map("settings", "flaky").data == {"key": "settings"}
    assert injected(kube, "flaky") == [("get", "503")]
    gets = [entry for entry in audit(kube) if entry["namespace"] == "flaky" and entry["verb"] == "get"]
    assert [entry.get("annotations", {}).get(faults.ANNOTATION) for entry in gets] == ["503", None]

    with pytest.raises(ApiException) as throttled:
        kube.core.create_namespaced_config_map("throttled", configmap("settings"))
    assert throttled.value.status == 429
    assert throttled.value.headers["Retry-After"] == "2"
    assert json.loads(throttled.value.body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Too many requests, please try again later.", "reason": "TooManyRequests",
        "details": {"retryAfterSeconds": 2}, "code": 429,
    }  # fmt: skip

    plain = without_retries(kube.cluster.kubeconfig_path)
    with pytest.raises(ApiException) as unavailable:
        plain.list_namespaced_config_map("unavailable")
    assert unavailable.value.status == 503
    assert unavailable.value.headers["Retry-After"] == "1"
    assert json.loads(unavailable.value.body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the server is currently unable to handle the request", "reason": "ServiceUnavailable",
        "details": {"retryAfterSeconds": 1}, "code": 503,
    }  # fmt: skip
    plain.api_client.close()

    # 409 on the writes that name an object; reads and creates of the same rule pass
    current = kube.core.read_namespaced_config_map("settings", "stale")
    with pytest.raises(ApiException) as conflict:
        kube.core.replace_namespaced_config_map("settings", "stale", current)
    assert conflict.value.status == 409
    body = json.loads(conflict.value.body)
    assert body["reason"] == "Conflict"
    assert body["message"] == f'Operation cannot be fulfilled on configmaps "settings": {STALE}'
    assert body["details"] == {"name": "settings", "group": "", "kind": "configmaps"}
    kube.core.create_namespaced_config_map("stale", configmap("another"))
    assert kube.core.read_namespaced_config_map("settings", "stale").data == {"key": "settings"}

    assert injected(kube, "throttled") == [("create", "429")]
    assert injected(kube, "unavailable") == [("list", "503")]
    assert injected(kube, "stale") == [("update", "409")]
    entry = next(e for e in audit(kube) if e["namespace"] == "throttled")
    assert entry["annotations"] == {faults.ANNOTATION: "429", faults.RULE_ANNOTATION: "rules[1]"}


def test_kubectl_shows_the_injected_errors(start_kube: StartKube) -> None:
    kube = start_kube({
        "faults": [
            {"verbs": ["list"], "resources": ["configmaps"], "namespaces": ["broken"], "status": 500, "rate": 1},
            {"verbs": ["patch"], "resources": ["configmaps"], "namespaces": ["stale"], "status": 409, "rate": 1},
            {"verbs": ["get"], "resources": ["configmaps"], "namespaces": ["stale"], "delaySeconds": 0.5, "rate": 1},
        ]
    })  # fmt: skip
    namespace(kube, "stale")
    kube.core.create_namespaced_config_map("stale", configmap("settings"))

    failed = kube.kubectl("get", "configmaps", "-n", "broken", check=False)
    assert failed.returncode == 1
    assert f"Error from server (InternalError): Internal error occurred: {INJECTED}" in failed.stderr

    conflict = kube.kubectl("label", "configmap", "settings", "-n", "stale", "team=a", check=False)
    assert conflict.returncode == 1
    assert f'Error from server (Conflict): Operation cannot be fulfilled on configmaps "settings": {STALE}' in (
        conflict.stderr
    )

    started = time.monotonic()
    shown = kube.kubectl("get", "configmap", "settings", "-n", "stale", "-o", "jsonpath={.data.key}")
    assert shown.stdout == "settings"
    assert time.monotonic() - started >= 0.5  # slow, but served

    assert injected(kube, "broken") == [("list", "500")]
    assert ("patch", "409") in injected(kube, "stale")
    assert ("get", "delay 0.5s") in injected(kube, "stale")


def test_a_watch_closed_after_n_events_is_resumed_by_the_client(start_kube: StartKube) -> None:
    kube = start_kube({
        "faults": [
            {"verbs": ["watch"], "resources": ["configmaps"], "namespaces": ["watched"],
             "watch": {"closeAfterEvents": 2}, "rate": 1},
            {"verbs": ["watch"], "resources": ["configmaps"], "namespaces": ["cut"],
             "watch": {"closeAfterSeconds": 0.5}, "rate": 1},
        ]
    })  # fmt: skip
    namespace(kube, "watched")
    namespace(kube, "cut")
    since = kube.core.list_namespaced_config_map("watched").metadata.resource_version
    names = [f"cm-{index}" for index in range(5)]
    for name in names:
        kube.core.create_namespaced_config_map("watched", configmap(name))

    seen = []
    stream = watch.Watch()
    for event in stream.stream(kube.core.list_namespaced_config_map, "watched", resource_version=since):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == len(names):
            stream.stop()
            break
    assert seen == [("ADDED", name) for name in names]  # in order, none lost, none twice
    watches = [entry for entry in audit(kube) if entry["namespace"] == "watched" and entry["verb"] == "watch"]
    assert len(watches) == 3  # 2 + 2 + 1 events
    assert all(e["annotations"][faults.ANNOTATION] == "watch closed after 2 events" for e in watches)

    started = time.monotonic()
    events = list(watch.Watch().stream(kube.core.list_namespaced_config_map, "cut", timeout_seconds=30))
    assert events == []
    assert time.monotonic() - started < 5  # closed after half a second, not the 30 asked for
    assert injected(kube, "cut") == [("watch", "watch closed after 0.5s")]


def test_kiln_cluster_start_faults_file_turns_injection_on(tmp_path: pathlib.Path) -> None:
    kiln = [str(pathlib.Path(sys.executable).parent / "kiln"), "cluster"]
    data_dir = tmp_path / "cli"
    rules = tmp_path / "faults.yaml"
    rules.write_text(
        "rules:\n"
        "  - {verbs: [list], resources: [configmaps], namespaces: [busy], status: 429, retryAfterSeconds: 3, rate: 1}\n"
        "  - {verbs: [watch], resources: ['*'], watch: {closeAfterEvents: 1}, rate: 0.5}\n"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [{verbs: [list], resources: [pods], status: 500, rate: 5}]\n")

    def start(*flags: str) -> subprocess.CompletedProcess[str]:
        command = [*kiln, "start", "--in-memory", "--data-dir", str(data_dir), *flags]
        return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)

    refused = start("--faults", str(broken))
    assert refused.returncode == 1
    assert f"{broken}: rules[0].rate: must be from 0 to 1, not 5.0" in refused.stderr
    try:
        started = start("--faults", str(rules))
        assert started.returncode == 0, started.stderr
        assert "fault injection: on (2 rules)" in started.stdout.splitlines()
        core = without_retries(data_dir / "kubeconfig")
        with pytest.raises(ApiException) as throttled:
            core.list_namespaced_config_map("busy")
        core.api_client.close()
        assert (throttled.value.status, throttled.value.headers["Retry-After"]) == (429, "3")
        entries = [json.loads(line) for line in (data_dir / "audit.jsonl").read_text().splitlines()]
        assert [e["annotations"] for e in entries if e["namespace"] == "busy"] == [
            {faults.ANNOTATION: "429", faults.RULE_ANNOTATION: "rules[0]"}
        ]
    finally:
        subprocess.run([*kiln, "stop", "--data-dir", str(data_dir)], capture_output=True, timeout=60, check=False)
    plain = start()
    try:
        assert plain.returncode == 0, plain.stderr
        assert not any(line.startswith("fault injection") for line in plain.stdout.splitlines())
    finally:
        subprocess.run([*kiln, "stop", "--data-dir", str(data_dir)], capture_output=True, timeout=60, check=False)


# A kopf operator keeps reconciling through a fifth of its requests failing and its watches cut.

OPERATOR = """
import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
    settings.watching.server_timeout = 5
    settings.watching.client_timeout = 15
    settings.networking.error_backoffs = [0.1, 0.2, 0.3, 0.5, 0.5, 1, 1, 1]


@kopf.on.create("kiln.dev", "v1alpha1", "modelversions")
def validating(patch, **_):
    patch.status["phase"] = "Validating"
    patch.status["message"] = "round 0"


@kopf.on.update("kiln.dev", "v1alpha1", "modelversions")
def relabelled(labels, patch, **_):
    patch.status["message"] = f"round {labels.get('round', '0')}"
"""

FLAKY = "flaky"
OBJECTS = 8


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """kopf configures the root logger of the process it runs in; put it back for the tests after this one."""
    root, quiet = logging.getLogger(), logging.getLogger("asyncio")
    saved = (root.level, root.handlers[:], quiet.propagate, quiet.handlers[:])
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    quiet.propagate = saved[2]
    quiet.handlers[:] = saved[3]


def tolerant(call: Callable[..., T], *args: Any) -> T | None:
    """The test's own calls meet the faults too: None for an injected error, to be tried again."""
    try:
        return call(*args)
    except ApiException as error:
        if error.status in (404, 409, 429, 500, 503):
            return None
        raise


def test_a_kopf_operator_reconciles_every_object_through_errors_and_watch_drops(
    tmp_path: pathlib.Path, start_kube: StartKube, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    every_write = ["create", "update", "patch", "delete"]
    kube = start_kube({
        "faults": [
            # 10% answered 500, a ninth of the rest 503: a fifth of the operator's requests fail
            {"verbs": ["*"], "resources": ["*"], "namespaces": [FLAKY], "status": 500, "rate": 0.1},
            {"verbs": ["*"], "resources": ["*"], "namespaces": [FLAKY], "status": 503, "rate": 0.1111},
            {"verbs": every_write, "resources": ["*"], "namespaces": [FLAKY], "delaySeconds": 0.05, "rate": 0.2},
            {"verbs": ["watch"], "resources": ["*"], "namespaces": [FLAKY], "watch": {"closeAfterEvents": 2},
             "rate": 0.5},
            {"verbs": ["watch"], "resources": ["*"], "namespaces": [FLAKY], "watch": {"closeAfterSeconds": 1},
             "rate": 1},
        ]
    })  # fmt: skip
    kubeconfig = str(kube.cluster.kubeconfig_path)
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", kubeconfig)
    extensions = client.ApiextensionsV1Api(kube.api)
    extensions.create_custom_resource_definition(yaml.safe_load(MODELVERSION_CRD.read_text()))

    def established() -> bool:
        conditions = extensions.read_custom_resource_definition(f"{PLURAL}.{GROUP}").status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    eventually(established, "the ModelVersion CRD to be Established")
    namespace(kube, FLAKY)
    manifest = yaml.safe_load(EXAMPLE.read_text())
    names = [f"iris-{index}" for index in range(OBJECTS)]

    def get(name: str) -> dict[str, Any] | None:
        return tolerant(kube.custom.get_namespaced_custom_object, GROUP, VERSION, FLAKY, PLURAL, name)

    def statuses() -> dict[str, str]:
        found = {name: get(name) for name in names}
        return {name: (obj or {}).get("status", {}).get("message", "") for name, obj in found.items()}

    def create(name: str) -> object:
        body = {**manifest, "metadata": {"name": name, "labels": {"kiln.dev/model": "iris"}}}
        return tolerant(kube.custom.create_namespaced_custom_object, GROUP, VERSION, FLAKY, PLURAL, body) or get(name)

    operator = tmp_path / "operator.py"
    operator.write_text(OPERATOR)
    with KopfRunner(["run", "--standalone", "--namespace", FLAKY, str(operator)], timeout=60) as runner:
        for name in names:
            eventually(lambda name=name: create(name), f"{name} to be created")
        eventually(lambda: set(statuses().values()) == {"round 0"}, "every object to be handled", timeout=30)

        patch = kube.custom.patch_namespaced_custom_object
        relabel = {"metadata": {"labels": {"round": "1"}}}
        for name in names:
            eventually(lambda name=name: tolerant(patch, GROUP, VERSION, FLAKY, PLURAL, name, relabel),
                       f"{name} to be relabelled")  # fmt: skip
        eventually(lambda: set(statuses().values()) == {"round 1"}, "every change to be handled", timeout=30)
        handled = {name: eventually(lambda name=name: get(name), f"{name} to be read") for name in names}

    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output
    for name, obj in handled.items():
        assert (obj["status"]["phase"], obj["status"]["message"]) == ("Validating", "round 1"), name
    assert "Request attempt" in runner.output  # kopf met the errors and retried

    kinds = {fault for _, fault in injected(kube, FLAKY)}
    assert {"500", "503"} <= {fault.removeprefix("delay 0.05s, ") for fault in kinds}
    assert any("watch closed after" in fault for fault in kinds)
    operator_entries = [e for e in audit(kube) if e["namespace"] == FLAKY and e["userAgent"].startswith("kopf")]
    failed = [
        e
        for e in operator_entries
        if {"500", "503"} & set(e.get("annotations", {}).get(faults.ANNOTATION, "").split(", "))
    ]
    assert failed, "the operator's own requests met injected errors"
