"""The dev cluster's bookkeeping for scale gives the answers a full scan or a fresh check would give.

Each structure here replaces work done per event or per write with state kept
between them: `store.LabelIndex` (the endpoints controller's pods by label and
Services by selector), `scheduling.NodeUsage` (what bound pods take of each
node), `network.AddressRange` (pod addresses from a cursor), the compiled
fast path of `kube_schemas.validate`, and CRD rule ratcheting in
`schema.validate`. Every test compares the kept state with what recomputing
from scratch says, after sequences of events that add, change, move and remove.
"""

from __future__ import annotations

import collections
import copy
import ipaddress
import json
import random
from fractions import Fraction
from typing import Any

import pytest

from kiln.devcluster import errors, kinds, kube_schemas, network, registry, scheduling, schema, selectors, server, store
from kiln.devcluster.controllers import POD, SERVICE

Object = dict[str, Any]
NAMESPACES = ("team-a", "team-b")


def labelled(name: str, labels: dict[str, str] | None = None, namespace: str = "team-a") -> Object:
    metadata: Object = {"name": name, "namespace": namespace}
    if labels is not None:
        metadata["labels"] = labels
    return {"metadata": metadata}


def event(kind: str, obj: Object, previous: Object | None = None, resource: str = POD) -> store.Event:
    return store.Event(1, resource, kind, obj, previous)


def carrying_all(objects: dict[store.Key, Object], namespace: str, wanted: dict[str, str]) -> set[str]:
    """What a scan of every object finds: the names whose labels hold all of `wanted`."""
    return {
        name
        for (space, name), obj in objects.items()
        if space == namespace
        and selectors.selector_matches({"matchLabels": wanted}, obj["metadata"].get("labels") or {})
    }


def carrying_any(objects: dict[store.Key, Object], namespace: str, wanted: dict[str, str]) -> set[str]:
    return {
        name
        for (space, name), obj in objects.items()
        if space == namespace and set(wanted.items()) & set((obj["metadata"].get("labels") or {}).items())
    }


# --- store.LabelIndex ---------------------------------------------------------------------------------------------

FILLED = [
    labelled("web-1", {"app": "web", "tier": "front"}),
    labelled("web-2", {"app": "web", "tier": "back"}),
    labelled("db-1", {"app": "db", "tier": "back"}),
    labelled("bare"),
    labelled("web-1", {"app": "web", "tier": "front"}, namespace="team-b"),
]


@pytest.mark.parametrize(
    ("namespace", "wanted", "exactly"),
    [
        ("team-a", {"app": "web"}, {"web-1", "web-2"}),
        ("team-a", {"tier": "back"}, {"web-2", "db-1"}),
        ("team-a", {"app": "db"}, {"db-1"}),
        ("team-a", {"app": "cache"}, set()),
        ("team-a", {"app": "web", "tier": "nowhere"}, set()),
        ("team-b", {"app": "web"}, {"web-1"}),
        ("team-b", {"tier": "back"}, set()),
        ("team-c", {"app": "web"}, set()),
        ("team-a", {}, {"web-1", "web-2", "db-1", "bare"}),
        ("team-b", {}, {"web-1"}),
        ("team-c", {}, set()),
    ],
)
def test_having_all_finds_what_the_selector_picks_in_its_namespace(
    namespace: str, wanted: dict[str, str], exactly: set[str]
) -> None:
    index = store.LabelIndex(POD)
    index.fill(FILLED)
    assert index.having_all(namespace, wanted) == exactly


@pytest.mark.parametrize(
    "wanted",
    [{"app": "web", "tier": "front"}, {"app": "web", "tier": "back"}, {"tier": "back", "app": "db"}],
)
def test_having_all_of_several_labels_may_add_candidates_but_never_loses_a_match(wanted: dict[str, str]) -> None:
    index = store.LabelIndex(POD)
    index.fill(FILLED)
    found = index.having_all("team-a", wanted)
    objects = {store.key_of(obj): obj for obj in FILLED}
    assert carrying_all(objects, "team-a", wanted) <= found
    # candidates still carry at least one of the labels: none of the namespace's other objects
    assert found <= carrying_any(objects, "team-a", wanted)


