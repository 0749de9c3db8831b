"""The gatewayAPI and replicas traffic providers end to end: real kiln-server pods, `kiln run`
deciding, and the objects each provider splits traffic with, on the dev cluster.

gatewayAPI: the dev cluster has the upstream HTTPRoute CRD (Gateway API v1.6.1, vendored under
tests/fixtures/gateway-api) but no Gateway controller, so these tests read the HTTPRoute's
backendRefs rather than send requests through a Gateway. replicas: one Service `<md>` over every
serving pod, and the dev cluster's kube-proxy, which round-robins each new connection over the
ready endpoints, so the share a client sees is the share of the pods.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
import pytest
import yaml
from polling import eventually
from rollout_world import BODY, INFER, WAIT, World
from test_canary_rollout import at_step, canary, serving
from test_gateway_api import _install

from kiln.kube import client

STEPS_25_75 = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]
GATEWAY = {
    "provider": "gatewayAPI",
    "gatewayAPI": {"parentRefs": [{"name": "public"}], "hostnames": ["iris.example.com"]},
}
V1, V2 = "iris-v1-0-0", "iris-v1-1-0"
"""The Services (and Deployments) of versions 1.0.0 and 1.1.0."""
VERSION_LABEL = "kiln.dev/model-version"
VARIANT_HEADER = "x-kiln-variant"
SEEN = ("phase", "message", "stableVersion", "candidateVersion", "currentStepIndex", "weights", "readyReplicas")
"""The status fields a failed wait reports."""

REQUESTS = 200
"""Requests per measured share, each on a new connection: a multiple of the 4 endpoints, so that a
round-robin over them gives the pods' share exactly."""
SHARE_TOLERANCE = 0.05
"""How far the share answered may be from the achieved weight: 10 of the 200 requests, slack for
an endpoint joining or leaving while the requests are sent; a random pick would need more."""


@pytest.fixture(scope="module")
def routes(world: World) -> client.Client:
    """The HTTPRoute CRD established in the world's cluster; a client that reads the routes."""
    return _install(world.kiln)


def route(routes: client.Client, namespace: str, name: str) -> dict[str, Any]:
    found = routes.get(client.HTTP_ROUTES, namespace, name)
    assert found is not None, f"no HTTPRoute {namespace}/{name}"
    return found


def weights(rule: dict[str, Any]) -> list[tuple[str, int]]:
    return [(ref["name"], ref["weight"]) for ref in rule.get("backendRefs") or []]


def healthy(world: World, namespace: str, spec: dict[str, Any], *versions: str) -> dict[str, Any]:
    """Register the versions, deploy, and wait until the first serves; the status then. (With
    gatewayAPI there is no Service `<md>`, which `serving` returns the address of.)"""
    for version in versions:
        world.register(namespace, version)
    world.deploy(namespace, spec)
    return world.wait_for(
        namespace, "Healthy", lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == spec["version"]
    )


def promoted(world: World, namespace: str, version: str) -> dict[str, Any]:
    """Wait until `version` is stable and Healthy with no candidate; on a timeout, say what the
    status was instead."""
    try:
        return world.wait_for(
            namespace,
            f"{version} promoted",
            lambda s: (
                s.get("stableVersion") == version and s.get("phase") == "Healthy" and not s.get("candidateVersion")
            ),
        )
    except AssertionError as error:
        status = world.status(namespace)
        seen = {key: status.get(key) for key in SEEN}
        raise AssertionError(f"{error}; the status was {seen}") from None


# -- gatewayAPI ---------------------------------------------------------------------------------


