"""The traffic providers' contract: one table of splits, through every provider's real implementation
against the in-memory API server, and through the fake the controller tests use.

For each case: what `observe` reads back after `apply` is the split (for `replicas`, the weights the
seeded ready pods achieve), and applying the same split again writes nothing. An HTTPRoute Kiln
does not own keeps every rule, match, filter and backendRef it does not manage exactly as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from kiln.api import modeldeployment, resources
from kiln.delivery import serving, traffic
from kiln.kube import client, fake
from kiln.providers import traffic as providers
from kiln.providers.traffic import base, gateway_api, replicas, router
from kiln.providers.traffic.fake import FakeTrafficRouter

NAMESPACE, NAME, UID = "shop", "iris", "8d3c6f0e-0000-0000-0000-000000000001"
OWNER = serving.Owner(NAME, NAMESPACE, UID)
REPLICAS = 10
OLD, NEW = "1.0.0", "1.1.0"
MODEL_DEPLOYMENTS = client.kiln_resource(resources.MODEL_DEPLOYMENT)


def backend(variant: str, version: str, weight: int) -> traffic.Backend:
    return traffic.Backend(variant, serving.deployment_name(NAME, version), version, weight)


STABLE, CANDIDATE = serving.STABLE, serving.CANDIDATE


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    split: traffic.Split
    stable: str
    candidate: str | None
    achieved: traffic.Split | None = None
    """What replica counts achieve, where that is not the split itself (None: refused)."""


SPLITS = [
    Case("first-deployment", traffic.Split((backend(STABLE, OLD, 100),)), OLD, None),
    Case("canary-90-10", traffic.Split((backend(STABLE, OLD, 90), backend(CANDIDATE, NEW, 10))), OLD, NEW),
    Case(
        "canary-85-15",
        traffic.Split((backend(STABLE, OLD, 85), backend(CANDIDATE, NEW, 15))),
        OLD,
        NEW,
        achieved=traffic.Split((backend(STABLE, OLD, 80), backend(CANDIDATE, NEW, 20))),
    ),
    Case("canary-50-50", traffic.Split((backend(STABLE, OLD, 50), backend(CANDIDATE, NEW, 50))), OLD, NEW),
    Case("promoted", traffic.Split((backend(STABLE, NEW, 100),)), NEW, None),
    Case(
        "mirror-20-compared",
        traffic.Split(
            (backend(STABLE, OLD, 100),),
            traffic.Mirror(CANDIDATE, serving.deployment_name(NAME, NEW), NEW, 20, STABLE),
        ),
        OLD,
        NEW,
    ),
]

UNMANAGED_RULES: list[dict[str, Any]] = [
    {
        "matches": [{"path": {"type": "PathPrefix", "value": "/metrics"}}],
        "backendRefs": [{"group": "", "kind": "Service", "name": "metrics-proxy", "port": 9090, "weight": 1}],
    },
    {
        "matches": [
            {"path": {"type": "Exact", "value": "/legacy"}, "headers": [{"type": "Exact", "name": "x-a", "value": "b"}]}
        ],
        "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-b", "value": "c"}]}}
        ],
        "backendRefs": [{"group": "", "kind": "Service", "name": "iris-legacy", "port": 8080, "weight": 3}],
    },
]
MANAGED_RULE: dict[str, Any] = {
    "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
    "filters": [
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [{"name": "x-shop", "value": "1"}]}}
    ],
    "backendRefs": [
        {"group": "", "kind": "Service", "name": "sorry-page", "port": 80, "weight": 0},
        {"group": "", "kind": "Service", "name": "iris-stable", "port": 80, "weight": 1},
        {"group": "", "kind": "Service", "name": "other-team", "namespace": "other", "port": 80, "weight": 0},
    ],
}


def existing_route() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "storefront", "namespace": NAMESPACE, "labels": {"team": "shop"}},
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}],
            "hostnames": ["shop.example.com"],
            "rules": [UNMANAGED_RULES[0], MANAGED_RULE, UNMANAGED_RULES[1]],
        },
    }


def spec_for(provider: str, **gateway: Any) -> modeldeployment.ModelDeploymentSpec:
    body: dict[str, Any] = {"model": NAME, "replicas": REPLICAS, "traffic": {"provider": provider}}
    if provider == "gatewayAPI":
        body["traffic"]["gatewayAPI"] = gateway or {"parentRefs": [{"name": "edge", "namespace": "gateways"}]}
    return modeldeployment.ModelDeploymentSpec.model_validate(body)


@dataclasses.dataclass
class World:
    """One provider under test, its target, and the API server it writes to."""

    router: base.TrafficRouter
    target: base.Target
    api: fake.FakeApi
    seed: Callable[[fake.FakeApi, Case], None] = lambda api, case: None

    def apply(self, case: Case) -> None:
        self.seed(self.api, case)
        self.router.apply(self.api, self.target, case.split)


def seed_replicas(api: fake.FakeApi, case: Case) -> None:
    """The ModelDeployment's status and its Deployments' ready pods, as the plan leaves them."""
    weight = case.split.weight_of(CANDIDATE)
    stable, candidate = serving.replica_split(REPLICAS, weight) if case.candidate else (REPLICAS, 0)
    status = {"stableVersion": case.stable, **({"candidateVersion": case.candidate} if case.candidate else {})}
    versions = [(client.DEPLOYMENTS, serving.deployment_name(NAME, version)) for version in (OLD, NEW)]
    for resource, name in [(MODEL_DEPLOYMENTS, NAME), *versions]:
        api.delete(resource, NAMESPACE, name)
    api.actions.clear()
    api.add(
        MODEL_DEPLOYMENTS,
        {"metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID}, "spec": {}, "status": status},
    )
    counts = {case.stable: stable, **({case.candidate: candidate} if case.candidate else {})}
    for version, count in counts.items():
        name = serving.deployment_name(NAME, version)
        api.add(
            client.DEPLOYMENTS,
            {
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"replicas": count},
                "status": {"readyReplicas": count},
            },
        )


def world(kind: str) -> World:
    api = fake.FakeApi(namespace=NAMESPACE)
    if kind == "router":
        return World(router.Router(), base.Target(OWNER, spec_for("router")), api)
    if kind == "gatewayAPI-owned":
        return World(gateway_api.GatewayAPI(), base.Target(OWNER, spec_for("gatewayAPI")), api)
    if kind == "gatewayAPI-existing":
        api.add(client.HTTP_ROUTES, existing_route())
        return World(gateway_api.GatewayAPI(), base.Target(OWNER, spec_for("gatewayAPI", httpRoute="storefront")), api)
    if kind == "replicas":
        return World(replicas.Replicas(), base.Target(OWNER, spec_for("replicas")), api, seed_replicas)
    return World(FakeTrafficRouter(), base.Target(OWNER, spec_for("router")), api)


KINDS = ["router", "gatewayAPI-owned", "gatewayAPI-existing", "replicas", "fake"]


def expected(kind: str, case: Case) -> traffic.Split | None:
    if kind != "replicas":
        return case.split
    if case.split.mirror is not None:
        return None
    return case.achieved or case.split


def in_order(split: traffic.Split | None) -> traffic.Split | None:
    """The split with its backends in variant order: kiln-router's document keeps them by name."""
    order = {STABLE: 0, CANDIDATE: 1}
    if split is None:
        return None
    return dataclasses.replace(split, backends=tuple(sorted(split.backends, key=lambda b: order.get(b.variant, 2))))