@pytest.mark.parametrize(
    ("wanted", "exactly"),
    [
        ({"app": "db", "tier": "front"}, {"web-1", "db-1"}),
        ({"app": "web"}, {"web-1", "web-2"}),
        ({"app": "cache", "tier": "nowhere"}, set()),
        ({}, set()),
    ],
)
def test_having_any_finds_every_object_under_one_of_the_labels(wanted: dict[str, str], exactly: set[str]) -> None:
    index = store.LabelIndex(POD)
    index.fill(FILLED)
    assert index.having_any("team-a", wanted) == exactly


def test_labels_changed_by_an_update_move_the_object_between_keys() -> None:
    index = store.LabelIndex(POD)
    before = labelled("web-1", {"app": "web", "track": "canary"})
    index.observe(event(store.ADDED, before))
    after = labelled("web-1", {"app": "web", "track": "stable"})
    index.observe(event(store.MODIFIED, after, before))
    assert index.having_all("team-a", {"track": "canary"}) == set()
    assert index.having_any("team-a", {"track": "canary"}) == set()
    assert index.having_all("team-a", {"track": "stable"}) == {"web-1"}
    assert index.having_all("team-a", {"app": "web"}) == {"web-1"}
    unlabelled = labelled("web-1")
    index.observe(event(store.MODIFIED, unlabelled, after))
    assert index.having_any("team-a", {"app": "web", "track": "stable"}) == set()
    assert index.having_all("team-a", {}) == {"web-1"}


def test_a_deleted_object_leaves_every_key_and_the_namespace() -> None:
    index = store.LabelIndex(POD)
    index.fill(FILLED)
    index.observe(event(store.DELETED, labelled("web-1", {"app": "web", "tier": "front"})))
    assert index.having_all("team-a", {"app": "web"}) == {"web-2"}
    assert index.having_any("team-a", {"tier": "front"}) == set()
    assert index.having_all("team-a", {}) == {"web-2", "db-1", "bare"}
    assert index.having_all("team-b", {"app": "web"}) == {"web-1"}, "the other namespace's web-1 stays"
    index.observe(event(store.DELETED, labelled("never-seen", {"app": "web"})))
    assert index.having_all("team-a", {"app": "web"}) == {"web-2"}


def test_an_added_object_that_was_already_filled_is_kept_once() -> None:
    """A watch can replay an object the initial list already gave."""
    index = store.LabelIndex(POD)
    index.fill(FILLED)
    index.observe(event(store.ADDED, labelled("web-2", {"app": "web", "tier": "back"})))
    assert index.having_all("team-a", {"app": "web"}) == {"web-1", "web-2"}
    index.observe(event(store.DELETED, labelled("web-2", {"app": "web", "tier": "back"})))
    assert index.having_all("team-a", {"app": "web"}) == {"web-1"}


def test_events_of_other_resources_are_ignored() -> None:
    index = store.LabelIndex(POD)
    index.observe(event(store.ADDED, labelled("web", {"app": "web"}), resource=SERVICE))
    assert index.having_all("team-a", {}) == set()
    index.observe(event(store.ADDED, labelled("web", {"app": "web"})))
    index.observe(event(store.DELETED, labelled("web", {"app": "web"}), resource=SERVICE))
    assert index.having_all("team-a", {"app": "web"}) == {"web"}


def test_changing_an_answer_does_not_change_the_index() -> None:
    index = store.LabelIndex(POD)
    index.fill(FILLED)
    index.having_all("team-a", {"app": "web"}).clear()
    index.having_any("team-a", {"app": "web"}).add("intruder")
    index.having_all("team-a", {}).clear()
    assert index.having_all("team-a", {"app": "web"}) == {"web-1", "web-2"}
    assert index.having_all("team-a", {}) == {"web-1", "web-2", "db-1", "bare"}