def test_gateway_api_the_route_kiln_owns_follows_the_canary(
    world: World, namespace: str, routes: client.Client
) -> None:
    deployed = healthy(world, namespace, canary("1.0.0", STEPS_25_75, traffic=GATEWAY), "1.0.0", "1.1.0")
    assert deployed["url"] == "http://iris.example.com"
    first = route(routes, namespace, "iris")
    uid = world.md(namespace)["metadata"]["uid"]
    assert [ref["uid"] for ref in first["metadata"].get("ownerReferences") or []] == [uid]
    assert first["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}]
    assert first["spec"]["hostnames"] == ["iris.example.com"]
    assert [weights(rule) for rule in first["spec"]["rules"]] == [[(V1, 100)]]
    assert not world.kiln.apps().list_namespaced_deployment(namespace, label_selector="kiln.dev/component=router").items

    world.set_version(namespace, "1.1.0")
    for index, weight in ((1, 25), (3, 75)):
        status = at_step(world, namespace, index)
        assert status["weights"] == {"stable": 100 - weight, "canary": weight, "mirror": 0}
        # The split is put in force before the status that reports it is written.
        rules = route(routes, namespace, "iris")["spec"]["rules"]
        assert weights(rules[0]) == [(V1, 100 - weight), (V2, weight)], f"at step {index}"
        assert rules[1]["matches"][0]["headers"] == [{"type": "Exact", "name": VARIANT_HEADER, "value": "candidate"}]
        assert weights(rules[1]) == [(V2, 1)], "the candidate's header rule"
        world.kiln.kiln("promote", "md/iris", "-n", namespace)

    done = promoted(world, namespace, "1.1.0")
    last = route(routes, namespace, "iris")
    assert done["url"] == "http://iris.example.com"
    assert done["weights"] == {"stable": 100, "canary": 0, "mirror": 0}
    assert [weights(rule) for rule in last["spec"]["rules"]] == [[(V2, 100)]]
    assert last["spec"]["parentRefs"] == first["spec"]["parentRefs"]


def test_gateway_api_an_existing_route_keeps_the_rules_kiln_does_not_manage(
    world: World, namespace: str, routes: client.Client
) -> None:
    checkout = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "checkout"},
        "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 8080, "targetPort": 8080}]},
    }
    world.kiln.apply(namespace, checkout)
    rule_a = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/checkout"}}],
        "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-shop", "value": "a"}]}}
        ],
        "backendRefs": [{"name": "checkout", "port": 8080, "weight": 3}],
    }
    rule_b = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/v2/models/iris"}}],
        "backendRefs": [{"name": "iris-stable", "port": 80}],
    }
    shop = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop"},
        "spec": {"parentRefs": [{"name": "public"}], "hostnames": ["shop.example.com"], "rules": [rule_a, rule_b]},
    }
    world.kiln.apply(namespace, shop)
    created = route(routes, namespace, "shop")
    kept = json.dumps(created["spec"]["rules"][0], sort_keys=True)
    matches_b = created["spec"]["rules"][1]["matches"]

    def rules() -> list[dict[str, Any]]:
        found = route(routes, namespace, "shop")
        assert not found["metadata"].get("ownerReferences"), "Kiln took ownership of a route it was pointed at"
        assert found["spec"]["parentRefs"] == created["spec"]["parentRefs"]
        assert found["spec"]["hostnames"] == ["shop.example.com"]
        listed: list[dict[str, Any]] = found["spec"]["rules"]
        assert len(listed) == 2, listed
        assert json.dumps(listed[0], sort_keys=True) == kept, "rule A changed"
        assert listed[1]["matches"] == matches_b, "rule B's matches changed"
        return listed

    traffic = {"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": "shop"}}
    healthy(world, namespace, canary("1.0.0", STEPS_25_75, traffic=traffic), "1.0.0", "1.1.0")
    assert weights(rules()[1]) == [(V1, 100)]

    world.set_version(namespace, "1.1.0")
    for index, weight in ((1, 25), (3, 75)):
        at_step(world, namespace, index)
        assert weights(rules()[1]) == [(V1, 100 - weight), (V2, weight)], f"at step {index}"
        world.kiln.kiln("promote", "md/iris", "-n", namespace)
    promoted(world, namespace, "1.1.0")
    assert weights(rules()[1]) == [(V2, 100)]


def test_gateway_api_refuses_a_shadow_with_nothing_to_judge_it(
    world: World, namespace: str, routes: client.Client
) -> None:
    spec = {
        "model": "iris",
        "version": "1.0.0",
        "strategy": {"shadow": {"mirrorPercent": 100, "duration": "15s"}},
        "traffic": GATEWAY,
    }
    manifest = {"apiVersion": "kiln.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"}}
    refused = world.kiln.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({**manifest, "spec": spec}), check=False
    )
    assert refused.returncode != 0, refused.stdout
    assert "spec.traffic.provider" in refused.stderr, refused.stderr
    assert "a shadow over it needs strategy.shadow.analysis" in refused.stderr, refused.stderr
    listed = world.kiln.kubectl("get", "md", "-n", namespace, "-o", "name").stdout
    assert listed.strip() == ""


def test_gateway_api_the_route_mirrors_while_a_shadow_runs(world: World, namespace: str, routes: client.Client) -> None:
    metric = {
        "name": "answered",
        "provider": "prometheus",
        "query": "vector(1)",
        "interval": "2s",
        "count": 1000,
        "successCondition": "result > 0",
    }
    spec = {
        "model": "iris",
        "version": "1.0.0",
        "strategy": {"shadow": {"mirrorPercent": 40, "duration": "10m", "analysis": {"metrics": ["answered"]}}},
        "analysis": {"metrics": [metric]},
        "traffic": GATEWAY,
    }
    healthy(world, namespace, spec, "1.0.0", "1.1.0")

    world.set_version(namespace, "1.1.0")
    shadowing = world.wait_for(namespace, "shadowing", lambda s: (s.get("weights") or {}).get("mirror") == 40)
    (rule, *_) = route(routes, namespace, "iris")["spec"]["rules"]
    mirrors = [f["requestMirror"] for f in rule.get("filters") or [] if f.get("type") == "RequestMirror"]
    assert weights(rule)[0] == (V1, 100)
    assert [(m["backendRef"]["name"], m.get("percent")) for m in mirrors] == [(V2, 40)]
    assert "cannot compare" in shadowing["shadow"]["message"] or "discards" in shadowing["shadow"]["message"]

    world.set_version(namespace, "1.0.0")  # back to stable: the shadow stops and so does the mirror
    world.wait_for(namespace, "the shadow superseded", lambda s: not s.get("candidateVersion"))
    (rule, *_) = route(routes, namespace, "iris")["spec"]["rules"]
    assert not [f for f in rule.get("filters") or [] if f.get("type") == "RequestMirror"]


