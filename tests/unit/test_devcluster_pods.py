"""What a dev cluster pod sees and how it is found: the kubelet's and the network's pure rules.

`podenv` decides which containers run as local processes and builds their
environment as the kubelet does (`$(VAR)` expansion, the downward API, ConfigMap
and Secret references with the kubelet's error wording, service links) and where
volume paths point; `network` allocates loopback addresses, builds Endpoints from
Service selectors and pod readiness, and answers cluster DNS names; `probes`
counts results against the thresholds; `prometheus` turns annotated pods into
file_sd targets.
"""

from __future__ import annotations

import base64
import ipaddress
import pathlib
from typing import Any

import pytest

from kiln.devcluster import defaults, errors, network, podenv, probes, prometheus

Object = dict[str, Any]


def the_pod(
    name: str = "web-0",
    *,
    ip: str | None = "127.244.0.5",
    ready: bool = True,
    phase: str = "Running",
    labels: dict[str, str] | None = None,
    ports: list[Object] | None = None,
    deleting: bool = False,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> Object:
    metadata: Object = {
        "name": name,
        "namespace": "default",
        "uid": f"uid-{name}",
        "labels": {"app": "web"} if labels is None else labels,
        "annotations": annotations or {},
    }
    if deleting:
        metadata["deletionTimestamp"] = "2024-05-01T10:00:00Z"
    status: Object = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip is not None:
        status["podIP"] = ip
        status["hostIP"] = "127.0.0.1"
    return {
        "metadata": metadata,
        "spec": {
            "nodeName": "node-1",
            "serviceAccountName": "trainer",
            "containers": [{"name": "web", "image": "registry.example/web:1", "ports": ports or []}],
            **spec,
        },
        "status": status,
    }


# Which containers run as local processes


@pytest.mark.parametrize(
    ("container", "local_images", "expected"),
    [
        pytest.param({"image": "python:3.11", "command": ["python", "train.py"]}, (), True, id="python"),
        pytest.param({"image": "python:3.11", "command": ["python3.11", "-m", "app"]}, (), True, id="python3.11"),
        pytest.param({"image": "python:3.11", "command": ["/usr/bin/python3", "x.py"]}, (), True, id="python-path"),
        pytest.param(
            {"image": "ghcr.io/kiln/kiln:1", "command": ["kiln-server", "--port", "8080"]}, (), True, id="kiln-runtime"
        ),
        pytest.param(
            {"image": "python:3.11", "command": ["sh", "-c", "python x.py --epochs 3"]},
            (),
            True,
            id="shell-running-python",
        ),
        pytest.param(
            {"image": "python:3.11", "command": ["/bin/bash", "-c", "python3 -u x.py"]},
            (),
            True,
            id="bash-running-python",
        ),
        pytest.param(
            {"image": "python:3.11", "command": ["/usr/bin/env", "python3", "x.py"]}, (), True, id="env-running-python"
        ),
        pytest.param({"image": "python:3.11", "command": ["python"], "args": ["x.py"]}, (), True, id="args-split"),
        pytest.param({"image": "busybox", "command": ["sleep", "3600"]}, (), False, id="busybox-sleep"),
        pytest.param({"image": "busybox", "command": ["sh", "-c", "sleep 3600"]}, (), False, id="shell-not-python"),
        pytest.param({"image": "pythonic/app:1", "command": ["pythonic-server"]}, (), False, id="python-prefix-only"),
        pytest.param({"image": "python:3.11"}, (), False, id="no-command"),
        pytest.param(
            {"image": "registry.example/team/trainer:1"},
            ("registry.example/team/trainer",),
            False,
            id="local-image-without-command",
        ),
        pytest.param(
            {"image": "registry.example/team/trainer:1", "command": ["/app/train"]},
            ("registry.example/team/trainer",),
            True,
            id="local-image-listed-without-tag",
        ),
        pytest.param(
            {"image": "trainer:latest", "command": ["/app/train"]},
            ("trainer:dev",),
            True,
            id="local-image-listed-with-another-tag",
        ),
        pytest.param(
            {"image": "localhost:5000/trainer", "command": ["/app/train"]},
            ("localhost:5000/trainer:1",),
            True,
            id="local-image-on-a-registry-port",
        ),
        pytest.param(
            {"image": "registry.example/other:1", "command": ["/app/run"]},
            ("registry.example/team/trainer",),
            False,
            id="other-image",
        ),
    ],
)
def test_runs_as_process(container: Object, local_images: tuple[str, ...], expected: bool) -> None:
    assert podenv.runs_as_process({"name": "c", **container}, local_images) is expected


# $(VAR) expansion


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("$(A)-$(B)", "1-2", id="known"),
        pytest.param("$(MISSING)", "$(MISSING)", id="unknown-stays"),
        pytest.param("$$(A)", "$(A)", id="escaped-reference"),
        pytest.param("$$", "$", id="escaped-dollar"),
        pytest.param("$$$(A)", "$1", id="escape-then-reference"),
        pytest.param("cost $5", "cost $5", id="lone-dollar"),
        pytest.param("$(A", "$(A", id="unclosed"),
        pytest.param("", "", id="empty"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert podenv.expand(text, {"A": "1", "B": "2"}) == expected


# The downward API


DOWNWARD = the_pod(labels={"app": "web", "tier": "front"}, annotations={"team": "ml"})


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("metadata.name", "web-0", id="name"),
        pytest.param("metadata.namespace", "default", id="namespace"),
        pytest.param("metadata.uid", "uid-web-0", id="uid"),
        pytest.param("metadata.labels['tier']", "front", id="label"),
        pytest.param("metadata.labels['missing']", "", id="missing-label"),
        pytest.param("metadata.annotations['team']", "ml", id="annotation"),
        pytest.param("metadata.labels", 'app="web"\ntier="front"', id="all-labels"),
        pytest.param("status.podIP", "127.244.0.5", id="pod-ip"),
        pytest.param("status.hostIP", "127.0.0.1", id="host-ip"),
        pytest.param("spec.nodeName", "node-1", id="node-name"),
        pytest.param("spec.serviceAccountName", "trainer", id="service-account"),
    ],
)
def test_field_ref(path: str, expected: str) -> None:
    assert podenv.field_ref(DOWNWARD, path) == expected


