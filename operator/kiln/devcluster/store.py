"""Object storage with one monotonic resourceVersion, a watch history, and SQLite persistence.

Like k3s's kine, objects live in SQLite when a data directory is given and in
memory only otherwise. Reads come from an in-memory index; with a data
directory, every write goes to SQLite in the same call, so a restart finds
every object and the counter where it stopped. A bounded history of events serves watches that resume
from a resourceVersion; older versions are answered with 410 Gone.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import json
import pathlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
HISTORY_LIMIT = 20_000

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Event:
    resource_version: int
    resource: str
    type: str
    object: dict[str, Any]
    previous: dict[str, Any] | None = None
    """The object before a MODIFIED event, so selector watches can tell entering from leaving."""


@dataclass(eq=False)
class Watcher:
    """One watch stream's subscription: the resource it follows and a queue of events."""

    resource: str
    namespace: str | None
    matches: Callable[[dict[str, Any]], bool]
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)

    def seen_as(self, event: Event) -> Event | None:
        """The event as this watcher sees it, or None: an object that starts matching the
        selector is ADDED for it, one that stops matching is DELETED, as kube-apiserver does."""
        if event.resource != self.resource:
            return None
        namespace = event.object.get("metadata", {}).get("namespace")
        if self.namespace is not None and namespace != self.namespace:
            return None
        now = self.matches(event.object)
        if event.type != MODIFIED or event.previous is None:
            return event if now else None
        before = self.matches(event.previous)
        if now and before:
            return event
        if now:
            return Event(event.resource_version, event.resource, ADDED, event.object)
        if before:
            return Event(event.resource_version, event.resource, DELETED, event.object)
        return None

    def offer(self, event: Event) -> None:
        seen = self.seen_as(event)
        if seen is not None:
            self.queue.put_nowait(seen)