def service(name: str, selector: dict[str, str] | None, namespace: str = "team-a") -> Object:
    spec: Object = {"ports": [{"port": 80}]}
    if selector is not None:
        spec["selector"] = selector
    return {"metadata": {"name": name, "namespace": namespace, "labels": {"owner": "kiln"}}, "spec": spec}


def by_selector() -> store.LabelIndex:
    return store.LabelIndex(SERVICE, lambda svc: svc.get("spec", {}).get("selector") or {})


def test_services_indexed_by_selector_are_found_from_a_pods_labels() -> None:
    index = by_selector()
    index.fill(
        [
            service("web", {"app": "web"}),
            service("web-front", {"app": "web", "tier": "front"}),
            service("db", {"app": "db"}),
            service("headless", None),
            service("web", {"app": "web"}, namespace="team-b"),
        ]
    )
    pod_labels = {"app": "web", "tier": "back"}
    candidates = index.having_any("team-a", pod_labels)
    # web-front shares app=web (a candidate), and the caller's full match rules it out
    assert candidates == {"web", "web-front"}
    assert index.having_any("team-a", {"owner": "kiln"}) == set(), "a Service's own labels are not indexed"
    assert index.having_any("team-b", pod_labels) == {"web"}
    changed = service("db", {"app": "web"})
    index.observe(event(store.MODIFIED, changed, service("db", {"app": "db"}), resource=SERVICE))
    assert index.having_any("team-a", {"app": "db"}) == set()
    assert index.having_any("team-a", pod_labels) == {"web", "web-front", "db"}
    index.observe(event(store.DELETED, service("web", {"app": "web"}), resource=SERVICE))
    assert index.having_any("team-a", pod_labels) == {"web-front", "db"}


LABEL_CHOICES = [{}, {"app": "web"}, {"app": "db"}, {"app": "web", "tier": "front"}, {"tier": "front"}]
SELECTORS = [{"app": "web"}, {"app": "db"}, {"tier": "front"}, {"app": "web", "tier": "front"}, {}]


@pytest.mark.parametrize("seed", range(6))
def test_the_index_agrees_with_a_scan_after_any_sequence_of_events(seed: int) -> None:
    rng = random.Random(seed)
    index = store.LabelIndex(POD)
    objects: dict[store.Key, Object] = {}
    for _ in range(120):
        key = (rng.choice(NAMESPACES), f"pod-{rng.randrange(6)}")
        previous = objects.get(key)
        if previous is not None and rng.random() < 0.3:
            del objects[key]
            index.observe(event(store.DELETED, previous))
        else:
            obj = labelled(key[1], dict(rng.choice(LABEL_CHOICES)), namespace=key[0])
            objects[key] = obj
            index.observe(event(store.ADDED if previous is None else store.MODIFIED, obj, previous))
        for namespace in NAMESPACES:
            for wanted in SELECTORS:
                matching = carrying_all(objects, namespace, wanted)
                found = index.having_all(namespace, wanted)
                assert matching <= found
                if len(wanted) <= 1:
                    assert found == matching
                assert index.having_any(namespace, wanted) == carrying_any(objects, namespace, wanted)


# --- scheduling.NodeUsage -----------------------------------------------------------------------------------------


def node(name: str, cpu: str = "8", version: str = "1", **spec: Any) -> Object:
    return {
        "metadata": {"name": name, "resourceVersion": version, "labels": {"kubernetes.io/hostname": name}},
        "spec": spec,
        "status": {"allocatable": {"cpu": cpu, "memory": "32Gi", "pods": "20", "nvidia.com/gpu": "2"}},
    }