@pytest.mark.parametrize("path", ["spec.containers[0].image", "metadata.generateName", "status.phase"])
def test_unsupported_field_ref_cannot_start_the_container(path: str) -> None:
    with pytest.raises(podenv.ConfigError, match="unsupported"):
        podenv.field_ref(DOWNWARD, path)


RESOURCES = {
    "name": "c",
    "resources": {"requests": {"cpu": "250m", "memory": "1000"}, "limits": {"cpu": "1500m", "memory": "1Gi"}},
}


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        pytest.param({"resource": "limits.memory", "divisor": "1Mi"}, "1024", id="memory-in-mebibytes"),
        pytest.param({"resource": "limits.memory"}, str(2**30), id="memory-in-bytes"),
        pytest.param({"resource": "requests.cpu", "divisor": "1m"}, "250", id="cpu-in-millicores"),
        pytest.param({"resource": "requests.cpu"}, "1", id="cpu-rounded-up-to-a-core"),
        pytest.param({"resource": "limits.cpu", "divisor": "1"}, "2", id="cpu-limit-rounded-up"),
        pytest.param({"resource": "requests.memory", "divisor": "1Ki"}, "1", id="memory-rounded-up"),
        pytest.param({"resource": "requests.ephemeral-storage"}, "0", id="unset"),
    ],
)
def test_resource_ref(reference: Object, expected: str) -> None:
    assert podenv.resource_ref(RESOURCES, reference) == expected


def test_resource_ref_sees_requests_the_api_server_defaulted_from_limits() -> None:
    """kube-apiserver's SetDefaults_Pod copies each limit without a request into requests, so a
    downward-API requests.cpu of a container with only a 2-core limit is 2."""
    pod: Object = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "python:3.11", "resources": {"limits": {"cpu": "2"}}}]},
    }
    defaults.apply(pod)
    assert podenv.resource_ref(pod["spec"]["containers"][0], {"resource": "requests.cpu"}) == "2"


