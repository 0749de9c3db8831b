"""The official `kubernetes` Python client against the dev cluster.

Every test talks to a fresh dev cluster through `kubernetes.client` the way an
operator or a script would, and checks the API semantics those callers rely on:
CRUD and optimistic concurrency, selectors, paging, watches (ordering, resume,
410 Gone, bookmarks), generation, the status subresource, finalizers, garbage
collection, namespace deletion, `Status` errors and the audit log.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from polling import eventually

from kiln.devcluster import cluster, identity, server, store

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"
GROUP, VERSION = "kiln.dev", "v1alpha1"
NS = "default"
WAIT_SECONDS = 10.0

T = TypeVar("T")


# Fixtures and helpers


@pytest.fixture
def api(devcluster: cluster.DevCluster) -> Iterator[client.ApiClient]:
    config.load_kube_config(config_file=str(devcluster.kubeconfig_path))
    with client.ApiClient() as api_client:
        yield api_client


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture
def crds(api: client.ApiClient) -> None:
    """Kiln's CRDs, applied and Established."""
    apply_crds(api)


def apply_crds(api: client.ApiClient) -> None:
    extensions = client.ApiextensionsV1Api(api)
    for path in sorted(CRDS.glob("*.yaml")):
        extensions.create_custom_resource_definition(yaml.safe_load(path.read_text()))
    for path in sorted(CRDS.glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]

        def established(name: str = name) -> bool:
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        eventually(established, f"CRD {name} to be Established")


def api_error(code: int, reason: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Make a call that must fail; check the HTTP code and the `Status` body, and return the body."""
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    body = json.loads(caught.value.body)
    assert caught.value.status == code, body
    assert body["kind"] == "Status", body
    assert body["apiVersion"] == "v1", body
    assert body["status"] == "Failure", body
    assert (body["reason"], body["code"]) == (reason, code), body
    assert body["message"], body
    return body


def gone(call: Callable[..., Any], *args: Any) -> bool:
    try:
        call(*args)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def model_version(name: str, labels: dict[str, str] | None = None, **metadata: Any) -> dict[str, Any]:
    """The model-registry example under another name."""
    manifest = yaml.safe_load((EXAMPLES / "model-registry" / "modelversion.yaml").read_text())
    manifest["metadata"] = {"name": name, "labels": labels or {"kiln.dev/model": "iris"}, **metadata}
    return manifest


def configmap(name: str, labels: dict[str, str] | None = None, **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}, **metadata}, "data": {"key": name}}


def rv(obj: Any) -> int:
    """The resourceVersion of a model or a dict, as a number."""
    if isinstance(obj, dict):
        return int(obj["metadata"]["resourceVersion"])
    return int(obj.metadata.resource_version)


class Custom:
    """Short calls for namespaced kiln.dev objects."""

    def __init__(self, api: client.CustomObjectsApi, plural: str = "modelversions", namespace: str = NS) -> None:
        self.api = api
        self.where = (GROUP, VERSION, namespace, plural)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.api.create_namespaced_custom_object(*self.where, body))

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.api.get_namespaced_custom_object(*self.where, name))

    def list(self, **kwargs: Any) -> dict[str, Any]:
        return dict(self.api.list_namespaced_custom_object(*self.where, **kwargs))

    def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.api.replace_namespaced_custom_object(*self.where, name, body))

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (what the client sends for custom objects)."""
        return dict(self.api.patch_namespaced_custom_object(*self.where, name, body))

    def patch_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.api.patch_namespaced_custom_object_status(*self.where, name, body))

    def replace_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.api.replace_namespaced_custom_object_status(*self.where, name, body))

    def delete(self, name: str, **kwargs: Any) -> dict[str, Any]:
        return dict(self.api.delete_namespaced_custom_object(*self.where, name, **kwargs))

    def gone(self, name: str) -> bool:
        return gone(self.get, name)


@pytest.fixture
def mvs(custom: client.CustomObjectsApi, crds: None) -> Custom:
    return Custom(custom)


# CRUD and optimistic concurrency


