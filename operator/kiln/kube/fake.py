"""An in-memory API server that satisfies `client.Api`, for unit-testing controllers without a cluster.

Shipped as public API, as httpx ships MockTransport: a test builds a `FakeApi`, seeds the world
with `add`, runs the real controller against it and asserts on the objects, the Events and the
recorded writes (`actions`). It keeps the API server's rules a controller depends on, with its
wording: uid, a global resourceVersion bumped on every write, generation bumped on spec changes,
409 AlreadyExists and 409 on a stale resourceVersion, 404 NotFound, RFC 7386 merge patches, a
status subresource that is the only way to write status, label selectors, and ownerReference
garbage collection (done at once, where a cluster's garbage collector would take a moment).
Everything is deterministic: uids and Event names come from counters, timestamps from `clock`.
Everything returned is a copy, so a caller mutating a result never mutates the store.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

from kiln.kube import client

Object = client.Object
Clock = Callable[[], datetime.datetime]
EPOCH = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
_STALE = "the object has been modified; please apply your changes to the latest version and try again"
_SET_REQUIREMENT = re.compile(r"^(?P<key>[^\s!=()]+)\s+(?P<operator>in|notin)\s+\((?P<values>[^()]*)\)$")
_EQUALITY_REQUIREMENT = re.compile(r"^(?P<key>[^\s!=()]+)\s*(?P<operator>==|=|!=)\s*(?P<value>[^\s!=()]*)$")
_EXISTENCE_REQUIREMENT = re.compile(r"^(?P<negated>!?)\s*(?P<key>[^\s!=()]+)$")


class ManualClock:
    """A clock that moves only when told to, for the fake and the controller under test alike."""

    def __init__(self, now: datetime.datetime = EPOCH) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


@dataclasses.dataclass(frozen=True)
class Action:
    """One write the fake accepted: `verb` is create, patch or delete; `subresource` is "status"
    for a status write."""

    verb: Literal["create", "patch", "delete"]
    kind: str
    namespace: str | None
    name: str
    subresource: str | None = None


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: `patch` applied to `target` (neither is changed); null removes a key, and anything
    that is not an object replaces what was there whole."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def _split_requirements(selector: str) -> Iterator[str]:
    """The selector's comma-joined requirements; commas inside `in (x,y)` do not split."""
    depth, start = 0, 0
    for index, char in enumerate(selector):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            yield selector[start:index].strip()
            start = index + 1
    yield selector[start:].strip()


