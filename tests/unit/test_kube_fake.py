"""The in-memory API server keeps the rules a controller relies on, worded as kube-apiserver words them."""

from __future__ import annotations

import datetime
import inspect
from typing import Any

import pytest

from kiln.api import resources
from kiln.kube import client, fake, patches

TRAINING_JOBS = client.kiln_resource(resources.TRAINING_JOB)
Object = dict[str, Any]


def pod(name: str, namespace: str = "ml", labels: dict[str, str] | None = None, **extra: Any) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "python"}]},
        **extra,
    }


def owned_by(owner: Object, body: Object) -> Object:
    reference = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"]}
    body["metadata"]["ownerReferences"] = [{**reference, "uid": owner["metadata"]["uid"]}]
    return body


def job(name: str = "bert") -> Object:
    return {
        "apiVersion": TRAINING_JOBS.api_version,
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "ml"},
    }


def test_a_created_object_gets_uid_resource_version_generation_and_creation_time() -> None:
    clock = fake.ManualClock(datetime.datetime(2025, 3, 4, 5, 6, 7, tzinfo=datetime.UTC))
    api = fake.FakeApi(clock=clock)
    created = api.create(client.PODS, pod("a"))
    metadata = created["metadata"]
    assert metadata["uid"]
    assert metadata["resourceVersion"] == "1"
    assert metadata["generation"] == 1
    assert metadata["creationTimestamp"] == "2025-03-04T05:06:07Z"
    assert api.get(client.PODS, "ml", "a") == created


def test_a_seeded_object_keeps_its_status_and_the_server_fields_it_names() -> None:
    api = fake.FakeApi()
    seeded = pod("a", status={"phase": "Running"})
    seeded["metadata"] |= {"uid": "u-1", "creationTimestamp": "2020-01-01T00:00:00Z"}
    stored = api.add(client.PODS, seeded)[0]
    assert stored["status"] == {"phase": "Running"}
    assert (stored["metadata"]["uid"], stored["metadata"]["creationTimestamp"]) == ("u-1", "2020-01-01T00:00:00Z")
    assert stored["metadata"]["generation"] == 1
    assert api.actions == []


def test_uids_and_resource_versions_are_deterministic_and_the_version_is_global() -> None:
    first, second = fake.FakeApi(), fake.FakeApi()
    for api in (first, second):
        api.create(client.PODS, pod("a"))
        api.create(client.SERVICES, {"metadata": {"name": "a", "namespace": "ml"}})
    assert first.list(client.SERVICES, "ml") == second.list(client.SERVICES, "ml")
    assert first.list(client.SERVICES, "ml")[0]["metadata"]["resourceVersion"] == "2"


def test_creating_an_existing_name_is_a_conflict_worded_like_the_api_server() -> None:
    api = fake.FakeApi()
    api.create(client.PODS, pod("a"))
    with pytest.raises(client.ConflictError) as refused:
        api.create(client.PODS, pod("a"))
    assert (refused.value.status, refused.value.reason) == (409, "AlreadyExists")
    assert refused.value.message == 'pods "a" already exists'


def test_a_kiln_resource_is_named_with_its_group_in_messages() -> None:
    api = fake.FakeApi()
    api.create(TRAINING_JOBS, job())
    with pytest.raises(client.ConflictError, match=r'trainingjobs\.kiln\.dev "bert" already exists'):
        api.create(TRAINING_JOBS, job())


def test_a_missing_object_is_none_to_get_and_not_found_to_patch() -> None:
    api = fake.FakeApi()
    assert api.get(client.PODS, "ml", "gone") is None
    with pytest.raises(client.NotFoundError) as refused:
        api.patch(client.PODS, "ml", "gone", {"metadata": {"labels": {"a": "b"}}})
    assert (refused.value.status, refused.value.message) == (404, 'pods "gone" not found')


def test_the_same_name_in_another_namespace_is_another_object() -> None:
    api = fake.FakeApi()
    api.create(client.PODS, pod("a", namespace="ml"))
    api.create(client.PODS, pod("a", namespace="web"))
    assert [item["metadata"]["namespace"] for item in api.list(client.PODS, None)] == ["ml", "web"]