def pod_with(*resources: Object) -> Object:
    containers = [{"name": f"c{i}", "image": "python:3.11", "resources": r} for i, r in enumerate(resources)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}}


GUARANTEED = {"limits": {"cpu": "1", "memory": "1Gi"}}


@pytest.mark.parametrize(
    ("pod", "qos_class"),
    [
        pytest.param(pod_with({}), "BestEffort", id="no-resources"),
        pytest.param(pod_with(GUARANTEED), "Guaranteed", id="limits-only-default-requests"),
        pytest.param(pod_with({**GUARANTEED, "requests": {"cpu": "1", "memory": "1Gi"}}), "Guaranteed", id="equal"),
        pytest.param(pod_with({"requests": {"cpu": "100m"}}), "Burstable", id="requests-only"),
        pytest.param(pod_with({**GUARANTEED, "requests": {"cpu": "500m"}}), "Burstable", id="requests-below-limits"),
        pytest.param(pod_with(GUARANTEED, {}), "Burstable", id="one-container-without"),
    ],
)
def test_the_api_server_sets_the_pods_qos_class(pod: Object, qos_class: str) -> None:
    """kube-apiserver sets status.qosClass when a pod is created, from its containers' cpu and memory (GetPodQOS)."""
    defaults.apply(pod)
    assert pod["status"]["qosClass"] == qos_class


# The container's environment


def secret_data(**values: str) -> dict[str, str]:
    return {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}


OBJECTS: dict[tuple[str, str], Object] = {
    ("configmaps", "settings"): {
        "metadata": {"name": "settings", "namespace": "default"},
        "data": {"LEVEL": "debug", "RAW": "$(A)", "DB": "from-configmap"},
    },
    ("secrets", "creds"): {
        "metadata": {"name": "creds", "namespace": "default"},
        "data": secret_data(TOKEN="s3cret", DB="from-secret"),
    },
}


def lookup(kind: str, name: str) -> Object | None:
    return OBJECTS.get((kind, name))


def env_of(container: Object, base: dict[str, str] | None = None) -> dict[str, str]:
    return podenv.container_env(DOWNWARD, {"name": "c", **container}, lookup, base or {})


def test_container_env_layers_and_expands_in_order() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"secretRef": {"name": "creds"}}],
        "env": [
            {"name": "A", "value": "1"},
            {"name": "URL", "value": "http://$(SVC_HOST):$(A)/$(LATER)"},
            {"name": "LATER", "value": "x"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
            {"name": "NOT_EXPANDED", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "RAW"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
            {"name": "DB", "value": "from-env"},
        ],
    }

    env = env_of(container, {"SVC_HOST": "127.96.0.9", "TOKEN": "from-service-links"})

    assert env == {
        "SVC_HOST": "127.96.0.9",
        "TOKEN": "s3cret",  # envFrom over the base
        "CFG_LEVEL": "debug",
        "CFG_RAW": "$(A)",
        "CFG_DB": "from-configmap",
        "A": "1",
        "URL": "http://127.96.0.9:1/$(LATER)",  # only variables defined before it expand
        "LATER": "x",
        "POD": "web-0",
        "LEVEL": "debug",
        "NOT_EXPANDED": "$(A)",  # values from references are taken as they are
        "CPU": "0",
        "DB": "from-env",  # env over envFrom
    }


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        pytest.param(
            {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": True}}}]},
            {},
            id="optional-configmap",
        ),
        pytest.param(
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": True}}}]},
            {},
            id="optional-secret-key",
        ),
        pytest.param({"envFrom": [{"configMapRef": {"name": "gone", "optional": True}}]}, {}, id="optional-env-from"),
        pytest.param(
            {"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "TOKEN"}}}]},
            {"TOKEN": "s3cret"},
            id="secret-key-decoded",
        ),
    ],
)
def test_container_env_references(container: Object, expected: dict[str, str]) -> None:
    assert env_of(container) == expected


@pytest.mark.parametrize(
    ("container", "message"),
    [
        pytest.param(
            {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]},
            'configmap "gone" not found',
            id="missing-configmap",
        ),
        pytest.param(
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]},
            'secret "gone" not found',
            id="missing-secret",
        ),
        pytest.param(
            {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}}}]},
            "couldn't find key k in ConfigMap default/settings",
            id="missing-configmap-key",
        ),
        pytest.param(
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}]},
            "couldn't find key k in Secret default/creds",
            id="missing-secret-key",
        ),
        pytest.param(
            {"envFrom": [{"configMapRef": {"name": "gone"}}]},
            'configmap "gone" not found',
            id="missing-env-from-configmap",
        ),
        pytest.param(
            {"envFrom": [{"secretRef": {"name": "gone"}}]}, 'secret "gone" not found', id="missing-env-from-secret"
        ),
    ],
)
def test_a_missing_reference_is_the_kubelets_create_container_config_error(container: Object, message: str) -> None:
    with pytest.raises(podenv.ConfigError) as raised:
        env_of(container)
    assert str(raised.value) == message


