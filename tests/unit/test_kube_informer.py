"""The informer's list-then-watch loop, against a scripted API server: what it hands over, from
which version each watch resumes, and what a 410 Gone makes it do."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from kiln.kube import client, informer

Object = dict[str, Any]


def pod(name: str, version: str, **labels: str) -> Object:
    metadata = {"name": name, "namespace": "ml", "resourceVersion": version, "labels": labels}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}


Answer = list[Object | client.ApiError] | client.ApiError
"""A watch's events, an error where the stream breaks; or the error the watch is refused with."""


class ScriptedApi:
    """Answers each list and each watch with the next of its script, and calls `done` when the last
    watch ends."""

    def __init__(self, lists: list[tuple[list[Object], str]], watches: list[Answer]) -> None:
        self.lists = lists
        self.watches = watches
        self.watched_from: list[str] = []
        self.done: Callable[[], None] = lambda: None

    def list_at(self, resource: client.Resource, namespace: str | None) -> tuple[list[Object], str]:
        return self.lists.pop(0)

    def watch(self, resource: client.Resource, namespace: str | None, version: str, seconds: int) -> Iterator[Object]:
        self.watched_from.append(version)
        answer = self.watches.pop(0)
        if isinstance(answer, client.ApiError):
            raise answer
        for event in answer:
            if isinstance(event, client.ApiError):
                raise event  # the stream breaks here
            yield event
        if not self.watches:
            self.done()


def handed_over(api: ScriptedApi) -> list[tuple[str | None, Mapping[str, Any]]]:
    """What an informer over `api` hands over until the script ends."""
    seen: list[tuple[str | None, Mapping[str, Any]]] = []
    pods = informer.Informer(api, client.PODS, None, lambda kind, body: seen.append((kind, body)))
    api.done = pods.stop
    pods._run()  # in this thread: it returns once stopped
    return seen


def versions(seen: list[tuple[str | None, Mapping[str, Any]]]) -> list[tuple[str | None, str, str]]:
    return [(kind, body["metadata"]["name"], body["metadata"]["resourceVersion"]) for kind, body in seen]


def test_the_listed_objects_then_every_change_are_handed_over_and_a_watch_resumes_where_it_ended() -> None:
    api = ScriptedApi(
        lists=[([pod("a", "5"), pod("b", "6")], "7")],
        watches=[
            [{"type": "ADDED", "object": pod("c", "8")}, {"type": "BOOKMARK", "object": pod("", "9")}],
            [{"type": "MODIFIED", "object": pod("a", "10")}, {"type": "DELETED", "object": pod("b", "11")}],
        ],
    )

    seen = handed_over(api)

    assert versions(seen) == [
        (None, "a", "5"),
        (None, "b", "6"),
        ("ADDED", "c", "8"),
        ("MODIFIED", "a", "10"),
        ("DELETED", "b", "11"),
    ]
    assert api.watched_from == ["7", "9"]  # the second from the bookmark, which is handed to no one


def test_a_watch_that_breaks_is_resumed_after_the_last_event_it_handed_over_which_is_not_handed_over_again() -> None:
    unreachable = client.ApiError(0, "Unreachable", "the API server at https://127.0.0.1:6443 did not answer")
    api = ScriptedApi(
        lists=[([pod("a", "5")], "7")],
        watches=[
            [{"type": "ADDED", "object": pod("c", "8")}, unreachable],
            [{"type": "DELETED", "object": pod("c", "9")}],
        ],
    )

    seen = handed_over(api)

    assert versions(seen) == [(None, "a", "5"), ("ADDED", "c", "8"), ("DELETED", "c", "9")]
    assert api.watched_from == ["7", "8"]


@pytest.mark.parametrize(
    "expired",
    [
        pytest.param([{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}], id="event"),
        pytest.param(client.ApiError(410, "Gone", "too old resource version: 7 (12)"), id="status"),
    ],
)
def test_a_version_too_old_lists_again_and_an_object_gone_meanwhile_is_handed_over_as_deleted(
    expired: list[Object] | client.ApiError,
) -> None:
    api = ScriptedApi(
        lists=[([pod("a", "5", job="train"), pod("b", "6")], "7"), ([pod("b", "12")], "20")],
        watches=[expired, [{"type": "ADDED", "object": pod("c", "21")}]],
    )

    seen = handed_over(api)

    assert versions(seen) == [
        (None, "a", "5"),
        (None, "b", "6"),
        ("DELETED", "a", "20"),
        (None, "b", "12"),
        ("ADDED", "c", "21"),
    ]
    assert api.watched_from == ["7", "20"]
    assert seen[2][1]["metadata"]["labels"] == {"job": "train"}  # as last seen: whose worker it was


def test_an_informer_of_a_namespaced_kind_runs_in_each_namespace_named_and_of_a_cluster_kind_once() -> None:
    api = ScriptedApi(lists=[], watches=[])

    made = informer.informers(api, [(client.PODS, print), (client.NODES, print)], ["team-a", "team-b"])

    assert [(one.resource.plural, one.namespace) for one in made] == [
        ("pods", "team-a"),
        ("pods", "team-b"),
        ("nodes", None),
    ]