def test_every_provider_is_registered() -> None:
    assert set(providers.PROVIDERS) == set(modeldeployment.TrafficProviderName)
    for name, provider in providers.PROVIDERS.items():
        assert provider.name is name


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", SPLITS, ids=[case.id for case in SPLITS])
def test_observe_reads_back_what_apply_put_in_force(kind: str, case: Case) -> None:
    w = world(kind)
    assert w.router.observe(w.api, w.target) is None or kind == "replicas"
    want = expected(kind, case)
    if want is None:
        with pytest.raises(base.TrafficError, match=r"replicas cannot do .*mirroring"):
            w.apply(case)
        return
    w.apply(case)
    assert in_order(w.router.observe(w.api, w.target)) == want


@pytest.mark.parametrize("kind", KINDS)
def test_a_rollout_through_every_case_writes_only_changes(kind: str) -> None:
    w = world(kind)
    for case in SPLITS:
        want = expected(kind, case)
        if want is None:
            continue
        w.apply(case)
        assert in_order(w.router.observe(w.api, w.target)) == want, case.id
        before = len(w.api.actions)
        w.router.apply(w.api, w.target, case.split)
        assert w.api.actions[before:] == [], f"{case.id}: the same split applied again wrote"
        if isinstance(w.router, FakeTrafficRouter):
            assert w.router.applied[-1][2] == case.split