# -- replicas -----------------------------------------------------------------------------------


def endpoint_versions(world: World, namespace: str) -> Counter[str]:
    """The versions of the pods the Service `iris` sends to, as `kubectl get endpoints` lists them."""
    endpoints = json.loads(world.kiln.kubectl("get", "endpoints", "iris", "-n", namespace, "-o", "json").stdout)
    pods = world.kiln.core().list_namespaced_pod(namespace, label_selector="kiln.dev/modeldeployment=iris").items
    version_of = {pod.metadata.name: (pod.metadata.labels or {}).get(VERSION_LABEL) for pod in pods}
    names = [
        address.get("targetRef", {}).get("name")
        for subset in endpoints.get("subsets") or []
        for address in subset.get("addresses") or []
    ]
    return Counter(str(version_of.get(name)) for name in names)


def listing(world: World, namespace: str, wanted: dict[str, int]) -> None:
    """Wait until the Service `iris` has exactly `wanted` ready pods of each version."""
    seen: list[Counter[str]] = []

    def listed() -> bool:
        seen[:] = [endpoint_versions(world, namespace)]
        return seen[0] == Counter(wanted)

    try:
        eventually(listed, f"Endpoints iris to list {wanted} ready pods", WAIT)
    except AssertionError as error:
        raise AssertionError(f"{error}; they list {dict(seen[0]) if seen else None}") from None


def answered(url: str, requests: int = REQUESTS) -> Counter[str | None]:
    """The versions that answer `requests` requests, each on a connection of its own."""
    versions: Counter[str | None] = Counter()
    for _ in range(requests):
        response = httpx.post(url + INFER, json=BODY, headers={"Connection": "close"}, timeout=10)
        versions[response.json().get("model_version") if response.status_code == 200 else response.status_code] += 1
    return versions


def through_this_cluster(caplog: pytest.LogCaptureFixture, url: str) -> str:
    """`url`, once it is sure that this dev cluster's kube-proxy listens on it: every dev cluster on
    the machine hands out ClusterIPs from the same loopback range, and when another one already
    listens on the address, requests would be answered by that cluster's pods."""
    address = url.removeprefix("http://")
    taken = [record.getMessage() for record in caplog.records if f"cannot listen on {address}:" in record.getMessage()]
    assert not taken, f"{address} is another process's on this shared machine, not this cluster's: {taken[-1]}"
    return url


def test_replicas_the_replica_counts_are_the_split(
    world: World, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    spec = canary("1.0.0", steps, replicas=4, traffic={"provider": "replicas"})
    url = serving(world, namespace, spec, "1.0.0", "1.1.0")
    assert (world.replicas(namespace, V1), answered(through_this_cluster(caplog, url), 20)) == (4, {"1.0.0": 20})

    world.set_version(namespace, "1.1.0")
    for index, weight, split in ((1, 25, (3, 1)), (3, 50, (2, 2))):
        status = at_step(world, namespace, index)
        counts = (world.replicas(namespace, V1), world.replicas(namespace, V2))
        assert (sum(counts), counts) == (4, split), f"at step {index}"
        assert status["weights"] == {"stable": 100 - weight, "canary": weight, "mirror": 0}
        listing(world, namespace, {"1.0.0": split[0], "1.1.0": split[1]})
        seen = answered(through_this_cluster(caplog, url))
        assert set(seen) == {"1.0.0", "1.1.0"}, seen
        share = seen["1.1.0"] / REQUESTS
        assert abs(share - weight / 100) <= SHARE_TOLERANCE, f"{dict(seen)} answered at weight {weight}"
        move = ("resume",) if index == 1 else ("promote", "--full")
        world.kiln.kiln(*move, "md/iris", "-n", namespace)

    done = promoted(world, namespace, "1.1.0")
    assert done["weights"] == {"stable": 100, "canary": 0, "mirror": 0}
    listing(world, namespace, {"1.1.0": 4})

    def only_v2() -> bool:
        pods = world.kiln.core().list_namespaced_pod(namespace, label_selector="kiln.dev/component=server").items
        return sorted((pod.metadata.labels or {}).get(VERSION_LABEL) for pod in pods) == ["1.1.0"] * 4

    eventually(only_v2, "every serving pod to be 1.1.0's", WAIT)
    assert world.replicas(namespace, V2) == 4
    assert answered(through_this_cluster(caplog, url), 100) == {"1.1.0": 100}
