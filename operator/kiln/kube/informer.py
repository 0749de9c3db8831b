"""Informers: one kind of object listed, then watched, as client-go's reflector keeps a cache.

The TrainingJob controller keeps the cluster's pods, nodes, quotas, priority classes and jobs in
memory. Fed by kopf's event handlers, every pod event in the cluster cost kopf's whole handling
(causes, loggers, the handler's invocation) and the standard library's JSON decoder: most of the
operator's time in a burst of jobs. An informer hands each event straight to a callback.

An informer runs in a thread of its own. It lists (each object handed over with the event type
None, as kopf hands over what it lists), then watches from the list's resourceVersion. A watch the
server ends, or one that breaks, is resumed from the last version seen (bookmarks included), so an
event is handed over once; one whose version is too
old (410 Gone) lists again, and an object that went meanwhile is handed over as DELETED, as last
seen, so no deletion is missed. Errors are logged and retried after a back-off.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from kiln.kube import client

log = logging.getLogger(__name__)

Object = dict[str, Any]
OnEvent = Callable[[str | None, Mapping[str, Any]], None]
"""Called with the event type (None for a listed object, ADDED, MODIFIED, DELETED) and the object."""

WATCH_SECONDS = 300
"""The longest one watch request lasts before it is resumed, as client-go's reflector asks for."""
FIRST_BACKOFF_SECONDS = 0.5
LONGEST_BACKOFF_SECONDS = 30.0
GONE = 410


class Source(Protocol):
    """Where an informer reads: `kiln.kube.client.Client`."""

    def list_at(self, resource: client.Resource, namespace: str | None) -> tuple[list[Object], str]: ...

    def watch(
        self, resource: client.Resource, namespace: str | None, version: str, seconds: int
    ) -> Iterator[Object]: ...


@dataclasses.dataclass
class Informer:
    kube: Source
    resource: client.Resource
    namespace: str | None
    on_event: OnEvent
    watch_seconds: int = WATCH_SECONDS
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _version: str | None = None
    """Where the next watch starts: the last version listed or watched (None: list first)."""
    _known: dict[tuple[str, str], Object] = dataclasses.field(default_factory=dict)
    """What a deletion missed between two lists is told from: each object's kind and identity, and its labels."""

    @property
    def name(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.resource.plural}{where}"

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.resource.plural}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop handing events over; a watch request still open ends with the server's next word."""
        self._stop.set()

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while not self._stop.is_set():
            try:
                if self._version is None:
                    self._list()
                self._watch()
            except client.ApiError as error:
                if error.status == GONE:  # older than the server keeps (a watch event or a status)
                    self._version = None
                    continue
                log.warning("watching %s: %s; trying again in %gs", self.name, error, backoff)
            except Exception:
                log.exception("watching %s; trying again in %gs", self.name, backoff)
            else:
                backoff = FIRST_BACKOFF_SECONDS
                continue
            self._stop.wait(backoff)
            backoff = min(backoff * 2, LONGEST_BACKOFF_SECONDS)

    def _list(self) -> None:
        items, version = self.kube.list_at(self.resource, self.namespace)
        listed = {_key(item) for item in items}
        for key in self._known.keys() - listed:
            gone = self._known.pop(key)
            self._hand_over("DELETED", {**gone, "metadata": {**gone["metadata"], "resourceVersion": version}})
        for item in items:
            self._hand_over(None, item)
        self._version = version

    def _watch(self) -> None:
        """Watch from the last version handed over, kept event by event: a stream that breaks is
        resumed after what it delivered, not from where it started."""
        assert self._version is not None
        for event in self.kube.watch(self.resource, self.namespace, self._version, self.watch_seconds):
            if self._stop.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                raise client.ApiError(
                    int(obj.get("code") or 0), str(obj.get("reason", "")), str(obj.get("message", ""))
                )
            if kind != "BOOKMARK":
                self._hand_over(kind, obj)
            self._version = str(obj.get("metadata", {}).get("resourceVersion") or self._version)

    def _hand_over(self, kind: str | None, obj: Object) -> None:
        key = _key(obj)
        if kind == "DELETED":
            self._known.pop(key, None)
        else:
            metadata = obj["metadata"]
            kept = {field: metadata[field] for field in ("name", "namespace", "labels", "uid") if field in metadata}
            self._known[key] = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": kept}
        try:
            self.on_event(kind, obj)
        except Exception:
            log.exception("handling %s %s", kind or "the listed", self.name)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = obj["metadata"]
    return metadata.get("namespace") or "", metadata["name"]


def informers(
    kube: Source,
    kinds: Sequence[tuple[client.Resource, OnEvent]],
    namespaces: Sequence[str] = (),
) -> list[Informer]:
    """An informer of each kind: of the whole cluster, or of each of `namespaces` for a namespaced
    kind (as the operator watches when told its namespaces)."""
    return [
        Informer(kube, resource, namespace, on_event)
        for resource, on_event in kinds
        for namespace in (namespaces if resource.namespaced and namespaces else [None])
    ]