NODES = [node("node-1"), node("node-2"), node("node-3", cpu="4")]
REQUESTS: list[dict[str, str]] = [
    {"cpu": "500m", "memory": "1Gi"},
    {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
    {},  # scored as 100m and 200Mi
    {"cpu": "1"},
]


def workload(name: str, requests: dict[str, str], created: int, namespace: str = "team-a") -> Object:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "creationTimestamp": f"2024-05-01T10:{created // 60:02d}:{created % 60:02d}Z",
        },
        "spec": {
            "schedulerName": "default-scheduler",
            "containers": [{"name": "main", "image": "registry.example/app:1", "resources": {"requests": requests}}],
        },
        "status": {"phase": "Pending"},
    }


def changed(pod: Object, rng: random.Random) -> Object:
    """The pod after one thing a cluster does to it: bound, started, finished, failed or marked for deletion."""
    pod = copy.deepcopy(pod)
    spec, status = pod["spec"], pod["status"]
    if not spec.get("nodeName"):
        spec["nodeName"] = rng.choice(NODES)["metadata"]["name"]
    else:
        step = rng.choice(["Running", "Succeeded", "Failed", "terminating", "conditions"])
        if step == "terminating":
            pod["metadata"]["deletionTimestamp"] = "2024-05-01T11:00:00Z"
        elif step == "conditions":
            status["conditions"] = [{"type": "Ready", "status": rng.choice(["True", "False"])}]
        else:
            status["phase"] = step
    return pod


def held(states: list[scheduling.NodeState]) -> dict[str, tuple[dict[str, Fraction], dict[str, Fraction]]]:
    """Requested and scored amounts per node; a tally that went back to zero is the same as none."""
    return {
        state.name: (
            {name: amount for name, amount in state.requested.items() if amount},
            {name: amount for name, amount in state.scored.items() if amount},
        )
        for state in states
    }


def placed(result: scheduling.Plan) -> list[tuple[str, str]]:
    return [(pod["metadata"]["name"], name) for pod, name in result.bindings]


@pytest.mark.parametrize("seed", range(8))
def test_usage_kept_from_pod_events_equals_usage_added_up_from_the_final_pods(seed: int) -> None:
    rng = random.Random(seed)
    usage = scheduling.NodeUsage.of([])
    pods: dict[store.Key, Object] = {}
    for step in range(150):
        namespace, name = rng.choice(NAMESPACES), f"pod-{rng.randrange(12)}"
        key = (namespace, name)
        current = pods.get(key)
        if current is None:
            current = workload(name, rng.choice(REQUESTS), step, namespace)
            if rng.random() < 0.3:  # re-added straight onto a node, as a static pod is
                current["spec"]["nodeName"] = rng.choice(NODES)["metadata"]["name"]
                current["status"]["phase"] = "Running"
        elif rng.random() < 0.2:
            del pods[key]
            usage.observe(current, gone=True)
            continue
        else:
            current = changed(current, rng)
        pods[key] = current
        usage.observe(current, gone=False)
    final = list(pods.values())
    assert any(scheduling.occupies_node(pod) for pod in final), "the sequence leaves some pods holding nodes"
    assert held(usage.states(NODES)) == held(scheduling.NodeUsage.of(final).states(NODES))

    waiting = [workload(f"new-{index}", rng.choice(REQUESTS), 1000 + index) for index in range(10)]
    everything = final + waiting
    fresh = scheduling.plan(everything, NODES, {})
    kept = scheduling.plan(everything, NODES, {}, usage=usage)
    assert placed(kept) == placed(fresh)
    assert [message for _, message in kept.unschedulable] == [message for _, message in fresh.unschedulable]


def test_a_pass_does_not_count_its_own_bindings_into_the_kept_usage() -> None:
    """A pass fills copies of the nodes; only the pod events that follow its bindings change the usage."""
    usage = scheduling.NodeUsage.of([])
    waiting = [workload(f"new-{index}", {"cpu": "3"}, index) for index in range(4)]
    first = scheduling.plan(waiting, NODES, {}, usage=usage)
    assert len(first.bindings) == 4
    assert held(usage.states(NODES)) == {name: ({}, {}) for name in ("node-1", "node-2", "node-3")}
    assert placed(scheduling.plan(waiting, NODES, {}, usage=usage)) == placed(first)