def _requirement(text: str) -> Callable[[Mapping[str, str]], bool]:
    if match := _SET_REQUIREMENT.match(text):
        key, values = match["key"], {value.strip() for value in match["values"].split(",")}
        if match["operator"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQUALITY_REQUIREMENT.match(text):
        key, value = match["key"], match["value"]
        if match["operator"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTENCE_REQUIREMENT.match(text):
        key, negated = match["key"], bool(match["negated"])
        return lambda labels: (key in labels) is not negated
    raise client.ApiError(400, "BadRequest", f"unable to parse requirement: {text!r}")


def label_selector_of(selector: str | None) -> Callable[[Mapping[str, str]], bool]:
    """Whether labels satisfy a label selector, parsed as the API server parses one (`a=b`, `a!=b`,
    `a in (x,y)`, `a notin (x,y)`, `a`, `!a`, comma-joined); one that does not parse is a 400."""
    if not selector or not selector.strip():
        return lambda labels: True
    requirements = [_requirement(text) for text in _split_requirements(selector)]
    return lambda labels: all(requirement(labels) for requirement in requirements)


def _qualified(resource: client.Resource) -> str:
    """The resource as the API server names it in messages: `pods`, `trainingjobs.kiln.dev`."""
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


def _by_namespace_and_name(item: tuple[tuple[str | None, str], Object]) -> tuple[str, str]:
    (namespace, name), _ = item
    return (namespace or "", name)


def _not_found(resource: client.Resource, name: str) -> client.NotFoundError:
    return client.NotFoundError(404, "NotFound", f'{_qualified(resource)} "{name}" not found')


class FakeApi(client.Api):
    """An in-memory API server for one test: `client.Api` plus helpers to seed and inspect it."""

    def __init__(self, namespace: str = "default", clock: Clock | None = None, user: str = "kubernetes-admin") -> None:
        self.namespace = namespace
        self.clock = clock or ManualClock()
        """Where creationTimestamps and Event times come from."""
        self.user = user
        """Whom `whoami` answers."""
        self.actions: list[Action] = []
        """Every write accepted through the `client.Api` calls, in order (not those of `add` or of
        garbage collection)."""
        self._objects: dict[str, dict[tuple[str | None, str], Object]] = {}
        self._resources: dict[str, client.Resource] = {}
        self._logs: dict[tuple[str, str], str] = {}
        self._revision = 0
        self._uids = 0
        self._events = 0

    def add(self, resource: client.Resource, *bodies: Mapping[str, Any]) -> list[Object]:
        """Seed objects as they are (status, uid, creationTimestamp and generation kept where given)
        without recording an action: the world a controller observes."""
        return [self._store(resource, self._new(resource, body, seeding=True)) for body in bodies]

    def set_logs(self, namespace: str, pod: str, text: str) -> None:
        """What `logs` answers for the pod."""
        self._logs[(namespace, pod)] = text

    def events(self, about: str | None = None, namespace: str | None = None) -> list[Object]:
        """The Events posted (about the object named `about`), oldest first."""
        found = [
            event
            for event in self.list(client.EVENTS, namespace)
            if about is None or event.get("involvedObject", {}).get("name") == about
        ]
        return sorted(found, key=lambda event: int(event["metadata"]["resourceVersion"]))

    def get(self, resource: client.Resource, namespace: str | None, name: str) -> Object | None:
        found = self._bucket(resource).get(self._key(resource, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(self, resource: client.Resource, namespace: str | None, label_selector: str | None = None) -> list[Object]:
        within = namespace if resource.namespaced else None
        selected = label_selector_of(label_selector)
        return [
            copy.deepcopy(obj)
            for (obj_namespace, _), obj in sorted(self._bucket(resource).items(), key=_by_namespace_and_name)
            if (within is None or obj_namespace == within) and selected(obj["metadata"].get("labels") or {})
        ]

    def create(self, resource: client.Resource, body: Mapping[str, Any]) -> Object:
        obj = self._new(resource, body, seeding=False)
        created = self._store(resource, obj)
        self._record("create", resource, obj)
        return created

    def patch(
        self,
        resource: client.Resource,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        subresource: str | None = None,
    ) -> Object:
        key = self._key(resource, namespace, name)
        current = self._bucket(resource).get(key)
        if current is None:
            raise _not_found(resource, name)
        wanted_revision = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted_revision is not None and wanted_revision != current["metadata"]["resourceVersion"]:
            raise client.ConflictError(
                409, "Conflict", f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": {_STALE}'
            )
        if subresource == "status":
            updated = apply_merge_patch(current, {"status": patch["status"]} if "status" in patch else {})
        elif subresource is None:
            updated = apply_merge_patch(current, {key: value for key, value in patch.items() if key != "status"})
        else:
            raise client.ApiError(404, "NotFound", f"the fake has no subresource {subresource!r}")
        updated["metadata"] = {**updated.get("metadata", {}), **self._identity(current)}
        if "spec" in updated and updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = int(current["metadata"].get("generation", 0)) + 1
        self._record("patch", resource, updated, subresource)
        return self._store(resource, updated)

    def delete(
        self, resource: client.Resource, namespace: str | None, name: str, propagation: str | None = None
    ) -> None:
        removed = self._bucket(resource).pop(self._key(resource, namespace, name), None)
        if removed is None:
            return
        self._record("delete", resource, removed)
        self._collect_dependents_of(removed["metadata"]["uid"], orphan=propagation == "Orphan")

    def logs(self, namespace: str, pod: str, container: str | None = None, tail_lines: int = 20) -> str:
        if self.get(client.PODS, namespace, pod) is None:
            raise _not_found(client.PODS, pod)
        lines = self._logs.get((namespace, pod), "").splitlines(keepends=True)
        return "".join(lines[-tail_lines:])

    def post_event(
        self,
        involved: Mapping[str, Any],
        event_type: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        component: str = "kiln",
    ) -> Object:
        self._events += 1
        event = client.event_about(
            involved,
            event_type,
            reason,
            message,
            name_suffix=f"{self._events:016x}",
            component=component,
            instance="fake",
            now=self.clock(),
        )
        return self.create(client.EVENTS, event)

    def whoami(self) -> str:
        return self.user

    def _bucket(self, resource: client.Resource) -> dict[tuple[str | None, str], Object]:
        collection = resource.path(None)
        self._resources.setdefault(collection, resource)
        return self._objects.setdefault(collection, {})

    @staticmethod
    def _key(resource: client.Resource, namespace: str | None, name: str) -> tuple[str | None, str]:
        return (namespace if resource.namespaced else None, name)

    def _new(self, resource: client.Resource, body: Mapping[str, Any], *, seeding: bool) -> Object:
        obj = copy.deepcopy(dict(body))
        metadata = obj.setdefault("metadata", {})
        name, namespace = metadata.get("name"), metadata.get("namespace")
        if not name:
            raise client.ApiError(422, "Invalid", f"{resource.kind}: metadata.name: Required value: name is required")
        if resource.namespaced and not namespace:
            raise client.ApiError(400, "BadRequest", f"{_qualified(resource)} must be created in a namespace")
        if self._key(resource, namespace, name) in self._bucket(resource):
            raise client.ConflictError(409, "AlreadyExists", f'{_qualified(resource)} "{name}" already exists')
        obj.setdefault("apiVersion", resource.api_version)
        obj.setdefault("kind", resource.kind)
        self._uids += 1
        assigned: dict[str, Any] = {"uid": str(uuid.UUID(int=self._uids))}
        assigned["creationTimestamp"] = client.timestamp(self.clock())
        if "spec" in obj:
            assigned["generation"] = 1
        if seeding:
            obj["metadata"] = {**assigned, **metadata}
        else:
            obj.pop("status", None)  # as a status subresource drops it: only status writes set one
            metadata.update(assigned)
        return obj

    @staticmethod
    def _identity(current: Object) -> dict[str, Any]:
        """What no patch changes: the server owns these."""
        metadata = current["metadata"]
        kept = ("name", "namespace", "uid", "creationTimestamp", "generation")
        return {field: metadata[field] for field in kept if field in metadata}

    def _store(self, resource: client.Resource, obj: Object) -> Object:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        metadata = obj["metadata"]
        self._bucket(resource)[self._key(resource, metadata.get("namespace"), metadata["name"])] = obj
        return copy.deepcopy(obj)

    def _record(
        self,
        verb: Literal["create", "patch", "delete"],
        resource: client.Resource,
        obj: Object,
        subresource: str | None = None,
    ) -> None:
        metadata = obj["metadata"]
        self.actions.append(Action(verb, resource.kind, metadata.get("namespace"), metadata["name"], subresource))

    def _collect_dependents_of(self, uid: str, *, orphan: bool) -> None:
        """ownerReference garbage collection: dependents are deleted (recursively), or with Orphan
        keep living without the reference to the owner that is gone."""
        for collection, bucket in self._objects.items():
            resource = self._resources[collection]
            for key, obj in list(bucket.items()):
                references = obj["metadata"].get("ownerReferences") or []
                if not any(reference.get("uid") == uid for reference in references):
                    continue
                if orphan:
                    kept = [reference for reference in references if reference.get("uid") != uid]
                    obj["metadata"]["ownerReferences"] = kept
                    if not kept:
                        del obj["metadata"]["ownerReferences"]
                    self._store(resource, obj)
                elif bucket.pop(key, None) is not None:
                    self._collect_dependents_of(obj["metadata"]["uid"], orphan=False)
