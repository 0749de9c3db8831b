"""Whether a replica acts under kopf peering: kopf's rule over its peering objects, with injected
time, and the replica that reads them at most once per poll."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import training_fixtures as fx
from training_fixtures import T0, at

from kiln.controllers import peering
from kiln.kube import fake

ME = "kiln-7d9f-abcde"
Object = dict[str, Any]


def peer(priority: int, *, seen: datetime.datetime | None = T0, lifetime: int = 15) -> Object:
    entry: Object = {"priority": priority, "lifetime": lifetime}
    if seen is not None:
        entry["lastseen"] = seen.isoformat()
    return entry


@pytest.mark.parametrize(
    ("peers", "now", "acts"),
    [
        pytest.param({}, T0, True, id="alone"),
        pytest.param({ME: peer(50)}, T0, True, id="only-itself"),
        pytest.param({ME: peer(50), "other": peer(20)}, at(5), True, id="a-lower-peer-stands-by"),
        pytest.param({ME: peer(50), "other": peer(90)}, at(5), False, id="a-higher-live-peer-acts"),
        pytest.param({ME: peer(50), "other": peer(50)}, at(5), False, id="equal-priorities-pause-both"),
        pytest.param({ME: peer(50), "other": peer(90)}, at(15), True, id="a-higher-peer-dead-at-its-lifetime"),
        pytest.param({ME: peer(50), "other": peer(90, seen=None)}, at(600), False, id="never-seen-counts-as-live"),
        pytest.param({ME: peer(50), "other": "garbage"}, T0, True, id="an-entry-that-is-no-peer"),
        pytest.param({ME: peer(50), "other": {"priority": "high"}}, T0, True, id="a-priority-that-is-no-number"),
        pytest.param({ME: peer(50), "other": {"priority": 90, "lastseen": "yesterday"}}, T0, True, id="no-time"),
        pytest.param(
            {ME: peer(50), "other": {"priority": 90, "lifetime": 60, "lastseen": "2024-06-11T10:00:00"}},
            at(30),
            False,
            id="a-bare-time-is-utc",
        ),
    ],
)
def test_kopfs_rule(peers: Object, now: datetime.datetime, acts: bool) -> None:
    assert peering.acts(peers, ME, 50, now) is acts


def test_the_identity_is_the_pods_name_where_the_chart_sets_it() -> None:
    assert peering.own_identity({"POD_ID": "kiln-7d9f-abcde"}) == "kiln-7d9f-abcde"
    assert peering.own_identity({}) != peering.own_identity({})  # elsewhere: unique per run


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cluster_peering(peers: Object) -> Object:
    return {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "default"}, "status": peers}


def test_a_replica_reads_the_peering_at_most_once_per_poll() -> None:
    api = fake.FakeApi(clock=fake.ManualClock(T0))
    api.add(peering.CLUSTER_PEERINGS, cluster_peering({ME: peer(50)}))
    ticks = Ticks()
    replica = peering.Replica(api, ME, 50, clock=api.clock, monotonic=ticks)

    assert replica.acting()
    api.patch(peering.CLUSTER_PEERINGS, None, "default", {"status": {"newcomer": peer(90)}}, subresource="status")
    ticks.now = peering.POLL_SECONDS / 2
    still = replica.acting()
    ticks.now = peering.POLL_SECONDS
    then = replica.acting()

    assert (still, then) == (True, False)


def test_without_a_peering_object_a_replica_acts_as_kopf_then_runs_standalone() -> None:
    replica = peering.Replica(fake.FakeApi(), ME, 50)

    assert replica.acting()


def test_a_replica_watching_namespaces_acts_only_if_every_namespaces_peering_lets_it() -> None:
    api = fake.FakeApi(namespace=fx.NAMESPACE, clock=fake.ManualClock(T0))
    for namespace, peers in (("team-a", {ME: peer(50)}), ("team-b", {ME: peer(50), "other": peer(70)})):
        body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "status": peers}
        api.add(peering.NAMESPACE_PEERINGS, {**body, "metadata": {"name": "default", "namespace": namespace}})

    only_a = peering.Replica(api, ME, 50, namespaces=("team-a",), clock=api.clock)
    both = peering.Replica(api, ME, 50, namespaces=("team-a", "team-b"), clock=api.clock)

    assert (only_a.acting(), both.acting()) == (True, False)