def service(name: str, cluster_ip: str | None, ports: list[Object], **spec: Any) -> Object:
    body: Object = {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"}, "spec": {"ports": ports}}
    if cluster_ip is not None:
        body["spec"]["clusterIP"] = cluster_ip
    body["spec"].update(spec)
    return body


def test_service_links() -> None:
    services = [
        service(
            "my-db",
            "127.96.0.5",
            [{"name": "pg", "port": 5432, "protocol": "TCP"}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}],
        ),
        service("cache", "127.96.0.6", [{"port": 6379}]),
        service("headless", "None", [{"port": 80}]),
        service("external", None, [{"port": 443}], type="ExternalName", externalName="example.com"),
    ]

    assert podenv.service_links(services) == {
        "MY_DB_SERVICE_HOST": "127.96.0.5",
        "MY_DB_SERVICE_PORT": "5432",
        "MY_DB_SERVICE_PORT_PG": "5432",
        "MY_DB_SERVICE_PORT_DNS_UDP": "53",
        "MY_DB_PORT": "tcp://127.96.0.5:5432",
        "MY_DB_PORT_5432_TCP": "tcp://127.96.0.5:5432",
        "MY_DB_PORT_5432_TCP_PROTO": "tcp",
        "MY_DB_PORT_5432_TCP_PORT": "5432",
        "MY_DB_PORT_5432_TCP_ADDR": "127.96.0.5",
        "MY_DB_PORT_53_UDP": "udp://127.96.0.5:53",
        "MY_DB_PORT_53_UDP_PROTO": "udp",
        "MY_DB_PORT_53_UDP_PORT": "53",
        "MY_DB_PORT_53_UDP_ADDR": "127.96.0.5",
        "CACHE_SERVICE_HOST": "127.96.0.6",
        "CACHE_SERVICE_PORT": "6379",
        "CACHE_PORT": "tcp://127.96.0.6:6379",
        "CACHE_PORT_6379_TCP": "tcp://127.96.0.6:6379",
        "CACHE_PORT_6379_TCP_PROTO": "tcp",
        "CACHE_PORT_6379_TCP_PORT": "6379",
        "CACHE_PORT_6379_TCP_ADDR": "127.96.0.6",
    }


# Volume paths


MOUNTS = {"/data": "/tmp/vol/data", "/data/models": "/tmp/vol/models", "/cache/": "/tmp/vol/cache"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("/data/train.csv", "/tmp/vol/data/train.csv", id="under-a-mount"),
        pytest.param("/data/models/iris.skops", "/tmp/vol/models/iris.skops", id="longest-mount-wins"),
        pytest.param("/data/modelsx/a", "/tmp/vol/data/modelsx/a", id="longer-mount-only-on-a-boundary"),
        pytest.param("/data", "/tmp/vol/data", id="exact-mount-path"),
        pytest.param("--out=/data/x", "--out=/tmp/vol/data/x", id="after-an-equals-sign"),
        pytest.param("/cache/a", "/tmp/vol/cache/a", id="mount-path-with-trailing-slash"),
        pytest.param("/database/x", "/database/x", id="no-partial-prefix-match"),
        pytest.param("/tmp/data/x", "/tmp/data/x", id="mount-path-inside-another-path"),
        pytest.param("relative/data/x", "relative/data/x", id="relative"),
        pytest.param("--epochs=3", "--epochs=3", id="unrelated"),
    ],
)
def test_translate_path(value: str, expected: str) -> None:
    assert podenv.translate_path(value, MOUNTS) == expected