def test_a_pod_that_moves_node_is_taken_off_the_first() -> None:
    usage = scheduling.NodeUsage.of([])
    pod = workload("mover", {"cpu": "2"}, 0)
    pod["spec"]["nodeName"] = "node-1"
    usage.observe(pod, gone=False)
    moved = copy.deepcopy(pod)
    moved["spec"]["nodeName"] = "node-2"
    usage.observe(moved, gone=False)
    requested = held(usage.states(NODES))
    assert requested["node-1"] == ({}, {})
    assert requested["node-2"][0] == {"cpu": Fraction(2), "pods": Fraction(1)}


def test_a_node_whose_resource_version_changes_is_read_again() -> None:
    usage = scheduling.NodeUsage.of([])
    big = workload("big", {"cpu": "6"}, 0)
    small = [node("node-1", cpu="4", version="7")]
    (before,) = usage.states(small)
    assert before.allocatable["cpu"] == Fraction(4)
    assert placed(scheduling.plan([big], small, {}, usage=usage)) == []

    grown = [node("node-1", cpu="8", version="8")]
    (after,) = usage.states(grown)
    assert after.allocatable["cpu"] == Fraction(8)
    assert placed(scheduling.plan([big], grown, {}, usage=usage)) == [("big", "node-1")]

    cordoned = [node("node-1", cpu="8", version="9", unschedulable=True)]
    (state,) = usage.states(cordoned)
    assert state.unschedulable
    assert placed(scheduling.plan([big], cordoned, {}, usage=usage)) == []


@pytest.mark.parametrize("seed", range(6))
def test_what_a_pass_remembers_of_nodes_places_a_burst_as_looking_at_every_node_afresh_would(seed: int) -> None:
    rng = random.Random(seed)
    pods = [workload(f"p{index:02d}", rng.choice(REQUESTS), index) for index in range(40)]
    nodes = [node(f"node-{index}", cpu=rng.choice(["4", "8"])) for index in range(5)]

    remembered = placed(scheduling.plan(pods, nodes, {}))

    states = scheduling.NodeUsage.of([]).states(nodes)
    afresh = []
    for pod in pods:  # created in name order: the plan's order too
        best, _ = scheduling.place(pod, states)
        if best is not None:
            afresh.append((pod["metadata"]["name"], best.name))
    assert remembered == afresh
    assert len(remembered) < len(pods)  # the nodes filled up: refusals were remembered too


# --- network.AddressRange -----------------------------------------------------------------------------------------

TINY = ipaddress.ip_network("10.0.0.0/29")  # .2 to .6: .0 is the network, .1 the gateway, .7 broadcast
TINY_HOSTS = [f"10.0.0.{last}" for last in range(2, 7)]