def test_configmap_create_get_list_replace_patch_delete(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map(NS, configmap("settings", {"app": "kiln"}))
    assert created.metadata.uid
    assert created.metadata.namespace == NS
    assert created.metadata.creation_timestamp is not None

    fetched = core.read_namespaced_config_map("settings", NS)
    assert (fetched.data, fetched.metadata.uid, rv(fetched)) == ({"key": "settings"}, created.metadata.uid, rv(created))

    listed = core.list_namespaced_config_map(NS, label_selector="app=kiln")
    assert [cm.metadata.name for cm in listed.items] == ["settings"]
    assert rv(listed) >= rv(created)

    fetched.data["extra"] = "1"
    replaced = core.replace_namespaced_config_map("settings", NS, fetched)
    assert replaced.data == {"key": "settings", "extra": "1"}
    assert rv(replaced) > rv(created)
    assert replaced.metadata.uid == created.metadata.uid

    patched = core.patch_namespaced_config_map("settings", NS, {"data": {"key": "patched"}})
    assert patched.data == {"key": "patched", "extra": "1"}
    assert rv(patched) > rv(replaced)
    assert core.read_namespaced_config_map("settings", NS).data == {"key": "patched", "extra": "1"}

    core.delete_namespaced_config_map("settings", NS)
    assert gone(core.read_namespaced_config_map, "settings", NS)
    assert core.list_namespaced_config_map(NS, label_selector="app=kiln").items == []


def test_custom_object_create_get_list_replace_patch_delete(mvs: Custom) -> None:
    created = mvs.create(model_version("iris-1"))
    assert created["kind"] == "ModelVersion"
    assert created["apiVersion"] == f"{GROUP}/{VERSION}"
    assert created["metadata"]["uid"]
    assert created["spec"]["artifact"]["format"] == "skops"

    fetched = mvs.get("iris-1")
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]
    assert fetched["spec"] == created["spec"]

    mvs.create(model_version("iris-2"))
    listed = mvs.list()
    assert listed["kind"] == "ModelVersionList"
    assert [item["metadata"]["name"] for item in listed["items"]] == ["iris-1", "iris-2"]

    fetched["spec"]["requiredApprovals"] = 3
    replaced = mvs.replace("iris-1", fetched)
    assert replaced["spec"]["requiredApprovals"] == 3
    assert rv(replaced) > rv(created)

    patched = mvs.patch("iris-1", {"spec": {"requiredApprovals": 4}, "metadata": {"labels": {"team": "ml"}}})
    assert patched["spec"]["requiredApprovals"] == 4
    assert patched["metadata"]["labels"] == {"kiln.dev/model": "iris", "team": "ml"}
    assert patched["spec"]["modelName"] == "iris"
    assert rv(patched) > rv(replaced)

    mvs.delete("iris-1")
    assert mvs.gone("iris-1")
    assert [item["metadata"]["name"] for item in mvs.list()["items"]] == ["iris-2"]


def test_replacing_a_configmap_with_a_stale_resource_version_is_a_conflict(core: client.CoreV1Api) -> None:
    stale = core.create_namespaced_config_map(NS, configmap("contended"))
    fresh = core.read_namespaced_config_map("contended", NS)
    fresh.data = {"key": "first writer"}
    core.replace_namespaced_config_map("contended", NS, fresh)

    stale.data = {"key": "second writer"}
    body = api_error(409, "Conflict", core.replace_namespaced_config_map, "contended", NS, stale)
    assert "the object has been modified" in body["message"]
    assert body["details"]["name"] == "contended"
    assert core.read_namespaced_config_map("contended", NS).data == {"key": "first writer"}


def test_writing_a_custom_object_with_a_stale_resource_version_is_a_conflict(mvs: Custom) -> None:
    stale = mvs.create(model_version("contended"))
    mvs.patch("contended", {"spec": {"requiredApprovals": 3}})

    stale["spec"]["requiredApprovals"] = 5
    api_error(409, "Conflict", mvs.replace, "contended", stale)
    stale_patch = {
        "metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
        "spec": {"requiredApprovals": 6},
    }
    api_error(409, "Conflict", mvs.patch, "contended", stale_patch)
    assert mvs.get("contended")["spec"]["requiredApprovals"] == 3


def test_creating_twice_is_already_exists(core: client.CoreV1Api, mvs: Custom) -> None:
    first = core.create_namespaced_config_map(NS, configmap("twice"))
    body = api_error(409, "AlreadyExists", core.create_namespaced_config_map, NS, configmap("twice"))
    assert body["details"]["name"] == "twice"
    assert core.read_namespaced_config_map("twice", NS).metadata.uid == first.metadata.uid

    mvs.create(model_version("twice"))
    body = api_error(409, "AlreadyExists", mvs.create, model_version("twice"))
    assert body["details"] == {"name": "twice", "group": GROUP, "kind": "modelversions"}


# Selectors


LABELLED = {
    "prod-web": {"env": "prod", "tier": "web"},
    "dev-db": {"env": "dev", "tier": "db"},
    "staging": {"env": "staging"},
    "unlabelled": {},
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env=prod", {"prod-web"}),
        ("env==prod", {"prod-web"}),
        ("env!=prod", {"dev-db", "staging", "unlabelled"}),
        ("env in (prod,dev)", {"prod-web", "dev-db"}),
        ("env notin (prod,dev)", {"staging", "unlabelled"}),
        ("tier", {"prod-web", "dev-db"}),
        ("!tier", {"staging", "unlabelled"}),
        ("env in (prod,staging),!tier", {"staging"}),
        ("tier,env!=dev", {"prod-web"}),
        ("env=nope", set()),
    ],
)
def test_label_selectors(core: client.CoreV1Api, mvs: Custom, selector: str, expected: set[str]) -> None:
    for name, labels in LABELLED.items():
        core.create_namespaced_config_map(NS, configmap(name, labels))
        mvs.create(model_version(name, labels))
    configmaps = core.list_namespaced_config_map(NS, label_selector=selector).items
    assert {cm.metadata.name for cm in configmaps} == expected
    custom_objects = mvs.list(label_selector=selector)["items"]
    assert {obj["metadata"]["name"] for obj in custom_objects} == expected


def test_a_malformed_label_selector_is_a_bad_request(core: client.CoreV1Api) -> None:
    api_error(400, "BadRequest", core.list_namespaced_config_map, NS, label_selector="env in (prod")