def _rules(api: fake.FakeApi) -> list[dict[str, Any]]:
    route = api.get(client.HTTP_ROUTES, NAMESPACE, "storefront")
    assert route is not None
    return list(route["spec"]["rules"])


def test_an_existing_route_keeps_everything_kiln_does_not_manage() -> None:
    w = world("gatewayAPI-existing")
    original = existing_route()
    for case in SPLITS:
        w.apply(case)
        rules = _rules(w.api)
        assert json.dumps(rules[0], sort_keys=False) == json.dumps(UNMANAGED_RULES[0], sort_keys=False)
        assert json.dumps(rules[2], sort_keys=False) == json.dumps(UNMANAGED_RULES[1], sort_keys=False)
        managed = rules[1]
        assert managed["matches"] == MANAGED_RULE["matches"]
        assert managed["filters"][0] == MANAGED_RULE["filters"][0]
        refs = managed["backendRefs"]
        assert refs[0] == MANAGED_RULE["backendRefs"][0]  # before ours, as before
        assert refs[-1] == MANAGED_RULE["backendRefs"][2]  # another namespace's Service is not ours
        ours = [(ref["name"], ref["weight"]) for ref in refs[1:-1]]
        assert ours == [(b.service, b.weight) for b in case.split.backends]
        mirrors = [item for item in managed["filters"] if item["type"] == "RequestMirror"]
        if case.split.mirror is None:
            assert mirrors == []
        else:
            assert mirrors == [
                {
                    "type": "RequestMirror",
                    "requestMirror": {
                        "backendRef": {"group": "", "kind": "Service", "name": case.split.mirror.service, "port": 80},
                        "percent": 20,
                    },
                }
            ]
    route = w.api.get(client.HTTP_ROUTES, NAMESPACE, "storefront")
    assert route is not None
    assert route["spec"]["parentRefs"] == original["spec"]["parentRefs"]
    assert route["spec"]["hostnames"] == original["spec"]["hostnames"]
    assert route["metadata"]["labels"] == {"team": "shop"}
    assert "ownerReferences" not in route["metadata"]


def test_an_existing_route_that_is_missing_is_a_traffic_error() -> None:
    w = world("gatewayAPI-existing")
    w.api.delete(client.HTTP_ROUTES, NAMESPACE, "storefront")
    with pytest.raises(base.TrafficError) as raised:
        w.apply(SPLITS[0])
    assert raised.value.message == (
        "HTTPRoute shop/storefront, named in spec.traffic.gatewayAPI.httpRoute, does not exist"
    )