# Addresses


@pytest.mark.parametrize(
    ("network_", "used", "expected"),
    [
        pytest.param(network.POD_NETWORK, set(), "127.244.0.2", id="skips-the-gateway"),
        pytest.param(network.POD_NETWORK, {"127.244.0.2", "127.244.0.3"}, "127.244.0.4", id="skips-used"),
        pytest.param(network.SERVICE_NETWORK, {"127.96.0.3"}, "127.96.0.2", id="fills-gaps"),
    ],
)
def test_next_free_address(network_: ipaddress.IPv4Network, used: set[str], expected: str) -> None:
    assert network.next_free_address(network_, used) == expected


def test_addresses_start_at_an_offset_and_wrap_around() -> None:
    small = ipaddress.ip_network("127.250.0.0/29")  # .2 to .6 are handed out
    assert network.next_free_address(small, set(), offset=2) == "127.250.0.4"
    assert network.next_free_address(small, {"127.250.0.4", "127.250.0.5", "127.250.0.6"}, offset=2) == "127.250.0.2"


def test_a_full_range_is_an_internal_error() -> None:
    small = ipaddress.ip_network("127.250.0.0/30")  # hosts .1 (the gateway) and .2
    with pytest.raises(errors.ApiError, match="is full") as raised:
        network.next_free_address(small, {"127.250.0.2"})
    assert raised.value.code == 500


# Endpoints