def test_a_patch_is_an_rfc_7386_merge_patch() -> None:
    api = fake.FakeApi()
    api.create(client.PODS, pod("a", labels={"keep": "1", "drop": "2"}))
    patched = api.patch(client.PODS, "ml", "a", {"metadata": {"labels": {"drop": None, "new": "3"}}})
    assert patched["metadata"]["labels"] == {"keep": "1", "new": "3"}
    assert patched["spec"]["containers"] == [{"name": "main", "image": "python"}]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 4}}),
        ({"a": [1, 2]}, {"a": [3]}),
        ({"a": {"b": 1}}, {}),
        ({}, {"a": {"b": {"c": "d"}}}),
    ],
)
def test_applying_the_merge_patch_between_two_states_gives_the_second(old: Object, new: Object) -> None:
    assert fake.apply_merge_patch(old, patches.merge_patch(old, new)) == new


def test_every_write_bumps_the_resource_version_and_spec_changes_bump_the_generation() -> None:
    api = fake.FakeApi()
    api.create(client.PODS, pod("a"))
    relabelled = api.patch(client.PODS, "ml", "a", {"metadata": {"labels": {"a": "b"}}})
    respecced = api.patch(client.PODS, "ml", "a", {"spec": {"nodeName": "gpu-a"}})
    assert (relabelled["metadata"]["resourceVersion"], relabelled["metadata"]["generation"]) == ("2", 1)
    assert (respecced["metadata"]["resourceVersion"], respecced["metadata"]["generation"]) == ("3", 2)


def test_an_object_without_spec_has_no_generation() -> None:
    api = fake.FakeApi()
    created = api.create(client.SERVICE_ACCOUNTS, {"metadata": {"name": "trainer", "namespace": "ml"}})
    assert "generation" not in created["metadata"]


def test_a_patch_carrying_a_stale_resource_version_is_refused() -> None:
    api = fake.FakeApi()
    read = api.create(client.PODS, pod("a"))
    api.patch(client.PODS, "ml", "a", {"metadata": {"labels": {"a": "b"}}})
    stale = {"metadata": {"resourceVersion": read["metadata"]["resourceVersion"], "labels": {"a": "c"}}}
    with pytest.raises(client.ConflictError) as refused:
        api.patch(client.PODS, "ml", "a", stale)
    assert refused.value.message == (
        'Operation cannot be fulfilled on pods "a": the object has been modified;'
        " please apply your changes to the latest version and try again"
    )
    assert api.get(client.PODS, "ml", "a")["metadata"]["labels"] == {"a": "b"}  # type: ignore[index]


def test_a_patch_carrying_the_current_resource_version_is_accepted() -> None:
    api = fake.FakeApi()
    read = api.create(client.PODS, pod("a"))
    fresh = {"metadata": {"resourceVersion": read["metadata"]["resourceVersion"], "labels": {"a": "c"}}}
    assert api.patch(client.PODS, "ml", "a", fresh)["metadata"]["labels"] == {"a": "c"}


def test_the_server_owns_identity_fields_whatever_a_patch_says() -> None:
    api = fake.FakeApi()
    created = api.create(client.PODS, pod("a"))
    patched = api.patch(client.PODS, "ml", "a", {"metadata": {"uid": "mine", "creationTimestamp": "then"}})
    for field in ("uid", "creationTimestamp", "name", "namespace"):
        assert patched["metadata"][field] == created["metadata"][field]


def test_create_drops_status_and_only_the_status_subresource_writes_it() -> None:
    api = fake.FakeApi()
    created = api.create(client.PODS, pod("a", status={"phase": "Running"}))
    assert "status" not in created
    ignored = api.patch(client.PODS, "ml", "a", {"status": {"phase": "Running"}, "metadata": {"labels": {"a": "b"}}})
    assert "status" not in ignored
    assert ignored["metadata"]["labels"] == {"a": "b"}
    written = api.patch(client.PODS, "ml", "a", {"status": {"phase": "Running"}}, subresource="status")
    assert written["status"] == {"phase": "Running"}


def test_a_status_write_changes_nothing_but_status_and_keeps_the_generation() -> None:
    api = fake.FakeApi()
    api.create(client.PODS, pod("a"))
    written = api.patch(
        client.PODS, "ml", "a", {"status": {"phase": "Running"}, "spec": {"nodeName": "x"}}, subresource="status"
    )
    assert "nodeName" not in written["spec"]
    assert written["metadata"]["generation"] == 1
    assert written["metadata"]["resourceVersion"] == "2"


def test_patch_status_turns_status_into_the_one_given_and_refuses_a_stale_object() -> None:
    api = fake.FakeApi()
    seeded = api.add(client.PODS, pod("a", status={"phase": "Pending", "message": "waiting"}))[0]
    written = api.patch_status(client.PODS, seeded, {"phase": "Running"})
    assert written["status"] == {"phase": "Running"}
    with pytest.raises(client.ConflictError):
        api.patch_status(client.PODS, seeded, {"phase": "Failed"})


