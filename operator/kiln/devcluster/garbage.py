"""The garbage collector's second half, as kube-controller-manager runs it: an object whose owners
are gone is deleted, and one that keeps an owner loses the references to those that are gone.

An owner's deletion collects what it owns at that moment, in the registry. This controller catches
what that cannot: a dependent written after its owner went (a client that raced the deletion, as
an operator reconciling a job being deleted does), and the references left behind on a dependent
that had another owner."""

from __future__ import annotations

from collections.abc import Iterable

from kiln.devcluster import controllers, store


class GarbageCollector(controllers.Controller):
    """Keyed by (resource, uid): the object, wherever it is stored."""

    name = "garbage-collector"

    def initial_keys(self) -> Iterable[controllers.Key]:
        for resource in self.client.registry.store.resources():
            for obj in self.client.list(resource):
                if self._dangling(obj):
                    yield resource, obj["metadata"]["uid"]

    def keys_for(self, event: store.Event) -> Iterable[controllers.Key]:
        if event.type == store.DELETED:
            owned = self.client.registry.dependents(event.object["metadata"].get("uid", ""))
            return [(resource.key, dependent["metadata"]["uid"]) for resource, dependent in owned]
        return [(event.resource, event.object["metadata"]["uid"])] if self._dangling(event.object) else ()

    def _dangling(self, obj: controllers.Object) -> bool:
        return not obj["metadata"].get("deletionTimestamp") and bool(self.client.registry.absent_owners(obj))

    async def reconcile(self, key: controllers.Key) -> float | None:
        resource, uid = key
        place = self.client.registry.located(uid)
        if place is None:
            return None
        _, namespace, name = place
        obj = self.client.get(resource, namespace, name)
        if obj is None or not self._dangling(obj):
            return None
        if self.client.registry.owners_gone(obj):
            self.client.delete(resource, namespace, name)
            return None
        absent = self.client.registry.absent_owners(obj)
        kept = controllers.copied(obj)
        references = kept["metadata"]["ownerReferences"]
        kept["metadata"]["ownerReferences"] = [ref for ref in references if ref.get("uid") not in absent]
        self.client.update(resource, kept)
        return None
