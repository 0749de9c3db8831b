"""The scheduler controller: binds pending pods by the plan in `scheduling`, and keeps PodGroup status."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kiln.devcluster import controllers, objects, registry, scheduling, store
from kiln.devcluster.controllers import NODE, POD, PRIORITY_CLASS, PVC, Key

Object = dict[str, Any]

PodKey = tuple[str, str]
EVERYTHING: Key = ("", "")
RETRY_UNSCHEDULABLE_SECONDS = 5.0
_GROUP_RESOURCES = (scheduling.COSCHEDULING_PODGROUPS, scheduling.VOLCANO_PODGROUPS)


class Scheduler(controllers.Controller):
    """One queue for the whole cluster: every relevant change re-plans all pending pods."""

    name = "default-scheduler"
    debounce_seconds = 0.02
    busy_share = 0.3

    def __init__(self, cluster: registry.Registry) -> None:
        super().__init__(cluster)
        pods = self.client.list(POD)
        self._usage = scheduling.NodeUsage.of(pods)
        self._pending: set[PodKey] = set()
        self._members: dict[scheduling.GroupRef, set[PodKey]] = {}
        for pod in pods:
            self._track(pod, gone=False)

    def initial_keys(self) -> Iterable[Key]:
        return [EVERYTHING]

    def keys_for(self, event: store.Event) -> Iterable[Key]:
        if event.resource == POD:
            self._usage.observe(event.object, gone=event.type == store.DELETED)
            self._track(event.object, gone=event.type == store.DELETED)
            spec = event.object.get("spec", {})
            pending = scheduling.is_pending(event.object)
            freed = event.type == store.DELETED or scheduling.is_terminal(event.object)
            grouped = scheduling.group_of(event.object) is not None
            return [EVERYTHING] if pending or freed or grouped or not spec.get("nodeName") else ()
        if event.resource in (NODE, PVC, PRIORITY_CLASS, *_GROUP_RESOURCES):
            return [EVERYTHING]
        return ()

    def _track(self, pod: Object, gone: bool) -> None:
        """Which pods wait for a node, and the live members of each gang: a plan reads those, not
        every pod of the cluster (what the bound ones hold of the nodes is in `_usage`)."""
        key = (pod["metadata"].get("namespace", ""), pod["metadata"]["name"])
        if not gone and scheduling.is_pending(pod):
            self._pending.add(key)
        else:
            self._pending.discard(key)
        group = scheduling.group_of(pod)
        if group is not None:
            members = self._members.setdefault(group, set())
            if gone or scheduling.is_terminal(pod):
                members.discard(key)
            else:
                members.add(key)
            if not members:
                del self._members[group]

    def _to_plan(self) -> list[Object]:
        """The pending pods and the other live members of their gangs."""
        pending = self._stored(self._pending)
        groups = {group for pod in pending if (group := scheduling.group_of(pod)) is not None}
        others = set().union(*(self._members.get(group, set()) for group in groups)) - self._pending
        return [*pending, *self._stored(others)]

    def _stored(self, keys: Iterable[PodKey]) -> list[Object]:
        return [pod for key in keys if (pod := self.client.get(POD, *key)) is not None]

    async def reconcile(self, key: Key) -> float | None:
        pods = self._to_plan()
        groups = self._min_members()
        classes = {pc["metadata"]["name"]: int(pc.get("value", 0)) for pc in self.client.list(PRIORITY_CLASS)}
        claims = {(c["metadata"]["namespace"], c["metadata"]["name"]) for c in self.client.list(PVC)}
        result = scheduling.plan(pods, self.client.list(NODE), groups, classes, claims, usage=self._usage)
        now = objects.now()
        for pod, node in result.bindings:
            self._bind(pod, node)
        for pod, message in result.unschedulable:
            self._mark_unschedulable(pod, message, now)
        self._update_groups(groups)
        return RETRY_UNSCHEDULABLE_SECONDS if result.unschedulable else None

    def _min_members(self) -> dict[scheduling.GroupRef, int]:
        groups = {}
        for resource in _GROUP_RESOURCES:
            if not self.client.serves(resource):
                continue
            for group in self.client.list(resource):
                ref = scheduling.GroupRef(resource, group["metadata"]["namespace"], group["metadata"]["name"])
                groups[ref] = int((group.get("spec") or {}).get("minMember", 1))
        return groups

    def _bind(self, pod: Object, node: str) -> None:
        metadata = pod["metadata"]
        bound = self.client.registry.bind(
            self.client.resource_type(POD), metadata["namespace"], metadata["name"], node, manager=self.name
        )
        self.client.event(
            bound, "Normal", "Scheduled", f"Successfully assigned {metadata['namespace']}/{metadata['name']} to {node}"
        )

    def _mark_unschedulable(self, pod: Object, message: str, now: str) -> None:
        current = controllers.condition(pod, "PodScheduled")
        if current and current.get("reason") == "Unschedulable" and current.get("message") == message:
            return
        status = controllers.copied(pod.get("status") or {})
        status["conditions"] = objects.set_condition(
            status.get("conditions") or [], "PodScheduled", "False", "Unschedulable", message, now, lastProbeTime=None
        )
        self.client.update_status(POD, pod, status)
        self.client.event(pod, "Warning", "FailedScheduling", message)

    def _update_groups(self, groups: dict[scheduling.GroupRef, int]) -> None:
        if not groups:
            return
        pods = self.client.list(POD)
        for ref, min_member in groups.items():
            group = self.client.get(ref.resource, ref.namespace, ref.name)
            if group is None:
                continue
            members = [pod for pod in pods if scheduling.group_of(pod) == ref]
            status = {**(group.get("status") or {}), **scheduling.group_status(members, min_member)}
            if status["phase"] != "Pending" and "scheduleStartTime" not in status:
                status["scheduleStartTime"] = objects.now()
            self.client.update_status(ref.resource, group, status)