WEB = service(
    "web",
    "127.96.0.2",
    [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
    selector={"app": "web"},
)
HTTP_8080 = [{"name": "http", "containerPort": 8080}]


def address(pod: Object, **extra: str) -> Object:
    metadata = pod["metadata"]
    return {
        "ip": pod["status"]["podIP"],
        "nodeName": "node-1",
        "targetRef": {"kind": "Pod", "namespace": "default", "name": metadata["name"], "uid": metadata["uid"]},
        **extra,
    }


def http_port(number: int) -> list[Object]:
    return [{"name": "http", "port": number, "protocol": "TCP"}]


READY = the_pod("ready", ip="127.244.0.5", ports=HTTP_8080)
UNREADY = the_pod("unready", ip="127.244.0.6", ports=HTTP_8080, ready=False)
ELSEWHERE = the_pod("elsewhere", ip="127.244.0.7", ports=[{"name": "http", "containerPort": 9090}])
TERMINATING = the_pod("terminating", ip="127.244.0.8", ports=HTTP_8080, deleting=True)


@pytest.mark.parametrize(
    ("the_service", "pods", "expected"),
    [
        pytest.param(WEB, [READY], [{"ports": http_port(8080), "addresses": [address(READY)]}], id="ready"),
        pytest.param(
            WEB, [UNREADY], [{"ports": http_port(8080), "notReadyAddresses": [address(UNREADY)]}], id="not-ready"
        ),
        pytest.param(
            WEB,
            [READY, UNREADY],
            [{"ports": http_port(8080), "addresses": [address(READY)], "notReadyAddresses": [address(UNREADY)]}],
            id="ready-and-not-share-a-subset",
        ),
        pytest.param(
            {**WEB, "spec": {**WEB["spec"], "publishNotReadyAddresses": True}},
            [UNREADY],
            [{"ports": http_port(8080), "addresses": [address(UNREADY)]}],
            id="publish-not-ready-addresses",
        ),
        pytest.param(
            WEB,
            [READY, ELSEWHERE],
            [
                {"ports": http_port(8080), "addresses": [address(READY)]},
                {"ports": http_port(9090), "addresses": [address(ELSEWHERE)]},
            ],
            id="named-target-port-resolved-per-pod",
        ),
        pytest.param(
            WEB, [the_pod(ports=[{"name": "metrics", "containerPort": 9100}])], [], id="pod-without-the-named-port"
        ),
        pytest.param(
            service("web", "127.96.0.2", [{"port": 80, "targetPort": 8000}], selector={"app": "web"}),
            [READY],
            [{"ports": [{"port": 8000, "protocol": "TCP"}], "addresses": [address(READY)]}],
            id="numeric-target-port",
        ),
        pytest.param(
            service("web", "127.96.0.2", [{"port": 80}], selector={"app": "web"}),
            [READY],
            [{"ports": [{"port": 80, "protocol": "TCP"}], "addresses": [address(READY)]}],
            id="target-port-defaults-to-port",
        ),
        pytest.param(WEB, [the_pod(ports=HTTP_8080, phase="Succeeded")], [], id="succeeded-pod"),
        pytest.param(WEB, [the_pod(ports=HTTP_8080, phase="Failed", ready=False)], [], id="failed-pod"),
        pytest.param(WEB, [the_pod(ports=HTTP_8080, ip=None, ready=False)], [], id="pod-without-an-ip"),
        pytest.param(WEB, [the_pod(ports=HTTP_8080, labels={"app": "api"})], [], id="other-labels"),
        # the endpoints controller leaves terminating pods out (ShouldPodBeInEndpoints with
        # includeTerminating = publishNotReadyAddresses); only EndpointSlices list them as terminating
        pytest.param(WEB, [TERMINATING], [], id="terminating-pod-left-out"),
        pytest.param(
            {**WEB, "spec": {**WEB["spec"], "publishNotReadyAddresses": True}},
            [TERMINATING],
            [{"ports": http_port(8080), "addresses": [address(TERMINATING)]}],
            id="terminating-pod-published",
        ),
    ],
)
def test_endpoints_for(the_service: Object, pods: list[Object], expected: list[Object]) -> None:
    def key(subset: Object) -> int:
        return int(subset["ports"][0]["port"])

    assert sorted(network.endpoints_for(the_service, pods), key=key) == expected


@pytest.mark.parametrize(
    ("subdomain", "hostname_set"),
    [
        pytest.param("web", True, id="subdomain-names-the-service"),
        # ShouldSetHostname: the pod's hostname goes on the address only when its subdomain is this Service
        pytest.param("other", False, id="subdomain-names-another-service"),
    ],
)
def test_endpoint_hostname(subdomain: str, hostname_set: bool) -> None:
    pod = the_pod("web-0", ports=HTTP_8080, hostname="web-0", subdomain=subdomain)
    (subset,) = network.endpoints_for(WEB, [pod])
    assert ("hostname" in subset["addresses"][0]) is hostname_set


# DNS


def endpoints(name: str, ready: list[str], not_ready: list[str]) -> Object:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "subsets": [
            {
                "addresses": [{"ip": ip} for ip in ready],
                "notReadyAddresses": [{"ip": ip} for ip in not_ready],
                "ports": [{"port": 5432}],
            }
        ],
    }