def test_create_or_patch_creates_then_merges() -> None:
    api = fake.FakeApi()
    api.create_or_patch(client.PODS, pod("a", labels={"a": "1"}))
    merged = api.create_or_patch(client.PODS, pod("a", labels={"b": "2"}))
    assert merged["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert [(action.verb, action.name) for action in api.actions] == [("create", "a"), ("patch", "a")]


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        (None, ["gpu", "cpu", "bare"]),
        ("", ["gpu", "cpu", "bare"]),
        ("kind=gpu", ["gpu"]),
        ("kind==gpu", ["gpu"]),
        ("kind!=gpu", ["cpu", "bare"]),
        ("kind in (gpu, cpu)", ["gpu", "cpu"]),
        ("kind notin (gpu)", ["cpu", "bare"]),
        ("kind", ["gpu", "cpu"]),
        ("!kind", ["bare"]),
        ("kind,tier=a", ["gpu"]),
        ("kind in (gpu,cpu),tier!=a", ["cpu"]),
        ("tier=a, !kind", []),
    ],
)
def test_list_filters_by_label_selector(selector: str | None, names: list[str]) -> None:
    api = fake.FakeApi()
    api.create(client.PODS, pod("gpu", labels={"kind": "gpu", "tier": "a"}))
    api.create(client.PODS, pod("cpu", labels={"kind": "cpu", "tier": "b"}))
    api.create(client.PODS, pod("bare"))
    found = [item["metadata"]["name"] for item in api.list(client.PODS, "ml", selector)]
    assert sorted(found) == sorted(names)


def test_a_selector_that_does_not_parse_is_a_bad_request() -> None:
    with pytest.raises(client.ApiError) as refused:
        fake.FakeApi().list(client.PODS, "ml", "a in b")
    assert refused.value.status == 400


def test_list_in_a_namespace_or_across_all_of_them() -> None:
    api = fake.FakeApi()
    api.create(client.PODS, pod("a", namespace="ml"))
    api.create(client.PODS, pod("b", namespace="web"))
    assert [item["metadata"]["name"] for item in api.list(client.PODS, "web")] == ["b"]
    assert [item["metadata"]["name"] for item in api.list(client.PODS, None)] == ["a", "b"]


def test_cluster_scoped_objects_ignore_the_namespace() -> None:
    api = fake.FakeApi()
    api.create(client.NODES, {"metadata": {"name": "gpu-a"}})
    assert api.get(client.NODES, "ml", "gpu-a") is not None
    assert len(api.list(client.NODES, "ml")) == 1


def test_a_namespaced_object_needs_a_namespace() -> None:
    with pytest.raises(client.ApiError) as refused:
        fake.FakeApi().create(client.PODS, {"metadata": {"name": "a"}})
    assert refused.value.status == 400


@pytest.mark.parametrize("propagation", [None, "Background", "Foreground"])
def test_deleting_an_owner_deletes_its_dependents_and_theirs(propagation: str | None) -> None:
    api = fake.FakeApi()
    owner = api.create(TRAINING_JOBS, job())
    child = api.create(client.PODS, owned_by(owner, pod("worker-0")))
    api.create(client.SERVICES, owned_by(child, {"metadata": {"name": "grandchild", "namespace": "ml"}}))
    api.create(client.PODS, pod("stranger"))
    api.delete(TRAINING_JOBS, "ml", "bert", propagation)
    assert api.get(TRAINING_JOBS, "ml", "bert") is None
    assert [item["metadata"]["name"] for item in api.list(client.PODS, "ml")] == ["stranger"]
    assert api.list(client.SERVICES, "ml") == []


def test_deleting_with_orphan_keeps_dependents_without_the_reference_to_the_owner() -> None:
    api = fake.FakeApi()
    owner = api.create(TRAINING_JOBS, job())
    other = api.create(TRAINING_JOBS, job("other"))
    api.create(client.PODS, owned_by(owner, pod("only-owned")))
    both = owned_by(owner, pod("co-owned"))
    both["metadata"]["ownerReferences"].append(
        {"kind": "TrainingJob", "name": "other", "uid": other["metadata"]["uid"]}
    )
    api.create(client.PODS, both)
    api.delete(TRAINING_JOBS, "ml", "bert", propagation="Orphan")
    only = api.get(client.PODS, "ml", "only-owned")
    co_owned = api.get(client.PODS, "ml", "co-owned")
    assert only is not None
    assert "ownerReferences" not in only["metadata"]
    assert co_owned is not None
    assert [reference["name"] for reference in co_owned["metadata"]["ownerReferences"]] == ["other"]


