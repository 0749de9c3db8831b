"""The gatewayAPI traffic provider against a dev cluster's API server with the upstream HTTPRoute
CRD (Gateway API v1.6.1, tests/fixtures/gateway-api): the CRD's defaults and CEL rules accept what
Kiln writes, a split in force is not written again, and a route Kiln does not own keeps the rules
it does not manage exactly as they were."""

from __future__ import annotations

import pathlib
from typing import Any

from kiln_cluster import REPO, Kiln

from kiln.api import modeldeployment
from kiln.delivery import serving, traffic
from kiln.kube import client
from kiln.providers.traffic import base, gateway_api

CRD = REPO / "tests/fixtures/gateway-api/v1.6.1/gateway.networking.k8s.io_httproutes.yaml"
OLD, NEW = "1.0.0", "1.1.0"


def _install(kiln: Kiln) -> client.Client:
    kiln.kubectl("apply", "--server-side", "-f", str(CRD))
    kiln.kubectl("wait", "--for=condition=Established", "crd/httproutes.gateway.networking.k8s.io", "--timeout=30s")
    return client.connect(kubeconfig=str(pathlib.Path(kiln.devcluster.kubeconfig_path)))


def _split(weight: int, mirror: int = 0) -> traffic.Split:
    """Stable 1.0.0 and candidate 1.1.0 at `weight`, or stable alone (mirrored to 1.1.0 at `mirror`%)."""
    stable = traffic.Backend(serving.STABLE, serving.deployment_name("iris", OLD), OLD, 100 - weight)
    candidate = traffic.Backend(serving.CANDIDATE, serving.deployment_name("iris", NEW), NEW, weight)
    if mirror:
        return traffic.Split(
            (stable,), traffic.Mirror(serving.CANDIDATE, candidate.service, NEW, mirror, serving.STABLE)
        )
    return traffic.Split((stable, candidate) if weight else (stable,))


def _target(kube: client.Client, namespace: str, **settings: Any) -> base.Target:
    """A ModelDeployment `iris`'s traffic, owned by an object that exists: the garbage collector deletes
    a route whose owner is gone. A ConfigMap stands in for the ModelDeployment, which the operator
    beside would serve (the dev cluster's collector goes by the owner's uid alone)."""
    spec = modeldeployment.ModelDeploymentSpec.model_validate(
        {"model": "iris", "traffic": {"provider": "gatewayAPI", "gatewayAPI": settings}}
    )
    owner = kube.create(client.CONFIG_MAPS, {"metadata": {"name": "iris-owner", "namespace": namespace}})
    return base.Target(serving.Owner("iris", namespace, owner["metadata"]["uid"]), spec)


def test_the_route_kiln_owns_follows_the_split_and_is_not_rewritten(kiln: Kiln, namespace: str) -> None:
    kube = _install(kiln)
    provider = gateway_api.GatewayAPI()
    target = _target(kube, namespace, parentRefs=[{"name": "edge"}], hostnames=["iris.example.com"])
    for split in (_split(0), _split(10), _split(50), _split(0, mirror=20)):
        provider.apply(kube, target, split)
        assert provider.observe(kube, target) == split
        before = kube.get(client.HTTP_ROUTES, namespace, "iris")
        provider.apply(kube, target, split)
        after = kube.get(client.HTTP_ROUTES, namespace, "iris")
        assert before is not None
        assert after is not None
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_an_existing_route_keeps_its_other_rules(kiln: Kiln, namespace: str) -> None:
    kube = _install(kiln)
    unmanaged = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/metrics"}}],
        "backendRefs": [{"group": "", "kind": "Service", "name": "metrics-proxy", "port": 9090, "weight": 1}],
    }
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "storefront", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "rules": [unmanaged, {"backendRefs": [{"name": "iris-stable", "port": 80}]}],
        },
    }
    kube.create(client.HTTP_ROUTES, route)
    written = kube.get(client.HTTP_ROUTES, namespace, "storefront")
    assert written is not None
    kept = written["spec"]["rules"][0]
    provider = gateway_api.GatewayAPI()
    target = _target(kube, namespace, httpRoute="storefront")
    for split in (_split(0), _split(10), _split(50), _split(0)):
        provider.apply(kube, target, split)
        assert provider.observe(kube, target) == split
        found = kube.get(client.HTTP_ROUTES, namespace, "storefront")
        assert found is not None
        assert found["spec"]["rules"][0] == kept
        weights = [(ref["name"], ref["weight"]) for ref in found["spec"]["rules"][1]["backendRefs"]]
        assert weights == [(b.service, b.weight) for b in split.backends]