def test_dns_records() -> None:
    services = [service("web", "127.96.0.2", [{"port": 80}]), service("db", "None", [{"port": 5432}])]
    pods = [the_pod("db-0", ip="127.244.0.5"), the_pod("done", ip="127.244.0.9", phase="Succeeded")]

    records = network.dns_records(services, [endpoints("db", ["127.244.0.5"], ["127.244.0.6"])], pods)

    assert records == {
        "web.default.svc.cluster.local": ["127.96.0.2"],
        "db.default.svc.cluster.local": ["127.244.0.5"],  # a headless Service answers its ready endpoints
        "127-244-0-5.default.pod.cluster.local": ["127.244.0.5"],
    }


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        pytest.param([service("trainers", "None", [{"port": 29500}])], ["127.244.0.5"], id="headless-service"),
        # Kubernetes DNS: a pod's hostname.subdomain name exists only if a headless Service named
        # after the subdomain exists in its namespace
        pytest.param([], None, id="no-service"),
    ],
)
def test_pod_hostname_records(services: list[Object], expected: list[str] | None) -> None:
    pod = the_pod("worker-0", ip="127.244.0.5", hostname="worker-0", subdomain="trainers")
    trainers = endpoints("trainers", ["127.244.0.5"], [])
    trainers["subsets"][0]["addresses"][0]["hostname"] = "worker-0"

    records = network.dns_records(services, [trainers] if services else [], [pod])

    assert records.get("worker-0.trainers.default.svc.cluster.local") == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            "web",
            ["web.ml.svc.cluster.local", "web.svc.cluster.local", "web.cluster.local", "web"],
            id="short-name-searched-first",
        ),
        pytest.param(
            "web.prod",
            ["web.prod.ml.svc.cluster.local", "web.prod.svc.cluster.local", "web.prod.cluster.local", "web.prod"],
            id="fewer-than-five-dots",
        ),
        pytest.param(
            "a.b.c.d.e.f",
            [
                "a.b.c.d.e.f",
                "a.b.c.d.e.f.ml.svc.cluster.local",
                "a.b.c.d.e.f.svc.cluster.local",
                "a.b.c.d.e.f.cluster.local",
            ],
            id="ndots-5-absolute-first",
        ),
        pytest.param("web.prod.svc.cluster.local.", ["web.prod.svc.cluster.local"], id="trailing-dot-is-absolute"),
    ],
)
def test_search_names(name: str, expected: list[str]) -> None:
    assert network.search_names(name, "ml") == expected


RECORDS = {
    "web.ml.svc.cluster.local": ["127.96.0.2"],
    "db.prod.svc.cluster.local": ["127.96.0.3", "127.96.0.4"],
}


@pytest.mark.parametrize(
    ("name", "namespace", "expected"),
    [
        pytest.param("web", "ml", "127.96.0.2", id="same-namespace"),
        pytest.param("web", "prod", None, id="other-namespace-short-name"),
        pytest.param("db.prod", "ml", "127.96.0.3", id="service-dot-namespace"),
        pytest.param("db.prod.svc", "ml", "127.96.0.3", id="with-svc"),
        pytest.param("db.prod.svc.cluster.local", "ml", "127.96.0.3", id="fully-qualified"),
        pytest.param("example.com", "ml", None, id="outside"),
    ],
)
def test_lookup(name: str, namespace: str, expected: str | None) -> None:
    assert network.lookup(RECORDS, name, namespace) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("web.default.svc.cluster.local", True, id="fully-qualified"),
        pytest.param("web.default.svc", True, id="svc"),
        pytest.param("worker-0.trainers", True, id="host-of-a-service-here"),
        pytest.param("worker-0.elsewhere", False, id="host-of-an-unknown-service"),
        pytest.param("example.com", False, id="internet-name"),
        pytest.param("web", False, id="single-label"),
        pytest.param("127.96.0.2", False, id="ip-address"),
        pytest.param("Web.default.svc", False, id="not-a-dns-name"),
    ],
)
def test_looks_like_cluster_name(value: str, expected: bool) -> None:
    assert network.looks_like_cluster_name(value, {"trainers", "web"}) is expected


# Probes


@pytest.mark.parametrize(
    ("probe", "initially", "results", "verdicts"),
    [
        pytest.param({}, False, "S", "P", id="readiness-passes-on-first-success"),
        pytest.param({}, True, "FFF", "PP-", id="default-failure-threshold-3"),
        pytest.param({"successThreshold": 3}, False, "SSS", "--P", id="success-threshold"),
        pytest.param({"successThreshold": 2}, False, "SFSS", "---P", id="a-failure-resets-successes"),
        pytest.param({"failureThreshold": 2}, True, "FSFSF", "PPPPP", id="a-success-resets-failures"),
        pytest.param({"failureThreshold": 1}, True, "FSF", "-P-", id="failure-threshold-1"),
        pytest.param({"failureThreshold": 2, "successThreshold": 2}, True, "FFSSFF", "P--PP-", id="both-thresholds"),
    ],
)
def test_prober_thresholds(probe: Object, initially: bool, results: str, verdicts: str) -> None:
    prober = probes.Prober(probe, initially)
    seen = []
    before = initially
    for result in results:
        changed = prober.record(probes.Result(result == "S", "" if result == "S" else "connection refused"))
        seen.append("P" if prober.passing else "-")
        assert changed is (prober.passing != before)
        before = prober.passing
    assert "".join(seen) == verdicts