def test_field_selectors_on_name_and_namespace(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "other"}})
    for namespace in (NS, "other"):
        for name in ("alpha", "beta"):
            core.create_namespaced_config_map(namespace, configmap(name, {"test": "fields"}))

    def names(items: list[Any]) -> set[tuple[str, str]]:
        return {(cm.metadata.namespace, cm.metadata.name) for cm in items}

    everywhere = core.list_config_map_for_all_namespaces
    by_name = everywhere(field_selector="metadata.name=alpha", label_selector="test=fields").items
    assert names(by_name) == {(NS, "alpha"), ("other", "alpha")}
    by_namespace = everywhere(field_selector="metadata.namespace=other", label_selector="test=fields").items
    assert names(by_namespace) == {("other", "alpha"), ("other", "beta")}
    both = everywhere(field_selector="metadata.namespace=other,metadata.name!=alpha", label_selector="test=fields")
    assert names(both.items) == {("other", "beta")}
    in_namespace = core.list_namespaced_config_map("other", field_selector="metadata.name=beta").items
    assert names(in_namespace) == {("other", "beta")}


def test_field_selectors_on_pod_phase_and_node(core: client.CoreV1Api) -> None:
    pods = {"running-a": ("node-a", "Running"), "pending-a": ("node-a", None), "running-b": ("node-b", "Running")}
    pods["unscheduled"] = (None, None)
    for name, (node, phase) in pods.items():
        spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox:1.36"}]}
        if node:
            spec["nodeName"] = node  # nodes no kubelet runs: the test sets the phase itself
        else:
            spec["nodeSelector"] = {"kiln.dev/node-pool": "none-such"}  # so the scheduler leaves it pending
        created = core.create_namespaced_pod(NS, {"metadata": {"name": name}, "spec": spec})
        assert created.status.phase == "Pending"
        if phase:
            patched = core.patch_namespaced_pod_status(name, NS, {"status": {"phase": phase}})
            assert patched.status.phase == phase

    def selected(selector: str) -> set[str]:
        return {pod.metadata.name for pod in core.list_namespaced_pod(NS, field_selector=selector).items}

    assert selected("status.phase=Running") == {"running-a", "running-b"}
    assert selected("status.phase=Pending") == {"pending-a", "unscheduled"}
    assert selected("status.phase!=Running") == {"pending-a", "unscheduled"}
    assert selected("spec.nodeName=node-a") == {"running-a", "pending-a"}
    assert selected("spec.nodeName=") == {"unscheduled"}
    assert selected("spec.nodeName=node-a,status.phase=Running") == {"running-a"}
    assert selected("spec.nodeName!=node-a,status.phase=Running") == {"running-b"}
    assert core.read_namespaced_pod("unscheduled", NS).spec.node_name is None


# Paging


def page_through(list_page: Callable[..., Any], limit: int) -> tuple[list[tuple[str, str]], list[Any]]:
    """Follow `continue` tokens to the end; returns every (namespace, name) seen and each page's metadata."""
    seen: list[tuple[str, str]] = []
    pages: list[Any] = []
    token: str | None = None
    for _ in range(1000):  # bounded: a server that never stops handing out tokens fails the test
        kwargs: dict[str, Any] = {"limit": limit}
        if token:
            kwargs["_continue"] = token
        page = list_page(**kwargs)
        assert len(page.items) <= limit
        seen.extend((item.metadata.namespace, item.metadata.name) for item in page.items)
        pages.append(page.metadata)
        token = page.metadata._continue
        if not token:
            return seen, pages
    raise AssertionError("the list never ended")


def test_list_with_limit_and_continue_pages_through_a_namespace_exactly_once(core: client.CoreV1Api) -> None:
    names = [f"page-{i:02d}" for i in range(23)]
    for name in reversed(names):
        core.create_namespaced_config_map(NS, configmap(name, {"test": "paging"}))

    def list_page(**kwargs: Any) -> Any:
        return core.list_namespaced_config_map(NS, label_selector="test=paging", **kwargs)

    seen, pages = page_through(list_page, limit=5)
    assert seen == [(NS, name) for name in names]
    assert len(pages) == 5
    assert all(page._continue for page in pages[:-1])


def test_list_with_limit_and_continue_pages_across_namespaces_exactly_once(core: client.CoreV1Api) -> None:
    # "team" sorts before "team-b" by namespace, but "team/..." sorts after "team-b/..." as a string.
    expected = []
    for namespace in ("team", "team-b", "zoo"):
        if namespace != NS:
            core.create_namespace({"metadata": {"name": namespace}})
        for i in range(4):
            core.create_namespaced_config_map(namespace, configmap(f"cm-{i}", {"test": "paging"}))
            expected.append((namespace, f"cm-{i}"))

    def list_page(**kwargs: Any) -> Any:
        return core.list_config_map_for_all_namespaces(label_selector="test=paging", **kwargs)

    everything = [(cm.metadata.namespace, cm.metadata.name) for cm in list_page().items]
    assert sorted(everything) == sorted(expected)
    seen, _ = page_through(list_page, limit=3)
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))