@pytest.mark.parametrize(
    ("offset", "used", "expected"),
    [
        (0, set(), ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.2"]),
        (3, set(), ["10.0.0.5", "10.0.0.6", "10.0.0.2"]),
        (4, set(), ["10.0.0.6", "10.0.0.2"]),
        (7, set(), ["10.0.0.4", "10.0.0.5"]),  # an offset past the range's end wraps into it
        (0, {"10.0.0.3", "10.0.0.4"}, ["10.0.0.2", "10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.5"]),
        (4, {"10.0.0.2"}, ["10.0.0.6", "10.0.0.3"]),
    ],
)
def test_addresses_are_handed_out_in_turn_skipping_the_used_and_wrapping(
    offset: int, used: set[str], expected: list[str]
) -> None:
    """Addresses in use stay in use; between allocations nothing else is claimed, so the cursor alone moves on."""
    addresses = network.AddressRange(TINY, offset)
    assert [addresses.allocate(used) for _ in expected] == expected


def test_every_address_of_the_range_is_handed_out_once_before_it_is_full() -> None:
    addresses = network.AddressRange(TINY, 2)
    used: set[str] = set()
    for _ in TINY_HOSTS:
        used.add(addresses.allocate(used))
    assert sorted(used) == TINY_HOSTS
    with pytest.raises(errors.ApiError) as raised:
        addresses.allocate(used)
    assert raised.value.code == 500
    assert raised.value.reason == "InternalError"
    assert "10.0.0.0/29" in raised.value.message


def test_a_freed_address_is_not_handed_out_again_at_once() -> None:
    addresses = network.AddressRange(TINY)
    used = {addresses.allocate(set())}
    assert used == {"10.0.0.2"}
    used.add(addresses.allocate(used))
    used.discard("10.0.0.3")  # the pod just given .3 is gone
    assert addresses.allocate(used) == "10.0.0.4"
    used = {"10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"}
    assert addresses.allocate(used) == "10.0.0.3", "a freed address comes back once the others are taken"


def test_a_full_range_refuses_until_an_address_is_freed() -> None:
    addresses = network.AddressRange(TINY)
    with pytest.raises(errors.ApiError):
        addresses.allocate(set(TINY_HOSTS))
    assert addresses.allocate(set(TINY_HOSTS) - {"10.0.0.5"}) == "10.0.0.5"


# --- kube_schemas.validate fast path ------------------------------------------------------------------------------


def kube_pod(**container: Any) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "team-a", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {"name": "main", "image": "registry.example/app:1", "ports": [{"containerPort": 8080}], **container}
            ]
        },
    }


def without_name() -> Object:
    pod = kube_pod()
    del pod["spec"]["containers"][0]["name"]
    return pod


def with_metadata(**fields: Any) -> Object:
    pod = kube_pod()
    pod["metadata"].update(fields)
    return pod


VALID_PODS = {
    "plain": kube_pod(),
    "cpu as a number": kube_pod(resources={"requests": {"cpu": 1, "memory": "1Gi"}}),
    "probe port by name": kube_pod(readinessProbe={"httpGet": {"port": "http"}}),
    # fastjsonschema checks the date-time format and refuses it; jsonschema, whose verdict counts, does not
    "odd timestamp": with_metadata(creationTimestamp="yesterday"),
}
INVALID_PODS = {
    "port not a number": kube_pod(ports=[{"containerPort": "x"}]),
    "port a boolean": kube_pod(ports=[{"containerPort": True}]),
    "container without name": without_name(),
    "label not a string": with_metadata(labels={"app": 1}),
    "env without name": kube_pod(env=[{"value": "1"}]),
    "probe port a list": kube_pod(readinessProbe={"httpGet": {"port": [8080]}}),
    "containers not a list": {**kube_pod(), "spec": {"containers": {}}},
}