def test_an_existing_route_without_a_rule_for_the_deployment_is_a_traffic_error() -> None:
    w = world("gatewayAPI-existing")
    route = existing_route()
    route["spec"]["rules"] = copy.deepcopy(UNMANAGED_RULES)
    w.api.delete(client.HTTP_ROUTES, NAMESPACE, "storefront")
    w.api.add(client.HTTP_ROUTES, route)
    with pytest.raises(base.TrafficError, match="has no rule with a backendRef to a Service of ModelDeployment iris"):
        w.apply(SPLITS[0])
    assert _rules(w.api) == UNMANAGED_RULES


class EditedMeanwhile(fake.FakeApi):
    """A person edits the route between Kiln's read and its write."""

    def get(self, resource: client.Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        found = super().get(resource, namespace, name)
        if resource == client.HTTP_ROUTES and found is not None:
            super().patch(resource, namespace, name, {"metadata": {"labels": {"edited": "yes"}}})
        return found


def test_a_route_edited_between_read_and_write_is_a_conflict() -> None:
    api = EditedMeanwhile(namespace=NAMESPACE)
    api.add(client.HTTP_ROUTES, existing_route())
    target = base.Target(OWNER, spec_for("gatewayAPI", httpRoute="storefront"))
    with pytest.raises(client.ConflictError):
        gateway_api.GatewayAPI().apply(api, target, SPLITS[1].split)


def test_the_route_kiln_owns() -> None:
    w = world("gatewayAPI-owned")
    w.api.add(client.SERVICES, {"metadata": {"name": "unrelated", "namespace": NAMESPACE}})
    w.apply(SPLITS[-1])
    route = w.api.get(client.HTTP_ROUTES, NAMESPACE, NAME)
    assert route is not None
    metadata = route["metadata"]
    assert metadata["labels"] == {"app.kubernetes.io/managed-by": "kiln", "kiln.dev/modeldeployment": NAME}
    assert metadata["ownerReferences"][0]["uid"] == UID
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge", "namespace": "gateways"}
    ]
    weighted, by_header = route["spec"]["rules"]
    assert weighted["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "iris-v1-0-0", "port": 80, "weight": 100}
    ]
    assert weighted["filters"][0]["requestMirror"]["percent"] == 20
    assert by_header["matches"][0]["headers"] == [{"type": "Exact", "name": "x-kiln-variant", "value": "candidate"}]
    assert by_header["backendRefs"][0]["name"] == "iris-v1-1-0"
    w.apply(SPLITS[1])
    weighted, by_header = w.api.get(client.HTTP_ROUTES, NAMESPACE, NAME)["spec"]["rules"]  # type: ignore[index]
    assert [ref["weight"] for ref in weighted["backendRefs"]] == [90, 10]
    assert "filters" not in weighted


def test_a_route_of_that_name_kiln_does_not_own_is_a_traffic_error() -> None:
    w = world("gatewayAPI-owned")
    route = existing_route()
    route["metadata"]["name"] = NAME
    w.api.add(client.HTTP_ROUTES, route)
    with pytest.raises(base.TrafficError, match="exists and is not owned by ModelDeployment iris"):
        w.apply(SPLITS[0])


@pytest.mark.parametrize(
    ("counts", "shares"),
    [([1, 2], [33, 67]), ([2, 1], [67, 33]), ([1, 1, 1], [34, 33, 33]), ([0, 0], [100, 0]), ([3], [100])],
)
def test_replica_shares_sum_to_100(counts: list[int], shares: list[int]) -> None:
    assert replicas.shares(counts) == shares


@pytest.mark.parametrize(
    ("replica_count", "weight", "pods"),
    [
        (3, 10, (2, 1)),
        (10, 15, (8, 2)),
        (10, 12, (8, 2)),
        (10, 50, (5, 5)),
        (1, 10, (1, 1)),
        (3, 100, (0, 3)),
        (3, 0, (3, 0)),
        (0, 0, (0, 0)),
    ],
)
def test_replica_split(replica_count: int, weight: int, pods: tuple[int, int]) -> None:
    assert serving.replica_split(replica_count, weight) == pods