def test_list_remaining_item_count_counts_the_items_after_each_page(core: client.CoreV1Api) -> None:
    for i in range(10):
        core.create_namespaced_config_map(NS, configmap(f"count-{i}", {"test": "remaining"}))

    def list_page(**kwargs: Any) -> Any:
        return core.list_namespaced_config_map(NS, label_selector="test=remaining", **kwargs)

    seen, pages = page_through(list_page, limit=3)
    assert len(seen) == 10
    assert [page.remaining_item_count for page in pages] == [7, 4, 1, None]


# Watches


def test_watch_sees_added_modified_deleted_in_order(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, configmap("sentinel", {"test": "watch"}))
    events: list[tuple[str, str, int]] = []
    failures: list[BaseException] = []
    ready = threading.Event()
    stream = watch.Watch()

    def follow() -> None:
        try:
            for event in stream.stream(
                core.list_namespaced_config_map, NS, label_selector="test=watch", timeout_seconds=15
            ):
                obj = event["object"]
                events.append((event["type"], obj.metadata.name, rv(obj)))
                if obj.metadata.name == "sentinel":
                    ready.set()
                if (event["type"], obj.metadata.name) == ("DELETED", "subject"):
                    stream.stop()
        except BaseException as error:
            failures.append(error)
            ready.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert ready.wait(WAIT_SECONDS), "the watch never listed the existing object"
    created = core.create_namespaced_config_map(NS, configmap("subject", {"test": "watch"}))
    core.create_namespaced_config_map(NS, configmap("unwatched", {"test": "other"}))
    patched = core.patch_namespaced_config_map("subject", NS, {"data": {"key": "changed"}})
    core.patch_namespaced_config_map("subject", NS, {"metadata": {"annotations": {"a": "b"}}})
    core.delete_namespaced_config_map("subject", NS)
    follower.join(WAIT_SECONDS + 15)
    assert not follower.is_alive()
    assert failures == []

    assert events[0][:2] == ("ADDED", "sentinel")
    subject = events[1:]
    assert [(kind, name) for kind, name, _ in subject] == [
        ("ADDED", "subject"),
        ("MODIFIED", "subject"),
        ("MODIFIED", "subject"),
        ("DELETED", "subject"),
    ]
    versions = [version for _, _, version in subject]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert versions[0] == rv(created)
    assert versions[1] == rv(patched)


def collect_events(func: Callable[..., Any], *args: Any, **kwargs: Any) -> list[tuple[str, str, int]]:
    """Run a watch to its server-side timeout; (type, name, resourceVersion) of every event."""
    found = []
    for event in watch.Watch().stream(func, *args, **kwargs):
        obj = event["raw_object"]
        found.append((event["type"], obj["metadata"]["name"], rv(obj)))
    return found


def test_a_watch_resuming_from_a_resource_version_gets_exactly_the_events_after_it(
    mvs: Custom, custom: client.CustomObjectsApi
) -> None:
    first = mvs.create(model_version("first"))
    mvs.create(model_version("second"))
    mark = mvs.patch("first", {"metadata": {"labels": {"marked": "yes"}}})
    changed = mvs.patch("second", {"spec": {"requiredApprovals": 1}})
    third = mvs.create(model_version("third"))
    mvs.delete("first")

    events = collect_events(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        NS,
        "modelversions",
        resource_version=str(rv(mark)),
        timeout_seconds=1,
    )
    assert [(kind, name) for kind, name, _ in events] == [
        ("MODIFIED", "second"),
        ("ADDED", "third"),
        ("DELETED", "first"),
    ]
    assert events[0][2] == rv(changed)
    assert events[1][2] == rv(third)
    assert all(version > rv(mark) for _, _, version in events)
    assert rv(first) < rv(mark)


def test_a_watch_with_a_label_selector_sees_objects_enter_and_leave_the_selection(core: client.CoreV1Api) -> None:
    start = core.create_namespaced_config_map(NS, configmap("mover", {"stage": "candidate"}))
    entered = core.patch_namespaced_config_map("mover", NS, {"metadata": {"labels": {"stage": "live"}}})
    touched = core.patch_namespaced_config_map("mover", NS, {"data": {"key": "still live"}})
    left = core.patch_namespaced_config_map("mover", NS, {"metadata": {"labels": {"stage": "retired"}}})
    core.patch_namespaced_config_map("mover", NS, {"data": {"key": "not live"}})

    events = collect_events(
        core.list_namespaced_config_map,
        NS,
        label_selector="stage=live",
        resource_version=str(rv(start)),
        timeout_seconds=1,
    )
    # kube-apiserver: an object that starts matching is ADDED, one that stops matching is DELETED
    assert events == [
        ("ADDED", "mover", rv(entered)),
        ("MODIFIED", "mover", rv(touched)),
        ("DELETED", "mover", rv(left)),
    ]