def test_prober_keeps_the_last_failure_message_and_defaults() -> None:
    prober = probes.Prober({}, initially=True)
    prober.record(probes.Result(False, "HTTP probe failed with statuscode: 503"))
    prober.record(probes.Result(True))
    assert prober.last_message == "HTTP probe failed with statuscode: 503"
    assert (prober.period, prober.initial_delay) == (10.0, 0.0)


# Prometheus discovery


SCRAPED = {prometheus.SCRAPE: "true", prometheus.PORT: "9090", prometheus.PATH: "/stats"}


def test_scrape_target() -> None:
    pod = the_pod(
        "web-0",
        labels={"app.kubernetes.io/name": "web", "team-name": "ml"},
        annotations=SCRAPED,
        ports=[{"containerPort": 8080}],
    )

    assert prometheus.scrape_target(pod) == {
        "targets": ["127.244.0.5:9090"],
        "labels": {
            "app_kubernetes_io_name": "web",
            "team_name": "ml",
            "namespace": "default",
            "pod": "web-0",
            "node": "node-1",
            "__metrics_path__": "/stats",
            "__scheme__": "http",
        },
    }


@pytest.mark.parametrize(
    ("pod", "target"),
    [
        pytest.param(
            the_pod(annotations={prometheus.SCRAPE: "true"}, ports=[{"containerPort": 8000}, {"containerPort": 8001}]),
            "127.244.0.5:8000",
            id="first-container-port",
        ),
        pytest.param(
            the_pod(
                annotations={prometheus.SCRAPE: "true"},
                containers=[{"name": "a", "ports": []}, {"name": "b", "ports": [{"containerPort": 7000}]}],
            ),
            "127.244.0.5:7000",
            id="first-port-of-any-container",
        ),
        pytest.param(the_pod(annotations={prometheus.SCRAPE: "true"}), None, id="no-port-at-all"),
        pytest.param(the_pod(annotations={**SCRAPED, prometheus.SCRAPE: "false"}), None, id="scrape-false"),
        pytest.param(the_pod(), None, id="not-annotated"),
        pytest.param(the_pod(annotations=SCRAPED, phase="Pending"), None, id="pending"),
        pytest.param(the_pod(annotations=SCRAPED, phase="Succeeded"), None, id="succeeded"),
        pytest.param(the_pod(annotations=SCRAPED, ip=None), None, id="no-ip-yet"),
        pytest.param(the_pod(annotations=SCRAPED, deleting=True), None, id="terminating"),
    ],
)
def test_scrape_target_port_and_eligibility(pod: Object, target: str | None) -> None:
    found = prometheus.scrape_target(pod)
    assert (found["targets"][0] if found else None) == target


def test_scrape_target_path_and_scheme_defaults_and_overrides() -> None:
    plain = prometheus.scrape_target(the_pod(annotations={prometheus.SCRAPE: "true", prometheus.PORT: "1"}))
    https = prometheus.scrape_target(the_pod(annotations={**SCRAPED, prometheus.SCHEME: "https"}))
    assert plain is not None
    assert https is not None
    assert (plain["labels"]["__metrics_path__"], plain["labels"]["__scheme__"]) == ("/metrics", "http")
    assert (https["labels"]["__metrics_path__"], https["labels"]["__scheme__"]) == ("/stats", "https")


def test_targets_are_the_scrapeable_pods_sorted() -> None:
    pods = [
        the_pod("b", ip="127.244.0.9", annotations=SCRAPED),
        the_pod("skip", ip="127.244.0.1"),
        the_pod("a", ip="127.244.0.10", annotations=SCRAPED),
    ]
    assert [t["targets"] for t in prometheus.targets(pods)] == [["127.244.0.10:9090"], ["127.244.0.9:9090"]]


def test_prometheus_configuration_reads_the_targets_file_every_second(tmp_path: pathlib.Path) -> None:
    targets_file = tmp_path / "targets.json"
    assert prometheus.configuration(targets_file) == {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
            }
        ],
    }