class LabelIndex:
    """The names of one resource's objects by namespace and label, kept current from its events, so a
    controller finds what a selector picks (or what selects an object) without scanning every object.

    `labels_of` says which labels to index an object under: its own by default, or a Service's
    selector, say. Candidates are a superset: a caller still matches the whole selector."""

    def __init__(self, resource: str, labels_of: Callable[[dict[str, Any]], dict[str, str]] | None = None) -> None:
        self.resource = resource
        self._labels_of = labels_of or (lambda obj: obj["metadata"].get("labels") or {})
        self._names: dict[tuple[str, str, str], set[str]] = collections.defaultdict(set)
        self._indexed: dict[Key, dict[str, str]] = {}

    def fill(self, objects: builtins.list[dict[str, Any]]) -> None:
        for obj in objects:
            self._put(obj)

    def observe(self, event: Event) -> None:
        if event.resource != self.resource:
            return
        if event.type == DELETED:
            self._drop(key_of(event.object))
        else:
            self._put(event.object)

    def _put(self, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        labels = dict(self._labels_of(obj))
        if self._indexed.get(key) == labels:
            return
        self._drop(key)
        self._indexed[key] = labels
        for label, value in labels.items():
            self._names[(key[0], label, value)].add(key[1])

    def _drop(self, key: Key) -> None:
        for label, value in self._indexed.pop(key, {}).items():
            names = self._names[(key[0], label, value)]
            names.discard(key[1])
            if not names:
                del self._names[(key[0], label, value)]

    def having_all(self, namespace: str, labels: dict[str, str]) -> set[str]:
        """Names that may carry every one of `labels` (all of the namespace's objects for none)."""
        if not labels:
            return {name for space, name in self._indexed if space == namespace}
        candidates = [self._names.get((namespace, label, value), set()) for label, value in labels.items()]
        candidates.sort(key=builtins.len)
        return set(candidates[0])

    def having_any(self, namespace: str, labels: dict[str, str]) -> set[str]:
        """Names indexed under at least one of `labels`."""
        found: set[str] = set()
        for pair in labels.items():
            found |= self._names.get((namespace, *pair), set())
        return found


def key_of(obj: dict[str, Any]) -> Key:
    """(namespace, name): where the store keeps an object."""
    metadata = obj["metadata"]
    return (metadata.get("namespace", ""), metadata["name"])


class Store:
    """All objects of all resources, keyed by resource, namespace and name."""

    def __init__(self, data_dir: pathlib.Path | None = None) -> None:
        self._objects: dict[str, dict[Key, dict[str, Any]]] = collections.defaultdict(dict)
        self._history: collections.deque[Event] = collections.deque(maxlen=HISTORY_LIMIT)
        self._watchers: set[Watcher] = set()
        self._database = self._open(data_dir)
        self.resource_version = self._load()
        self._oldest_replayable = self._history[0].resource_version - 1 if self._history else self.resource_version
        self.listeners: list[Callable[[Event], None]] = []

    @staticmethod
    def _open(data_dir: pathlib.Path | None) -> sqlite3.Connection | None:
        """The database, or None in memory: nothing would ever read it back."""
        if data_dir is None:
            return None
        data_dir.mkdir(parents=True, exist_ok=True)
        database = sqlite3.connect(data_dir / "state.db", check_same_thread=False)
        database.execute("PRAGMA journal_mode=WAL")
        database.execute("PRAGMA synchronous=NORMAL")
        database.execute(
            "CREATE TABLE IF NOT EXISTS objects ("
            " resource TEXT, namespace TEXT, name TEXT, body TEXT,"
            " PRIMARY KEY (resource, namespace, name))"
        )
        database.execute("CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, value INTEGER)")
        database.execute(
            "CREATE TABLE IF NOT EXISTS log ("
            " resource_version INTEGER PRIMARY KEY, resource TEXT, type TEXT, body TEXT, previous TEXT)"
        )
        database.commit()
        return database

    def _load(self) -> int:
        if self._database is None:
            return 1
        for resource, namespace, name, body in self._database.execute(
            "SELECT resource, namespace, name, body FROM objects"
        ):
            self._objects[resource][(namespace, name)] = json.loads(body)
        rows = self._database.execute(
            "SELECT resource_version, resource, type, body, previous FROM log ORDER BY resource_version DESC LIMIT ?",
            (HISTORY_LIMIT,),
        ).fetchall()
        for version, resource, event_type, body, previous in reversed(rows):
            before = json.loads(previous) if previous else None
            self._history.append(Event(version, resource, event_type, json.loads(body), before))
        row = self._database.execute("SELECT value FROM counter WHERE id = 1").fetchone()
        return int(row[0]) if row else 1

    def close(self) -> None:
        if self._database is not None:
            self._database.close()

    def next_version(self) -> int:
        self.resource_version += 1
        return self.resource_version

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects[resource].get((namespace, name))

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Objects in key order (namespace, then name), as etcd returns them."""
        objects = self._objects[resource]
        keys = sorted(key for key in objects if namespace is None or key[0] == namespace)
        return [objects[key] for key in keys]

    def resources(self) -> Iterator[str]:
        return iter(list(self._objects))

    def write(self, resource: str, obj: dict[str, Any], event_type: str) -> dict[str, Any]:
        """Store a created or changed object under a new resourceVersion and tell the watchers."""
        version = self.next_version()
        metadata = obj["metadata"]
        metadata["resourceVersion"] = str(version)
        key = (metadata.get("namespace", ""), metadata["name"])
        previous = self._objects[resource].get(key)
        self._objects[resource][key] = obj
        if self._database is not None:
            self._database.execute(
                "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?)", (resource, key[0], key[1], json.dumps(obj))
            )
        event = Event(version, resource, event_type, obj, previous if event_type == MODIFIED else None)
        self._commit(event)
        self._publish(event)
        return obj

    def delete(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Remove an object; its DELETED event carries a new resourceVersion."""
        version = self.next_version()
        metadata = obj["metadata"]
        key = (metadata.get("namespace", ""), metadata["name"])
        self._objects[resource].pop(key, None)
        gone = {**obj, "metadata": {**metadata, "resourceVersion": str(version)}}
        if self._database is not None:
            self._database.execute(
                "DELETE FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
                (resource, key[0], key[1]),
            )
        event = Event(version, resource, DELETED, gone)
        self._commit(event)
        self._publish(event)
        return gone

    def _commit(self, event: Event) -> None:
        if self._database is None:
            return
        self._database.execute("INSERT OR REPLACE INTO counter VALUES (1, ?)", (event.resource_version,))
        self._database.execute(
            "INSERT INTO log VALUES (?, ?, ?, ?, ?)",
            (
                event.resource_version,
                event.resource,
                event.type,
                json.dumps(event.object),
                json.dumps(event.previous) if event.previous is not None else None,
            ),
        )
        if event.resource_version % 1000 == 0:
            self._database.execute(
                "DELETE FROM log WHERE resource_version <= ?", (event.resource_version - HISTORY_LIMIT,)
            )
        self._database.commit()

    def _publish(self, event: Event) -> None:
        if len(self._history) == self._history.maxlen:
            self._oldest_replayable = self._history[0].resource_version
        self._history.append(event)
        for watcher in list(self._watchers):
            watcher.offer(event)
        for listener in self.listeners:
            listener(event)

    def watch(self, watcher: Watcher, since: int | None) -> builtins.list[Event]:
        """Subscribe; returns the events after `since` that the watcher missed.

        Raises LookupError when `since` is older than the history kept.
        """
        missed: list[Event] = []
        if since is not None:
            if since < self._oldest_replayable:
                raise LookupError(f"too old resource version: {since} ({self._oldest_replayable})")
            missed = [event for event in self._history if event.resource_version > since]
        self._watchers.add(watcher)
        return [seen for seen in map(watcher.seen_as, missed) if seen is not None]

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close_watches(self) -> None:
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)