def test_a_watch_from_a_version_older_than_the_history_is_gone(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "HISTORY_LIMIT", 10)
    with cluster.ThreadedDevCluster(tmp_path / "small-history") as running:
        config.load_kube_config(config_file=str(running.kubeconfig_path))
        with client.ApiClient() as api_client:
            core = client.CoreV1Api(api_client)
            oldest = core.create_namespaced_config_map(NS, configmap("cm-00"))
            created = [core.create_namespaced_config_map(NS, configmap(f"cm-{i:02d}")) for i in range(1, 30)]

            with pytest.raises(ApiException) as caught:
                collect_events(core.list_namespaced_config_map, NS, resource_version=str(rv(oldest)), timeout_seconds=1)
            assert caught.value.status == 410
            body = json.loads(caught.value.body) if caught.value.body else {}
            if body:
                assert (body["kind"], body["reason"], body["code"]) == ("Status", "Expired", 410)

            recent = collect_events(
                core.list_namespaced_config_map, NS, resource_version=str(rv(created[-4])), timeout_seconds=1
            )
            assert recent == [("ADDED", cm.metadata.name, rv(cm)) for cm in created[-3:]]


async def _watch_lines(http: httpx.AsyncClient, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    async with http.stream("GET", path, params=params) as response:
        assert response.status_code == 200
        return [json.loads(line) async for line in response.aiter_lines() if line.strip()]


async def test_allow_watch_bookmarks_yields_bookmark_events(
    devcluster: cluster.DevCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "BOOKMARK_INTERVAL_SECONDS", 0.3)
    path = "/api/v1/namespaces/default/configmaps"
    async with httpx.AsyncClient(base_url=devcluster.url, timeout=WAIT_SECONDS) as http:
        created = await http.post(path, json={"apiVersion": "v1", "kind": "ConfigMap", **configmap("before")})
        assert created.status_code == 201
        listed = (await http.get(path)).json()
        since = listed["metadata"]["resourceVersion"]
        watch_params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "2"}
        with_bookmarks, without_bookmarks = await asyncio.gather(
            _watch_lines(http, path, {**watch_params, "allowWatchBookmarks": "true"}),
            _watch_lines(http, path, watch_params),
        )
        assert without_bookmarks == []
        assert with_bookmarks, "no BOOKMARK in a 2 second watch"
        for event in with_bookmarks:
            assert event["type"] == "BOOKMARK"
            assert event["object"]["kind"] == "ConfigMap"
            assert event["object"]["apiVersion"] == "v1"
            assert int(event["object"]["metadata"]["resourceVersion"]) >= int(since)

        # a bookmark's version is one to resume from
        bookmark = with_bookmarks[-1]["object"]["metadata"]["resourceVersion"]
        after = (await http.post(path, json={"apiVersion": "v1", "kind": "ConfigMap", **configmap("after")})).json()
        resumed = await _watch_lines(http, path, {"watch": "true", "resourceVersion": bookmark, "timeoutSeconds": "1"})
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in resumed] == [("ADDED", "after")]
        assert resumed[0]["object"]["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]


# Generation and the status subresource


def test_generation_bumps_on_spec_changes_only(mvs: Custom) -> None:
    created = mvs.create(model_version("gen"))
    assert created["metadata"]["generation"] == 1

    labelled = mvs.patch("gen", {"metadata": {"labels": {"team": "ml"}, "annotations": {"note": "x"}}})
    assert labelled["metadata"]["generation"] == 1
    assert rv(labelled) > rv(created)

    with_status = mvs.patch_status("gen", {"status": {"phase": "Validating", "observedGeneration": 1}})
    assert with_status["metadata"]["generation"] == 1
    assert rv(with_status) > rv(labelled)

    finalized = mvs.patch("gen", {"metadata": {"finalizers": ["kiln.dev/test"]}})
    assert finalized["metadata"]["generation"] == 1

    respec = mvs.patch("gen", {"spec": {"requiredApprovals": 3}})
    assert respec["metadata"]["generation"] == 2

    same = mvs.patch("gen", {"spec": {"requiredApprovals": 3}})
    assert same["metadata"]["generation"] == 2

    current = mvs.get("gen")
    current["metadata"]["labels"] = {"only": "labels"}
    replaced = mvs.replace("gen", current)
    assert replaced["metadata"]["generation"] == 2
    assert replaced["metadata"]["labels"] == {"only": "labels"}

    again = mvs.replace("gen", {**replaced, "spec": {**replaced["spec"], "requiredApprovals": 1}})
    assert again["metadata"]["generation"] == 3
    assert mvs.get("gen")["metadata"]["generation"] == 3


def test_generation_of_a_deployment_bumps_on_spec_changes_only(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    pod = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}
    spec = {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": pod}
    created = apps.create_namespaced_deployment(NS, {"metadata": {"name": "web"}, "spec": spec})
    assert created.metadata.generation == 1
    labelled = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"tier": "front"}}})
    assert labelled.metadata.generation == 1
    status = apps.patch_namespaced_deployment_status("web", NS, {"status": {"observedGeneration": 1, "replicas": 1}})
    assert status.metadata.generation == 1
    scaled = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    assert scaled.metadata.generation == 2