@pytest.fixture
def counted_afresh(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[tuple[str, str]]:
    """No kind counts as written often yet, whatever other tests in this process validated."""
    validated: collections.Counter[tuple[str, str]] = collections.Counter()
    monkeypatch.setattr(kube_schemas, "_validated", validated)
    return validated


def test_past_the_threshold_the_compiled_check_answers_for_valid_objects(
    counted_afresh: collections.Counter[tuple[str, str]],
) -> None:
    pod = kube_pod()
    for _ in range(kube_schemas.COMPILE_AFTER_WRITES - 1):
        assert kube_schemas.validate(pod) == []
    assert not kube_schemas._passes_quickly(pod), "up to the threshold, jsonschema alone answers"
    assert kube_schemas._passes_quickly(pod), "the write past the threshold is the first checked quickly"
    assert counted_afresh[("v1", "Pod")] == kube_schemas.COMPILE_AFTER_WRITES + 1
    invalid = INVALID_PODS["port not a number"]
    assert not kube_schemas._passes_quickly(invalid)
    assert kube_schemas.validate(invalid) != []


@pytest.mark.parametrize("pod", VALID_PODS.values(), ids=VALID_PODS.keys())
@pytest.mark.usefixtures("counted_afresh")
def test_a_valid_pod_stays_valid_on_the_fast_path(pod: Object, monkeypatch: pytest.MonkeyPatch) -> None:
    assert kube_schemas.validate(pod) == []
    monkeypatch.setattr(kube_schemas, "COMPILE_AFTER_WRITES", 0)
    assert kube_schemas.validate(pod) == []
    assert kube_schemas.validate(kube_pod()) == []


@pytest.mark.parametrize("pod", INVALID_PODS.values(), ids=INVALID_PODS.keys())
@pytest.mark.usefixtures("counted_afresh")
def test_an_invalid_pod_gets_the_same_errors_on_the_fast_path(pod: Object, monkeypatch: pytest.MonkeyPatch) -> None:
    first = kube_schemas.validate(pod)  # written once: jsonschema alone
    assert first != []
    monkeypatch.setattr(kube_schemas, "COMPILE_AFTER_WRITES", 0)
    assert kube_schemas._passes_quickly(kube_pod()), "the compiled check is in use"
    assert kube_schemas.validate(pod) == first


def test_the_fast_path_does_not_change_the_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_schemas, "COMPILE_AFTER_WRITES", 0)
    pod = kube_pod(resources={"limits": {"cpu": "1"}})
    stored = copy.deepcopy(pod)
    assert kube_schemas.validate(pod) == []
    assert pod == stored


# --- schema.validate: CRD rules ratchet -----------------------------------------------------------------------------

BOUNDS_RULE = {"rule": "self.min <= self.max", "message": "min must not exceed max"}
RANGE_SCHEMA: schema.Schema = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "x-kubernetes-validations": [BOUNDS_RULE],
            "properties": {
                "min": {"type": "integer"},
                "max": {"type": "integer"},
                "storage": {
                    "type": "string",
                    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "storage is immutable"}],
                },
                "replicas": {
                    "type": "integer",
                    "x-kubernetes-validations": [{"rule": "self > oldSelf", "message": "replicas must grow"}],
                },
                "limits": {
                    "type": "object",
                    "x-kubernetes-validations": [BOUNDS_RULE],
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                },
                "ports": {
                    "type": "array",
                    "items": {
                        "type": "integer",
                        "x-kubernetes-validations": [{"rule": "self > 0", "message": "ports are positive"}],
                    },
                },
            },
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
    },
}
SPEC_BROKEN = 'spec: Invalid value: "object": min must not exceed max'
LIMITS_BROKEN = 'spec.limits: Invalid value: "object": min must not exceed max'
STORAGE_CHANGED = 'spec.storage: Invalid value: "string": storage is immutable'


def resource(status: str = "Pending", **spec: Any) -> Object:
    return {"spec": {"min": 1, "max": 3, "storage": "ssd", **spec}, "status": {"phase": status}}


