"""The machinery every dev cluster controller shares: a client over the registry and a work queue.

Controllers are level-triggered, as in kube-controller-manager: store events
only name the keys to look at again; `reconcile(key)` reads the current state
and converges it, and may ask to be called again after a delay (a pause, a
deadline, a back-off). Everything runs on the dev cluster's event loop, so the
registry is never written from two threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import pathlib
import time
from collections.abc import Iterable
from typing import Any

from kiln.devcluster import errors, kinds, objects, registry, store

log = logging.getLogger(__name__)

Object = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

POD = "pods"
NODE = "nodes"
SERVICE = "services"
ENDPOINTS = "endpoints"
ENDPOINT_SLICE = "endpointslices.discovery.k8s.io"
DEPLOYMENT = "deployments.apps"
REPLICA_SET = "replicasets.apps"
JOB = "jobs.batch"
EVENT = "events"
PVC = "persistentvolumeclaims"
PV = "persistentvolumes"
CONFIG_MAP = "configmaps"
SECRET = "secrets"
PRIORITY_CLASS = "priorityclasses.scheduling.k8s.io"
STORAGE_CLASS = "storageclasses.storage.k8s.io"
CRD = "customresourcedefinitions.apiextensions.k8s.io"

ERROR_RETRY_SECONDS = 1.0
LONGEST_DEBOUNCE_SECONDS = 1.0
"""However long a whole-cluster pass takes, what changed is taken in within this long."""


class Client:
    """Reads and writes through the registry, so every write gets the API's validation and
    resourceVersion checks, recorded under one field manager per component."""

    def __init__(self, cluster: registry.Registry, manager: str) -> None:
        self.registry = cluster
        self.manager = manager

    def resource_type(self, key: str) -> kinds.ResourceType:
        resource = self.registry.type_for_key(key)
        if resource is None:
            raise LookupError(f"the dev cluster serves no resource {key}")
        return resource

    def serves(self, key: str) -> bool:
        return self.registry.type_for_key(key) is not None

    def get(self, key: str, namespace: str, name: str) -> Object | None:
        return self.registry.store.get(key, namespace, name)

    def list(self, key: str, namespace: str | None = None) -> list[Object]:
        return self.registry.store.list(key, namespace)

    def create(self, key: str, namespace: str, body: Object) -> Object:
        return self.registry.create(self.resource_type(key), namespace, body, manager=self.manager)

    def update(self, key: str, obj: Object) -> Object:
        metadata = obj["metadata"]
        return self.registry.update(
            self.resource_type(key), metadata.get("namespace", ""), metadata["name"], obj, manager=self.manager
        )

    def update_status(self, key: str, obj: Object, status: Object) -> Object | None:
        """Write the status if it changed; the object's resourceVersion guards against lost updates."""
        if obj.get("status") == status:
            return obj
        metadata = obj["metadata"]
        body = {**obj, "status": status}
        return self.registry.update(
            self.resource_type(key), metadata.get("namespace", ""), metadata["name"], body, subresource="status"
        )

    def delete(self, key: str, namespace: str, name: str, options: Object | None = None) -> None:
        with contextlib.suppress(errors.ApiError):
            self.registry.delete(self.resource_type(key), namespace, name, options or {})

    def event(self, involved: Object, event_type: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about an object, as the component that noticed."""
        metadata = involved["metadata"]
        namespace = metadata.get("namespace") or "default"
        stamp = objects.now()
        body = {
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": metadata["name"],
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "type": event_type,
            "reason": reason,
            "message": message,
            "source": {"component": self.manager},
            "reportingComponent": self.manager,
            "reportingInstance": self.manager,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": None,
            "count": 1,
        }
        try:
            self.create(EVENT, namespace, body)
        except errors.ApiError as error:  # an event lost is not worth failing a reconcile for
            log.debug("event %s on %s not recorded: %s", reason, metadata["name"], error)


def controller_of(obj: Object) -> str | None:
    """The uid of the object's managing owner (ownerReference with controller: true)."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def controller_named(obj: Object, kind: str) -> str | None:
    """The name of the object's managing owner when that owner is of the given kind."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref["name"])
    return None


def owner_reference(owner: Object) -> Object:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(candidates: Iterable[Object], owner: Object) -> list[Object]:
    uid = owner["metadata"]["uid"]
    return [obj for obj in candidates if controller_of(obj) == uid]


def condition(obj: Object, kind: str) -> Object | None:
    for entry in (obj.get("status") or {}).get("conditions") or []:
        if entry.get("type") == kind:
            return dict(entry)
    return None


def is_pod_ready(pod: Object) -> bool:
    ready = condition(pod, "Ready")
    return bool(ready and ready.get("status") == "True")


class Controller:
    """A named reconcile loop over keys, fed by store events."""

    name = "controller"
    debounce_seconds = 0.0
    """Coalesce a burst of events into one reconcile this much later (for whole-cluster keys)."""
    busy_share = 1.0
    """At most this share of the event loop's time for a debounced controller, whose reconcile reads
    the whole cluster: as that grows, its debounce grows with it, so each reconcile takes in more
    events and the API server keeps the rest of the loop."""

    def __init__(self, cluster: registry.Registry) -> None:
        self.client = Client(cluster, self.name)
        self._dirty: dict[Key, None] = {}
        self._wake = asyncio.Event()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        cluster.store.listeners.append(self._observe)

    def keys_for(self, event: store.Event) -> Iterable[Key]:
        """The keys an event asks this controller to look at again."""
        return ()

    async def reconcile(self, key: Key) -> float | None:
        """Converge one key; returns seconds after which to look again, or None."""
        raise NotImplementedError

    def initial_keys(self) -> Iterable[Key]:
        return ()

    def keys_of(self, resource: str) -> list[Key]:
        """The key of every stored object of a resource: what a controller looks at when it starts."""
        return [(obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) for obj in self.client.list(resource)]

    def enqueue(self, key: Key) -> None:
        self._dirty[key] = None
        self._wake.set()

    def enqueue_after(self, key: Key, delay: float) -> None:
        existing = self._timers.get(key)
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if existing is not None and existing.when() <= when:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    def _observe(self, event: store.Event) -> None:
        for key in self.keys_for(event):
            if self.debounce_seconds:
                self.enqueue_after(key, self.debounce_seconds)
            else:
                self.enqueue(key)

    async def run(self) -> None:
        for key in self.initial_keys():
            self.enqueue(key)
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._dirty:
                    key = next(iter(self._dirty))
                    del self._dirty[key]
                    await self._reconcile_safely(key)
                    await asyncio.sleep(0)  # let the API server answer between reconciles
        finally:
            for timer in self._timers.values():
                timer.cancel()

    async def _reconcile_safely(self, key: Key) -> None:
        started = time.perf_counter()
        try:
            again = await self.reconcile(key)
        except errors.ApiError as error:
            if error.code != 409:
                log.warning("%s: reconciling %s/%s: %s", self.name, *key, error)
            self.enqueue_after(key, 0.05 if error.code == 409 else ERROR_RETRY_SECONDS)
            return
        except Exception:
            log.exception("%s: reconciling %s/%s failed", self.name, *key)
            self.enqueue_after(key, ERROR_RETRY_SECONDS)
            return
        finally:
            if self.debounce_seconds:
                took = time.perf_counter() - started
                coalesced = min(took * (1 / self.busy_share - 1), LONGEST_DEBOUNCE_SECONDS)
                self.debounce_seconds = max(type(self).debounce_seconds, coalesced)
        if again is not None:
            self.enqueue_after(key, again)


def copied(obj: Object) -> Object:
    return copy.deepcopy(obj)


def object_key(event: store.Event) -> Key:
    return store.key_of(event.object)


class FileWriter(Controller):
    """Keeps one file rendered from the cluster's objects, rewritten atomically when it changes,
    so a reader (a pod's resolver, Prometheus) never sees half a file."""

    debounce_seconds = 0.1
    busy_share = 0.02
    watched: tuple[str, ...] = ()

    def __init__(self, cluster: registry.Registry, path: pathlib.Path) -> None:
        super().__init__(cluster)
        self.path = path

    def render(self) -> str:
        raise NotImplementedError

    def initial_keys(self) -> Iterable[Key]:
        return [("", "")]

    def keys_for(self, event: store.Event) -> Iterable[Key]:
        return [("", "")] if event.resource in self.watched else ()

    async def reconcile(self, key: Key) -> float | None:
        text = self.render()
        if not self.path.exists() or self.path.read_text() != text:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".tmp")
            partial.write_text(text)
            partial.replace(self.path)
        return None