def test_the_status_subresource_ignores_spec_and_metadata_changes(mvs: Custom) -> None:
    created = mvs.create(model_version("status"))
    patched = mvs.patch_status(
        "status",
        {"status": {"phase": "Validating"}, "spec": {"requiredApprovals": 9}, "metadata": {"labels": {"x": "y"}}},
    )
    assert patched["status"]["phase"] == "Validating"
    assert patched["spec"] == created["spec"]
    assert patched["metadata"]["labels"] == created["metadata"]["labels"]

    current = mvs.get("status")
    current["spec"]["requiredApprovals"] = 7
    current["status"]["phase"] = "Validated"
    replaced = mvs.replace_status("status", current)
    assert replaced["status"]["phase"] == "Validated"
    assert replaced["spec"] == created["spec"]
    assert mvs.get("status")["spec"]["requiredApprovals"] == created["spec"]["requiredApprovals"]


def test_the_main_resource_ignores_status_for_custom_objects(mvs: Custom) -> None:
    created = mvs.create({**model_version("main"), "status": {"phase": "Validated", "message": "self-declared"}})
    assert created.get("status", {}).get("phase") != "Validated"
    assert "message" not in created.get("status", {})

    mvs.patch_status("main", {"status": {"phase": "Validating", "message": "checking gates"}})
    patched = mvs.patch("main", {"spec": {"requiredApprovals": 1}, "status": {"phase": "Rejected"}})
    assert patched["spec"]["requiredApprovals"] == 1
    assert (patched["status"]["phase"], patched["status"]["message"]) == ("Validating", "checking gates")

    current = mvs.get("main")
    current["status"] = {"phase": "Validated"}
    current["spec"]["requiredApprovals"] = 2
    replaced = mvs.replace("main", current)
    assert replaced["spec"]["requiredApprovals"] == 2
    assert (replaced["status"]["phase"], replaced["status"]["message"]) == ("Validating", "checking gates")


def test_a_status_write_is_validated_against_the_schema(mvs: Custom) -> None:
    mvs.create(model_version("bad-status"))
    body = api_error(422, "Invalid", mvs.patch_status, "bad-status", {"status": {"phase": "Exploded"}})
    assert any(cause["field"] == "status.phase" for cause in body["details"]["causes"])
    assert mvs.get("bad-status").get("status", {}).get("phase") != "Exploded"


def test_a_pod_status_write_is_validated_for_its_status_and_keeps_the_spec(core: client.CoreV1Api) -> None:
    spec = {"containers": [{"name": "main", "image": "busybox:1.36"}], "nodeName": "node-z"}  # no kubelet runs it
    core.create_namespaced_pod(NS, {"metadata": {"name": "status-checked"}, "spec": spec})

    body = api_error(
        422, "Invalid", core.patch_namespaced_pod_status, "status-checked", NS, {"status": {"conditions": "ok"}}
    )
    assert [cause["field"] for cause in body["details"]["causes"]] == ["status.conditions"]
    wrote = core.patch_namespaced_pod_status(
        "status-checked", NS, {"status": {"phase": "Running"}, "spec": {"nodeName": "node-y"}}
    )

    assert (wrote.status.phase, wrote.status.qos_class, wrote.spec.node_name) == ("Running", "BestEffort", "node-z")
    assert core.read_namespaced_pod("status-checked", NS).spec.containers[0].termination_message_path


# Finalizers and garbage collection


def test_a_finalizer_keeps_a_deleted_object_until_it_is_removed(mvs: Custom, core: client.CoreV1Api) -> None:
    mvs.create(model_version("held", finalizers=["kiln.dev/test-hold"]))
    answer = mvs.delete("held")
    assert answer["metadata"]["deletionTimestamp"]

    held = mvs.get("held")
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == ["kiln.dev/test-hold"]
    assert [item["metadata"]["name"] for item in mvs.list()["items"]] == ["held"]
    again = mvs.delete("held")  # deleting again changes nothing
    assert again["metadata"]["deletionTimestamp"] == held["metadata"]["deletionTimestamp"]
    assert mvs.get("held")["metadata"]["finalizers"] == ["kiln.dev/test-hold"]

    mvs.patch("held", {"metadata": {"finalizers": None}})
    eventually(lambda: mvs.gone("held"), "the object to go once its finalizer is removed")

    core.create_namespaced_config_map(NS, configmap("held-cm", finalizers=["kiln.dev/test-hold"]))
    core.delete_namespaced_config_map("held-cm", NS)
    assert core.read_namespaced_config_map("held-cm", NS).metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held-cm", NS, {"metadata": {"finalizers": []}})  # a strategic merge: kept
    assert core.read_namespaced_config_map("held-cm", NS).metadata.finalizers == ["kiln.dev/test-hold"]
    core.patch_namespaced_config_map("held-cm", NS, {"metadata": {"finalizers": None}})
    eventually(lambda: gone(core.read_namespaced_config_map, "held-cm", NS), "the ConfigMap to go")


def owned_configmap(name: str, owner: dict[str, Any], block: bool = False, **metadata: Any) -> dict[str, Any]:
    reference = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }
    if block:  # foreground deletion waits only for dependents that block their owner's deletion
        reference["blockOwnerDeletion"] = True
    return configmap(name, ownerReferences=[reference], **metadata)