@pytest.mark.parametrize(
    ("obj", "old", "expected"),
    [
        pytest.param(resource(), None, [], id="create, valid"),
        pytest.param(resource(min=5), None, [SPEC_BROKEN], id="create, broken spec"),
        pytest.param(resource(limits={"min": 2, "max": 1}), None, [LIMITS_BROKEN], id="create, broken limits"),
        pytest.param(resource(storage="hdd"), None, [], id="create: no oldSelf, no transition rule"),
        pytest.param(resource("Running", min=5), resource(min=5), [], id="status-only write of a broken spec"),
        pytest.param(resource(min=5), resource(min=5), [], id="unchanged broken spec"),
        pytest.param(resource(min=6), resource(min=5), [SPEC_BROKEN], id="changed spec, still broken"),
        pytest.param(resource(min=5), resource(), [SPEC_BROKEN], id="changed spec, newly broken"),
        pytest.param(resource(), resource(min=5), [], id="changed spec, mended"),
        pytest.param(
            resource(max=4, limits={"min": 2, "max": 1}),
            resource(limits={"min": 2, "max": 1}),
            [],
            id="changed spec, unchanged broken limits",
        ),
        pytest.param(
            resource(limits={"min": 3, "max": 1}),
            resource(limits={"min": 2, "max": 1}),
            [LIMITS_BROKEN],
            id="changed broken limits",
        ),
        pytest.param(resource(storage="hdd"), resource(), [STORAGE_CHANGED], id="transition rule, changed value"),
        pytest.param(
            resource("Running", storage="hdd", min=5),
            resource(),
            [STORAGE_CHANGED, SPEC_BROKEN],
            id="transition rule and spec rule together",
        ),
        pytest.param(resource(max=9), resource(), [], id="transition rule, unchanged value"),
        pytest.param(
            resource("Running", replicas=3),
            resource(replicas=3),
            ['spec.replicas: Invalid value: "integer": replicas must grow'],
            id="transition rules are never ratcheted",
        ),
        pytest.param(resource(ports=[-1]), resource(ports=[-1], max=2), [], id="unchanged list of a broken item"),
        pytest.param(
            resource(ports=[-1, 80]),
            resource(ports=[-1]),
            ['spec.ports[0]: Invalid value: "integer": ports are positive'],
            id="changed list: its items are checked",
        ),
    ],
)
def test_rules_of_values_an_update_leaves_unchanged_are_not_run_again(
    obj: Object, old: Object | None, expected: list[str]
) -> None:
    assert [str(error) for error in schema.validate(RANGE_SCHEMA, obj, old)] == expected


# --- registry.bind ------------------------------------------------------------------------------------------------


def bound_cluster() -> tuple[registry.Registry, kinds.ResourceType]:
    cluster = registry.Registry(store.Store(None))
    cluster.create(cluster.types.get("", "v1", "namespaces"), "", {"metadata": {"name": "team-a"}})
    pods_type = cluster.types.get("", "v1", "pods")
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
    created = cluster.create(pods_type, "team-a", workload("web", {"cpu": "1"}, 0))
    cluster.update(
        pods_type, "team-a", "web", {**created, "status": {"conditions": [unschedulable]}}, subresource="status"
    )
    return cluster, pods_type


def test_a_binding_sets_the_node_and_the_scheduled_condition_in_one_write() -> None:
    cluster, pods_type = bound_cluster()
    before = cluster.store.resource_version

    bound = cluster.bind(pods_type, "team-a", "web", "node-2", manager="default-scheduler")

    assert cluster.store.resource_version == before + 1
    assert bound["spec"]["nodeName"] == "node-2"
    (scheduled,) = bound["status"]["conditions"]
    assert (scheduled["type"], scheduled["status"]) == ("PodScheduled", "True")
    assert {"reason", "message"}.isdisjoint(scheduled)
    assert [entry["manager"] for entry in bound["metadata"]["managedFields"]][-1] == "default-scheduler"


def test_a_pod_bound_already_cannot_be_bound_again_and_is_left_as_it_was() -> None:
    cluster, pods_type = bound_cluster()
    cluster.bind(pods_type, "team-a", "web", "node-2", manager=None)
    stored = copy.deepcopy(cluster.store.get("pods", "team-a", "web"))

    with pytest.raises(errors.ApiError, match='already assigned to node "node-2"') as refused:
        cluster.bind(pods_type, "team-a", "web", "node-3", manager=None)

    assert refused.value.code == 409
    assert cluster.store.get("pods", "team-a", "web") == stored


# --- what the API server writes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"metadata": {"name": "web", "labels": {"team": "ä"}}, "spec": {"replicas": 3}}, id="object"),
        pytest.param({"spec": {"huge": 2**70, "small": -1}}, id="an integer beyond 64 bits"),
    ],
)
def test_what_the_api_server_writes_reads_back_as_the_object(document: Object) -> None:
    assert json.loads(server._encoded(document)) == document