def test_deleting_what_is_gone_is_fine_and_records_nothing() -> None:
    api = fake.FakeApi()
    api.delete(client.PODS, "ml", "gone")
    assert api.actions == []


def test_every_accepted_write_is_recorded_but_not_the_seeded_world_nor_refusals() -> None:
    api = fake.FakeApi()
    api.add(client.NODES, {"metadata": {"name": "gpu-a"}})
    seen = api.create(client.PODS, pod("a"))
    api.patch(client.PODS, "ml", "a", {"metadata": {"labels": {"a": "b"}}})
    with pytest.raises(client.ConflictError):
        api.create(client.PODS, pod("a"))
    api.patch_status(client.PODS, api.get(client.PODS, "ml", "a") or seen, {"phase": "Running"})
    api.delete(client.PODS, "ml", "a")
    assert api.actions == [
        fake.Action("create", "Pod", "ml", "a"),
        fake.Action("patch", "Pod", "ml", "a"),
        fake.Action("patch", "Pod", "ml", "a", "status"),
        fake.Action("delete", "Pod", "ml", "a"),
    ]


def test_events_are_stored_as_core_v1_events_about_their_object() -> None:
    clock = fake.ManualClock()
    api = fake.FakeApi(clock=clock)
    owner = api.create(TRAINING_JOBS, job())
    api.post_event(owner, "Normal", "Admitted", "the gang fits")
    clock.advance(5)
    api.post_event(owner, "Warning", "WorkerFailed", "worker-0 exited 1")
    api.post_event(api.create(TRAINING_JOBS, job("other")), "Normal", "Admitted", "fits")
    events = api.events(about="bert")
    assert [(event["type"], event["reason"], event["message"]) for event in events] == [
        ("Normal", "Admitted", "the gang fits"),
        ("Warning", "WorkerFailed", "worker-0 exited 1"),
    ]
    assert events[0]["involvedObject"]["uid"] == owner["metadata"]["uid"]
    assert [event["lastTimestamp"] for event in events] == ["2025-01-01T00:00:00Z", "2025-01-01T00:00:05Z"]
    assert len(api.list(client.EVENTS, "ml")) == 3
    assert fake.Action("create", "Event", "ml", events[0]["metadata"]["name"]) in api.actions


def test_logs_are_canned_per_pod_and_tailed() -> None:
    api = fake.FakeApi()
    api.create(client.PODS, pod("worker-0"))
    api.set_logs("ml", "worker-0", "one\ntwo\nthree\n")
    assert api.logs("ml", "worker-0", tail_lines=2) == "two\nthree\n"
    api.create(client.PODS, pod("quiet"))
    assert api.logs("ml", "quiet") == ""
    with pytest.raises(client.NotFoundError):
        api.logs("ml", "gone")


def test_whoami_answers_the_settable_user() -> None:
    api = fake.FakeApi(user="alice")
    assert api.whoami() == "alice"
    api.user = "bob"
    assert api.whoami() == "bob"


def test_results_are_copies_a_caller_can_mutate_without_touching_the_store() -> None:
    api = fake.FakeApi()
    body = pod("a", labels={"a": "1"})
    created = api.create(client.PODS, body)
    body["metadata"]["labels"]["a"] = "from the caller's body"
    created["metadata"]["labels"]["a"] = "from the create result"
    api.get(client.PODS, "ml", "a")["metadata"]["labels"]["a"] = "from a get"  # type: ignore[index]
    api.list(client.PODS, "ml")[0]["metadata"]["labels"]["a"] = "from a list"
    assert api.get(client.PODS, "ml", "a")["metadata"]["labels"] == {"a": "1"}  # type: ignore[index]


API_CALLS = (
    "get",
    "list",
    "create",
    "patch",
    "delete",
    "logs",
    "create_or_patch",
    "patch_status",
    "post_event",
    "whoami",
)


@pytest.mark.parametrize("call", API_CALLS)
def test_the_protocol_the_client_and_the_fake_have_the_same_signatures(call: str) -> None:
    protocol = inspect.signature(getattr(client.Api, call), eval_str=True)
    assert inspect.signature(getattr(client.Client, call), eval_str=True) == protocol
    assert inspect.signature(getattr(fake.FakeApi, call), eval_str=True) == protocol