def test_garbage_collection_deletes_dependents_whose_owners_are_gone_and_strips_references_to_them(
    mvs: Custom, core: client.CoreV1Api
) -> None:
    owner = mvs.create(model_version("owner"))
    survivor_owner = mvs.create(model_version("other-owner"))
    core.create_namespaced_config_map(NS, owned_configmap("child", owner))
    shared = owned_configmap("shared", owner)
    shared["metadata"]["ownerReferences"] += owned_configmap("x", survivor_owner)["metadata"]["ownerReferences"]
    core.create_namespaced_config_map(NS, shared)
    core.create_namespaced_config_map(NS, owned_configmap("other-child", survivor_owner))

    mvs.delete("owner")
    assert mvs.gone("owner")
    eventually(lambda: gone(core.read_namespaced_config_map, "child", NS), "the dependent to be collected")
    assert core.read_namespaced_config_map("shared", NS).metadata.deletion_timestamp is None
    assert core.read_namespaced_config_map("other-child", NS).metadata.deletion_timestamp is None
    eventually(
        lambda: owner_uids(core.read_namespaced_config_map("shared", NS)) == [survivor_owner["metadata"]["uid"]],
        "the shared dependent to lose its reference to the owner gone",
    )

    # written after its owner went, by a client that raced the deletion: collected all the same
    core.create_namespaced_config_map(NS, owned_configmap("late-child", owner))
    eventually(lambda: gone(core.read_namespaced_config_map, "late-child", NS), "the late dependent to be collected")
    late_shared = owned_configmap("late-shared", owner)
    late_shared["metadata"]["ownerReferences"] += owned_configmap("x", survivor_owner)["metadata"]["ownerReferences"]
    core.create_namespaced_config_map(NS, late_shared)
    eventually(
        lambda: owner_uids(core.read_namespaced_config_map("late-shared", NS)) == [survivor_owner["metadata"]["uid"]],
        "the late shared dependent to lose its reference to the owner gone",
    )
    assert core.read_namespaced_config_map("late-shared", NS).metadata.deletion_timestamp is None


def owner_uids(obj: Any) -> list[str]:
    return [ref.uid for ref in obj.metadata.owner_references or []]


def test_foreground_deletion_keeps_the_owner_until_its_dependents_are_gone(mvs: Custom, core: client.CoreV1Api) -> None:
    owner = mvs.create(model_version("owner"))
    held = owned_configmap("slow-child", owner, block=True, finalizers=["kiln.dev/test-hold"])
    core.create_namespaced_config_map(NS, held)
    core.create_namespaced_config_map(NS, owned_configmap("quick-child", owner, block=True))

    mvs.delete("owner", propagation_policy="Foreground")
    waiting = mvs.get("owner")
    assert waiting["metadata"]["deletionTimestamp"]
    assert "foregroundDeletion" in waiting["metadata"]["finalizers"]
    eventually(lambda: gone(core.read_namespaced_config_map, "quick-child", NS), "the dependent without finalizers")
    slow = core.read_namespaced_config_map("slow-child", NS)
    assert slow.metadata.deletion_timestamp is not None
    assert "foregroundDeletion" in mvs.get("owner")["metadata"]["finalizers"]

    core.patch_namespaced_config_map("slow-child", NS, {"metadata": {"finalizers": None}})
    eventually(lambda: gone(core.read_namespaced_config_map, "slow-child", NS), "the held dependent to go")
    eventually(lambda: mvs.gone("owner"), "the owner to go after its last dependent")


def test_orphan_deletion_keeps_dependents_and_strips_their_owner_reference(mvs: Custom, core: client.CoreV1Api) -> None:
    owner = mvs.create(model_version("owner"))
    other = mvs.create(model_version("other"))
    orphan = owned_configmap("orphan", owner)
    orphan["metadata"]["ownerReferences"] += owned_configmap("x", other)["metadata"]["ownerReferences"]
    core.create_namespaced_config_map(NS, orphan)

    mvs.delete("owner", propagation_policy="Orphan")
    eventually(lambda: mvs.gone("owner"), "the owner to go")
    kept = core.read_namespaced_config_map("orphan", NS)
    assert kept.metadata.deletion_timestamp is None
    assert [ref.uid for ref in kept.metadata.owner_references] == [other["metadata"]["uid"]]

    # with the owner gone the dependent is no longer collected with it
    mvs.delete("other", propagation_policy="Orphan")
    eventually(lambda: mvs.gone("other"), "the second owner to go")
    assert not core.read_namespaced_config_map("orphan", NS).metadata.owner_references


def test_namespace_deletion_removes_its_contents_and_then_the_namespace(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, crds: None
) -> None:
    core.create_namespace({"metadata": {"name": "doomed"}})
    in_doomed = Custom(custom, namespace="doomed")
    core.create_namespaced_config_map("doomed", configmap("plain"))
    core.create_namespaced_config_map("doomed", configmap("held", finalizers=["kiln.dev/test-hold"]))
    in_doomed.create(model_version("iris"))
    pod = {"metadata": {"name": "pod"}, "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}}
    core.create_namespaced_pod("doomed", pod)
    core.create_namespaced_config_map(NS, configmap("bystander"))

    core.delete_namespace("doomed")
    terminating = core.read_namespace("doomed")
    assert terminating.metadata.deletion_timestamp is not None
    assert terminating.status.phase == "Terminating"
    body = api_error(403, "Forbidden", core.create_namespaced_config_map, "doomed", configmap("late"))
    assert "being terminated" in body["message"]

    eventually(lambda: gone(core.read_namespaced_config_map, "plain", "doomed"), "the plain ConfigMap to go")
    eventually(lambda: in_doomed.gone("iris"), "the ModelVersion to go")
    eventually(lambda: gone(core.read_namespaced_pod, "pod", "doomed"), "the pod to go")
    assert core.read_namespaced_config_map("held", "doomed").metadata.deletion_timestamp is not None
    assert core.read_namespace("doomed").status.phase == "Terminating"

    core.patch_namespaced_config_map("held", "doomed", {"metadata": {"finalizers": None}})
    eventually(lambda: gone(core.read_namespace, "doomed"), "the namespace to go")
    assert core.list_namespaced_config_map("doomed").items == []
    assert in_doomed.list()["items"] == []
    assert core.read_namespaced_config_map("bystander", NS).metadata.deletion_timestamp is None
    assert "doomed" not in {ns.metadata.name for ns in core.list_namespace().items}


# Errors and the audit log


def test_not_found_is_a_status_object(core: client.CoreV1Api, mvs: Custom) -> None:
    body = api_error(404, "NotFound", core.read_namespaced_config_map, "missing", NS)
    assert body["details"]["name"] == "missing"
    assert body["details"]["kind"] == "configmaps"
    assert body["message"] == 'configmaps "missing" not found'

    body = api_error(404, "NotFound", mvs.get, "missing")
    assert body["details"] == {"name": "missing", "group": GROUP, "kind": "modelversions"}
    assert body["message"] == 'modelversions.kiln.dev "missing" not found'

    api_error(404, "NotFound", core.delete_namespaced_config_map, "missing", NS)
    api_error(404, "NotFound", core.patch_namespaced_config_map, "missing", NS, {"data": {"a": "b"}})
    api_error(404, "NotFound", core.create_namespaced_config_map, "no-such-namespace", configmap("x"))


def test_a_custom_object_violating_the_crd_schema_is_invalid_with_causes(
    custom: client.CustomObjectsApi, crds: None
) -> None:
    jobs = Custom(custom, plural="trainingjobs")
    manifest = yaml.safe_load((EXAMPLES / "iris-training" / "trainingjob.yaml").read_text())
    manifest["spec"]["workers"] = -1
    body = api_error(422, "Invalid", jobs.create, manifest)
    assert body["details"]["name"] == "iris-rf"
    assert body["details"]["group"] == GROUP
    assert body["details"]["kind"] == "TrainingJob"
    causes = body["details"]["causes"]
    assert any(cause["field"] == "spec.workers" and cause["reason"] == "FieldValueInvalid" for cause in causes)
    assert "spec.workers" in body["message"]
    assert jobs.gone("iris-rf")

    manifest["spec"]["workers"] = 1
    assert jobs.create(manifest)["spec"]["workers"] == 1


def test_the_audit_log_records_verbs_and_the_user_agent(
    devcluster: cluster.DevCluster, api: client.ApiClient, core: client.CoreV1Api
) -> None:
    api.user_agent = "kiln-devcluster-tests/1.0"
    core.create_namespaced_config_map(NS, configmap("audited"))
    core.read_namespaced_config_map("audited", NS)
    core.list_namespaced_config_map(NS)
    core.patch_namespaced_config_map("audited", NS, {"data": {"key": "patched"}})
    core.replace_namespaced_config_map("audited", NS, core.read_namespaced_config_map("audited", NS))
    collect_events(core.list_namespaced_config_map, NS, timeout_seconds=1)
    core.delete_namespaced_config_map("audited", NS)

    def entries() -> list[dict[str, Any]]:
        lines = devcluster.audit_path.read_text().splitlines()
        return [entry for entry in map(json.loads, lines) if entry["userAgent"] == "kiln-devcluster-tests/1.0"]

    eventually(lambda: len(entries()) >= 8, "eight audit entries with the test's user agent")
    recorded = [(e["verb"], e["resource"], e["namespace"], e["name"]) for e in entries()]
    assert recorded == [
        ("create", "configmaps", NS, None),
        ("get", "configmaps", NS, "audited"),
        ("list", "configmaps", NS, None),
        ("patch", "configmaps", NS, "audited"),
        ("get", "configmaps", NS, "audited"),
        ("update", "configmaps", NS, "audited"),
        ("watch", "configmaps", NS, None),
        ("delete", "configmaps", NS, "audited"),
    ]


def test_a_service_account_token_names_the_service_account_and_a_bad_token_is_refused(
    devcluster: cluster.DevCluster,
) -> None:
    def client_with_token(token: str) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = devcluster.url
        configuration.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(configuration)

    with client_with_token(identity.service_account_token("team-a", "trainer")) as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
        assert review.status.user_info.username == "system:serviceaccount:team-a:trainer"
        assert "system:serviceaccounts:team-a" in review.status.user_info.groups
    with client_with_token("not-a-token") as api, pytest.raises(ApiException) as refused:
        client.CoreV1Api(api).list_namespaced_pod("default")
    assert refused.value.status == 401
