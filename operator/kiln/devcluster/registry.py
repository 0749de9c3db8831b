"""The semantics of the Kubernetes API over the store, independent of HTTP.

Create, update, patch and delete with uid, generation, resourceVersion and
409 conflicts; the status subresource; finalizers and deletionTimestamp;
ownerReference garbage collection (background, foreground, orphan); namespace
lifecycle; CRD registration with schema validation, pruning and defaulting.
"""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import Callable
from typing import Any

from kiln.devcluster import defaults, errors, fieldmanager, kinds, kube_schemas, objects, patch, schema, store

Object = dict[str, Any]
Admission = Callable[["Registry", kinds.ResourceType, Object, Object | None], None]

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
NAMESPACE_FINALIZER = "kubernetes"
_STATUS_KEPT_ON_CREATE = ("Namespace", "CustomResourceDefinition", "Node")  # a kubelet registers its node with status
_STATUS_WRITE_PARTS = ("apiVersion", "kind", "metadata", "status")
_SYSTEM_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)


def _grace_period(rt: kinds.ResourceType, obj: Object, options: Object) -> int:
    """Seconds a deleted object stays Terminating for its kubelet to stop it: a bound, unfinished pod
    gets the grace period asked for, else its terminationGracePeriodSeconds; anything else, none."""
    if rt.kind != "Pod" or not obj.get("spec", {}).get("nodeName"):
        return 0
    if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    asked = options.get("gracePeriodSeconds")
    if asked is not None:
        return max(int(asked), 0)
    return int(obj["spec"].get("terminationGracePeriodSeconds", 30))


def _still_terminating(obj: Object) -> bool:
    """A pod being deleted is removed only once its kubelet confirms with a zero grace period."""
    return bool(obj["metadata"].get("deletionGracePeriodSeconds"))


def _meta(obj: Object) -> Object:
    metadata: Object = obj.setdefault("metadata", {})
    return metadata


def _spec_part(obj: Object) -> Object:
    """Everything but metadata and status: what a generation counts changes of."""
    return {key: value for key, value in obj.items() if key not in ("metadata", "status", "apiVersion", "kind")}


class Registry:
    """All objects of the dev cluster and the rules every write obeys."""

    def __init__(self, objects_store: store.Store) -> None:
        self.store = objects_store
        self.types = kinds.ResourceTypes()
        self.admission: list[Admission] = []
        """Mutating admission plugins, run after defaulting on every create and update."""
        self.validating: list[Admission] = []
        """Validating admission plugins, run after schema validation on every create and update."""
        self._emptying: set[str] = set()
        self._index = OwnerIndex()
        for resource in self.store.resources():
            for obj in self.store.list(resource):
                self._index.observe(store.Event(0, resource, store.ADDED, obj))
        self.store.listeners.append(self._index.observe)
        for crd in self.store.list("customresourcedefinitions.apiextensions.k8s.io"):
            self._register_crd(crd)
        for name in SYSTEM_NAMESPACES:
            if self.store.get("namespaces", "", name) is None:
                self.create(self.types.get("", "v1", "namespaces"), "", {"metadata": {"name": name}})  # type: ignore[arg-type]

    # reads

    def get(self, rt: kinds.ResourceType, namespace: str, name: str) -> Object:
        obj = self.store.get(rt.key, namespace if rt.namespaced else "", name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return self._as_version(rt, obj)

    def list_objects(self, rt: kinds.ResourceType, namespace: str | None) -> list[Object]:
        return [self._as_version(rt, obj) for obj in self.store.list(rt.key, namespace if rt.namespaced else None)]

    @staticmethod
    def _as_version(rt: kinds.ResourceType, obj: Object) -> Object:
        """CRDs with several served versions store one copy; it is shown in the version asked for."""
        if obj.get("apiVersion") == rt.api_version:
            return obj
        return {**obj, "apiVersion": rt.api_version}

    # writes

    def create(
        self,
        rt: kinds.ResourceType,
        namespace: str,
        body: Object,
        *,
        dry_run: bool = False,
        strict: bool = False,
        manager: str | None = None,
        applied: Object | None = None,
    ) -> Object:
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", rt.api_version)
        obj.setdefault("kind", rt.kind)
        self._check_kind(rt, obj)
        metadata = _meta(obj)
        if not metadata.get("name"):
            if not metadata.get("generateName"):
                raise errors.ApiError(
                    422,
                    "Invalid",
                    f'{rt.kind} "" is invalid: metadata.name: Required value: name or generateName is required',
                )
            metadata["name"] = objects.generated_name(metadata["generateName"])
        name = metadata["name"]
        namespace = self._check_namespace(rt, namespace, metadata, creating=True)
        if self.store.get(rt.key, namespace, name) is not None:
            raise errors.already_exists(rt.plural, rt.group, name)
        for field in (*_SYSTEM_METADATA, "resourceVersion"):
            metadata.pop(field, None)
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = objects.now()
        if rt.has_status and rt.kind not in _STATUS_KEPT_ON_CREATE:
            obj.pop("status", None)
        if rt.crd or "spec" in obj:
            metadata["generation"] = 1
        self._normalize(rt, obj, strict)
        self._admit(rt, obj, None)
        self._validate(rt, obj, None)
        self._check(rt, obj, None)
        if manager and applied is not None:
            obj = fieldmanager.record_apply(None, obj, applied, manager)
        elif manager:
            obj = fieldmanager.record_update(None, obj, manager)
        if dry_run:
            metadata["resourceVersion"] = str(self.store.resource_version)
            return obj
        written = self.store.write(rt.key, obj, store.ADDED)
        self._after_write(rt, written)
        return self._as_version(rt, written)

    def update(
        self,
        rt: kinds.ResourceType,
        namespace: str,
        name: str,
        body: Object,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        strict: bool = False,
        manager: str | None = None,
    ) -> Object:
        namespace = namespace if rt.namespaced else ""
        old = self.store.get(rt.key, namespace, name)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        if subresource == "status" and not rt.crd:
            # Only its status is kept (`_merge_update`), so the spec is not copied: a built-in
            # kind's defaulting reads it (a pod's qosClass) and writes into it only what a stored
            # spec has already (a CRD's schema may have changed since: its spec is copied).
            new = {key: value if key == "spec" else copy.deepcopy(value) for key, value in body.items()}
        else:
            new = copy.deepcopy(body)
        new.setdefault("apiVersion", rt.api_version)
        new.setdefault("kind", rt.kind)
        self._check_kind(rt, new)
        metadata = _meta(new)
        if metadata.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({metadata['name']}) does not match the name on the URL ({name})"
            )
        given_version = metadata.get("resourceVersion")
        if given_version and given_version != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name, errors.STALE_OBJECT)
        self._normalize(rt, new, strict)
        new = self._merge_update(rt, old, new, subresource)
        if subresource is None:
            self._admit(rt, new, old)
        self._validate(rt, new, old, subresource)
        if subresource is None:
            self._check(rt, new, old)
        if manager and subresource is None:
            new = fieldmanager.record_update(old, new, manager)
        if new == old:
            return self._as_version(rt, old)
        if dry_run:
            return new
        return self._write_update(rt, new)

    def bind(self, rt: kinds.ResourceType, namespace: str, name: str, node: str, *, manager: str | None) -> Object:
        """pods/binding, as kube-apiserver stores it: the pod's node and its PodScheduled condition
        in one write (a scheduler's one request per pod)."""
        old = self.store.get(rt.key, namespace, name)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        if old["spec"].get("nodeName"):
            why = f'pod {name} is already assigned to node "{old["spec"]["nodeName"]}"'
            raise errors.conflict(rt.plural, rt.group, name, why)
        status = old.get("status") or {}
        conditions = objects.set_condition(
            status.get("conditions") or [], "PodScheduled", "True", "", "", objects.now(), lastProbeTime=None
        )
        bound = {
            **old,
            "metadata": copy.deepcopy(old["metadata"]),
            "spec": {**old["spec"], "nodeName": node},
            "status": {**status, "conditions": conditions},
        }
        if manager:
            bound = fieldmanager.record_update(old, bound, manager)
        return self._write_update(rt, bound)

    def _merge_update(self, rt: kinds.ResourceType, old: Object, new: Object, subresource: str | None) -> Object:
        """Carry over what this kind of write may not change."""
        if subresource == "status":
            # All but the status as stored: only the metadata's top level is copied, since the write
            # stamps its resourceVersion; stored objects are never changed in place, so the rest can be shared.
            return {**old, "metadata": dict(old["metadata"]), "status": new.get("status", {})}
        metadata = _meta(new)
        for field in _SYSTEM_METADATA:
            if field in old["metadata"]:
                metadata[field] = old["metadata"][field]
            else:
                metadata.pop(field, None)
        metadata["name"] = old["metadata"]["name"]
        if "namespace" in old["metadata"]:
            metadata["namespace"] = old["metadata"]["namespace"]
        if rt.has_status and rt.kind != "CustomResourceDefinition":
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        if "generation" in metadata and _spec_part(new) != _spec_part(old):
            metadata["generation"] = old["metadata"]["generation"] + 1
        if old["metadata"].get("deletionTimestamp"):
            added = set(metadata.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                refused = schema.FieldError(
                    "metadata.finalizers",
                    schema.FORBIDDEN,
                    "no new finalizers can be added if the object is being deleted",
                )
                raise errors.invalid(rt.kind, rt.group, old["metadata"]["name"], [refused])
        metadata["resourceVersion"] = old["metadata"]["resourceVersion"]
        return new

    def _write_update(self, rt: kinds.ResourceType, new: Object) -> Object:
        metadata = new["metadata"]
        if metadata.get("deletionTimestamp") and not metadata.get("finalizers") and not _still_terminating(new):
            return self._remove(rt, new)
        written = self.store.write(rt.key, new, store.MODIFIED)
        self._after_write(rt, written)
        return self._as_version(rt, written)

    def patch(
        self,
        rt: kinds.ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        strict: bool = False,
        manager: str | None = None,
        force: bool = False,
    ) -> Object:
        namespace = namespace if rt.namespaced else ""
        current = self.store.get(rt.key, namespace, name)
        applying = content_type == patch.APPLY
        if applying and not manager:
            raise errors.bad_request("fieldManager is required for apply requests")
        if current is None:
            if applying:
                return self.create(rt, namespace, body, dry_run=dry_run, strict=strict, manager=manager, applied=body)
            raise errors.not_found(rt.plural, rt.group, name)
        current = self._as_version(rt, current)
        patched = self._apply_patch(rt, current, content_type, body)
        if applying and manager:
            fieldmanager.check_apply(current, body, manager, force)
            patched = fieldmanager.record_apply(current, patched, body, manager)
            manager = None
        given = _meta(patched).get("resourceVersion")
        if content_type != patch.APPLY and given and given != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name, errors.STALE_OBJECT)
        patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.update(
            rt, namespace, name, patched, subresource=subresource, dry_run=dry_run, strict=strict, manager=manager
        )

    def _apply_patch(self, rt: kinds.ResourceType, current: Object, content_type: str, body: Any) -> Object:
        if content_type == patch.JSON:
            return patch.json_patch(current, body)
        if not isinstance(body, dict):
            raise errors.bad_request("a merge patch must be a JSON object")
        if content_type == patch.MERGE:
            result: Object = patch.merge_patch(current, body)
            return result
        if content_type == patch.STRATEGIC and rt.crd:
            raise errors.unsupported_media_type(content_type)
        if content_type in (patch.STRATEGIC, patch.APPLY):
            root = kube_schemas.definition(rt.api_version, rt.kind) if not rt.crd else rt.schema
            return patch.strategic_merge_patch(current, body, root, _schema_lookup(rt.crd))
        raise errors.unsupported_media_type(content_type)

    def delete(
        self,
        rt: kinds.ResourceType,
        namespace: str,
        name: str,
        options: Object | None = None,
        *,
        dry_run: bool = False,
    ) -> Object:
        options = options or {}
        namespace = namespace if rt.namespaced else ""
        obj = self.store.get(rt.key, namespace, name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            if preconditions.get(field) and preconditions[field] != obj["metadata"].get(field):
                actual = obj["metadata"].get(field)
                why = f"Precondition failed: {field}: {preconditions[field]}, {field} in object meta: {actual}"
                raise errors.conflict(rt.plural, rt.group, name, why)
        if dry_run:
            return obj
        obj = copy.deepcopy(obj)
        metadata = obj["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        policy = options.get("propagationPolicy") or ("Orphan" if options.get("orphanDependents") else "Background")
        if rt.kind == "Namespace" and NAMESPACE_FINALIZER in (obj.get("spec", {}).get("finalizers") or []):
            return self._terminate_namespace(rt, obj)
        if not metadata.get("deletionTimestamp"):
            if policy == "Foreground" and self.dependents(metadata["uid"]):
                finalizers.append(FOREGROUND)
            elif policy == "Orphan" and self.dependents(metadata["uid"]):
                finalizers.append(ORPHAN)
        grace = _grace_period(rt, obj, options)
        if not finalizers and not grace:
            return self._remove(rt, obj)
        current_grace = metadata.get("deletionGracePeriodSeconds")
        if not metadata.get("deletionTimestamp") or (current_grace is not None and grace < current_grace):
            metadata["deletionTimestamp"] = objects.timestamp_after(grace)
            metadata["deletionGracePeriodSeconds"] = grace
            metadata["finalizers"] = finalizers
            obj = self.store.write(rt.key, obj, store.MODIFIED)
            self._after_write(rt, obj)
        return self._as_version(rt, obj)

    def _remove(self, rt: kinds.ResourceType, obj: Object) -> Object:
        gone = self.store.delete(rt.key, obj)
        self._collect_garbage(gone["metadata"]["uid"])
        if rt.kind == "CustomResourceDefinition":
            self._unregister_crd(gone)
        if rt.namespaced:
            self._recheck_terminating_namespace(gone["metadata"].get("namespace", ""))
        return self._as_version(rt, gone)

    # admission: validation, pruning, defaulting

    def _check_kind(self, rt: kinds.ResourceType, obj: Object) -> None:
        if obj.get("kind") != rt.kind or obj.get("apiVersion") not in {
            f"{rt.group}/{version}" if rt.group else version for version in (rt.served_versions or (rt.version,))
        }:
            raise errors.bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) does not match the expected API version "
                f"({rt.api_version})"
                if obj.get("kind") == rt.kind
                else f"kind {obj.get('kind')} does not match the URL's resource {rt.plural} ({rt.kind})"
            )

    def _check_namespace(self, rt: kinds.ResourceType, namespace: str, metadata: Object, *, creating: bool) -> str:
        if not rt.namespaced:
            metadata.pop("namespace", None)
            return ""
        given = metadata.get("namespace")
        if given and namespace and given != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        namespace = namespace or given or "default"
        metadata["namespace"] = namespace
        owner = self.store.get("namespaces", "", namespace)
        if owner is None:
            raise errors.not_found("namespaces", "", namespace)
        if creating and owner["metadata"].get("deletionTimestamp"):
            why = f"unable to create new content in namespace {namespace} because it is being terminated"
            raise errors.forbidden(rt.plural, rt.group, metadata["name"], why)
        return namespace

    def _normalize(self, rt: kinds.ResourceType, obj: Object, strict: bool) -> None:
        """Decode as kube-apiserver does before anything compares or validates: prune unknown
        fields (refused under strict field validation) and apply defaults."""
        if rt.crd and rt.schema:
            unknown = schema.prune(rt.schema, obj)
            if unknown and strict:
                fields = ", ".join(f'unknown field "{path}"' for path in unknown)
                handled = f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}'
                raise errors.bad_request(f"{handled}: strict decoding error: {fields}")
            schema.apply_defaults(rt.schema, obj)
        else:
            defaults.apply(obj)

    def _admit(self, rt: kinds.ResourceType, obj: Object, old: Object | None) -> None:
        for plugin in self.admission:
            plugin(self, rt, obj, old)

    def _check(self, rt: kinds.ResourceType, obj: Object, old: Object | None) -> None:
        for plugin in self.validating:
            plugin(self, rt, obj, old)

    def _validate(
        self, rt: kinds.ResourceType, obj: Object, old: Object | None, subresource: str | None = None
    ) -> None:
        if rt.crd and rt.schema:
            found = schema.validate(rt.schema, obj, old)
        elif subresource == "status":
            # As kube-apiserver's status strategies: a status write is checked for its metadata and
            # status; the spec it cannot change was checked when it was written.
            found = kube_schemas.validate({key: obj[key] for key in _STATUS_WRITE_PARTS if key in obj})
        else:
            found = kube_schemas.validate(obj)
        found += _metadata_errors(obj, path_segment_name=rt.group == "rbac.authorization.k8s.io")
        if rt.kind == "CustomResourceDefinition":
            found += _crd_errors(obj)
        if found:
            raise errors.invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), found)

    # side effects of writes: CRDs, namespaces, garbage collection

    def _after_write(self, rt: kinds.ResourceType, obj: Object) -> None:
        if rt.kind == "CustomResourceDefinition":
            self._establish_crd(rt, obj)
        elif rt.kind == "Namespace" and not obj["metadata"].get("deletionTimestamp"):
            self._ensure_default_service_account(obj["metadata"]["name"])
        if obj["metadata"].get("deletionTimestamp"):
            self._advance_deletion(rt, obj)

    def _ensure_default_service_account(self, namespace: str) -> None:
        if self.store.get("serviceaccounts", namespace, "default") is None:
            account_type = self.types.get("", "v1", "serviceaccounts")
            assert account_type is not None
            self.create(account_type, namespace, {"metadata": {"name": "default"}})

    def _register_crd(self, crd: Object) -> None:
        spec = crd["spec"]
        self.types.remove_group_resource(spec["group"], spec["names"]["plural"])
        for resource in kinds.from_crd(crd):
            self.types.add(resource)

    def _establish_crd(self, rt: kinds.ResourceType, crd: Object) -> None:
        if crd["metadata"].get("deletionTimestamp"):
            return
        self._register_crd(crd)
        accepted = {
            "conditions": [
                {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": objects.now(),
                }
                for kind, reason, message in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
            "acceptedNames": crd["spec"]["names"],
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
        }
        status = crd.get("status") or {}
        if status.get("acceptedNames") != accepted["acceptedNames"] or not status.get("conditions"):
            updated = {**copy.deepcopy(crd), "status": accepted}
            self.store.write(rt.key, updated, store.MODIFIED)

    def _unregister_crd(self, crd: Object) -> None:
        spec = crd["spec"]
        key = f"{spec['names']['plural']}.{spec['group']}"
        for obj in self.store.list(key):
            self.store.delete(key, obj)
        self.types.remove_group_resource(spec["group"], spec["names"]["plural"])

    def _terminate_namespace(self, rt: kinds.ResourceType, namespace: Object) -> Object:
        metadata = namespace["metadata"]
        if not metadata.get("deletionTimestamp"):
            metadata["deletionTimestamp"] = objects.now()
            metadata["deletionGracePeriodSeconds"] = 0
            namespace["status"] = {"phase": "Terminating"}
            namespace = self.store.write(rt.key, namespace, store.MODIFIED)
        self._advance_deletion(rt, namespace)
        return self.store.get(rt.key, "", metadata["name"]) or namespace

    def _advance_deletion(self, rt: kinds.ResourceType, obj: Object) -> None:
        """Progress an object that is being deleted: empty a namespace, or run GC finalizers."""
        metadata = obj["metadata"]
        if rt.kind == "Namespace":
            self._empty_namespace(rt, obj)
            return
        finalizers = metadata.get("finalizers") or []
        if FOREGROUND in finalizers:
            dependents = self.dependents(metadata["uid"])
            for dep_rt, dependent in dependents:
                self.delete(
                    dep_rt,
                    dependent["metadata"].get("namespace", ""),
                    dependent["metadata"]["name"],
                    {"propagationPolicy": "Foreground"},
                )
            if not self.dependents(metadata["uid"]):
                self._drop_finalizer(rt, obj, FOREGROUND)
        elif ORPHAN in finalizers:
            for dep_rt, dependent in self.dependents(metadata["uid"]):
                orphaned = copy.deepcopy(dependent)
                refs = orphaned["metadata"].get("ownerReferences", [])
                orphaned["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != metadata["uid"]]
                self.store.write(dep_rt.key, orphaned, store.MODIFIED)
            self._drop_finalizer(rt, obj, ORPHAN)

    def _drop_finalizer(self, rt: kinds.ResourceType, obj: Object, finalizer: str) -> None:
        current = self.store.get(rt.key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if current is None:
            return
        current = copy.deepcopy(current)
        current["metadata"]["finalizers"] = [f for f in current["metadata"].get("finalizers", []) if f != finalizer]
        self._write_update(rt, current)

    def _storage_types(self) -> list[kinds.ResourceType]:
        """One resource type per stored resource, whatever versions it is served in."""
        by_key: dict[str, kinds.ResourceType] = {}
        for resource in self.types.all():
            by_key.setdefault(resource.key, resource)
        return list(by_key.values())

    def _empty_namespace(self, rt: kinds.ResourceType, namespace: Object) -> None:
        name = namespace["metadata"]["name"]
        if name in self._emptying:
            return
        self._emptying.add(name)
        try:
            self._delete_namespace_contents(name)
        finally:
            self._emptying.discard(name)
        if not any(self.store.list(r.key, name) for r in self._storage_types() if r.namespaced):
            current = self.store.get(rt.key, "", name)
            if current is not None:
                self.store.delete(rt.key, current)

    def _delete_namespace_contents(self, name: str) -> None:
        contents = [
            (resource, obj)
            for resource in self._storage_types()
            if resource.namespaced
            for obj in self.store.list(resource.key, name)
        ]
        for resource, obj in contents:
            if not obj["metadata"].get("deletionTimestamp") and self.store.get(
                resource.key, name, obj["metadata"]["name"]
            ):
                self.delete(resource, name, obj["metadata"]["name"])

    def _recheck_terminating_namespace(self, namespace: str) -> None:
        """Something in a namespace went away; a terminating namespace may now be empty."""
        ns = self.store.get("namespaces", "", namespace)
        if ns is not None and ns["metadata"].get("deletionTimestamp"):
            ns_type = self.types.get("", "v1", "namespaces")
            assert ns_type is not None
            self._empty_namespace(ns_type, ns)

    def dependents(self, owner_uid: str) -> list[tuple[kinds.ResourceType, Object]]:
        """The objects that name this uid as an owner, each with its resource type."""
        found = []
        for key, namespace, name in self._index.dependents(owner_uid):
            resource = self.type_for_key(key)
            obj = self.store.get(key, namespace, name)
            if resource is not None and obj is not None:
                found.append((resource, obj))
        return found

    def absent_owners(self, obj: Object) -> set[str]:
        """The uids in the object's ownerReferences that no object has (any more)."""
        return {uid for uid in objects.owner_uids(obj) if not self._index.exists(uid)}

    def owners_gone(self, obj: Object) -> bool:
        """Whether every owner the object names is gone: background propagation deletes it."""
        return self.absent_owners(obj) >= objects.owner_uids(obj)

    def located(self, uid: str) -> tuple[str, str, str] | None:
        """Where the object with this uid is stored: its key, namespace and name; None if none has it."""
        return self._index.place(uid)

    def type_for_key(self, key: str) -> kinds.ResourceType | None:
        """The resource type stored under a key (`pods`, `deployments.apps`), or None."""
        return next((resource for resource in self._storage_types() if resource.key == key), None)

    def _collect_garbage(self, owner_uid: str) -> None:
        """Background propagation: a dependent whose owners are all gone is deleted."""
        for resource, dependent in self.dependents(owner_uid):
            metadata = dependent["metadata"]
            if self.owners_gone(dependent):  # the owner is out of the index already
                with contextlib.suppress(errors.ApiError):
                    self.delete(resource, metadata.get("namespace", ""), metadata["name"])
        self._release_foreground_owners()

    def _release_foreground_owners(self) -> None:
        """A removal may have been the last dependent a foreground deletion waited for."""
        for key, namespace, name in self._index.waiting_in_foreground():
            obj = self.store.get(key, namespace, name)
            resource = self.type_for_key(key)
            if obj is not None and resource is not None and not self._index.dependents(obj["metadata"]["uid"]):
                self._drop_finalizer(resource, obj, FOREGROUND)


class OwnerIndex:
    """Which objects each uid owns, which uids exist, and who waits in foreground deletion."""

    def __init__(self) -> None:
        self._where: dict[str, tuple[str, str, str]] = {}
        self._owners_of: dict[tuple[str, str, str], set[str]] = {}
        self._owned: dict[str, set[tuple[str, str, str]]] = {}
        self._foreground: set[tuple[str, str, str]] = set()

    def observe(self, event: store.Event) -> None:
        metadata = event.object.get("metadata", {})
        place = (event.resource, metadata.get("namespace", ""), metadata.get("name", ""))
        for uid in self._owners_of.pop(place, set()):
            self._owned.get(uid, set()).discard(place)
        self._foreground.discard(place)
        if event.type == store.DELETED:
            self._where.pop(metadata.get("uid", ""), None)
            return
        self._where[metadata.get("uid", "")] = place
        owners = objects.owner_uids(event.object)
        self._owners_of[place] = owners
        for uid in owners:
            self._owned.setdefault(uid, set()).add(place)
        if metadata.get("deletionTimestamp") and FOREGROUND in (metadata.get("finalizers") or []):
            self._foreground.add(place)

    def exists(self, uid: str) -> bool:
        return uid in self._where

    def place(self, uid: str) -> tuple[str, str, str] | None:
        return self._where.get(uid)

    def dependents(self, uid: str) -> list[tuple[str, str, str]]:
        return sorted(self._owned.get(uid, set()))

    def waiting_in_foreground(self) -> list[tuple[str, str, str]]:
        return sorted(self._foreground)


def _schema_lookup(crd: bool) -> patch.SchemaLookup:
    def lookup(node: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
        if node is None:
            return None
        resolved = node if crd else kube_schemas.resolve(node)
        if key == "[]":
            items = resolved.get("items")
            return items if crd else kube_schemas.resolve(items)
        child = resolved.get("properties", {}).get(key)
        return (
            child
            if crd or child is None
            else kube_schemas.resolve(child) | {k: v for k, v in child.items() if k.startswith("x-kubernetes-patch")}
        )

    return lookup


def _metadata_errors(obj: Object, path_segment_name: bool = False) -> list[schema.FieldError]:
    """RBAC objects' names need only be path segments (`system:basic-user`), as kube validates them."""
    metadata = obj["metadata"]
    name = metadata.get("name", "")
    found = []
    if path_segment_name:
        if name in (".", "..") or "/" in name or "%" in name or not name:
            detail = "may not be '.' or '..', and may not contain '/' or '%'"
            found.append(schema.FieldError("metadata.name", schema.INVALID, detail, name))
    elif not objects.DNS_SUBDOMAIN.match(name) or len(name) > 253:
        detail = (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character"
        )
        found.append(schema.FieldError("metadata.name", schema.INVALID, detail, name))
    for field in ("labels", "annotations"):
        values = metadata.get(field)
        if values is not None and (
            not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
        ):
            found.append(schema.FieldError(f"metadata.{field}", schema.INVALID, "values must be strings", "object"))
    return found


def _crd_errors(crd: Object) -> list[schema.FieldError]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    found = []
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if crd["metadata"].get("name") != expected:
        detail = 'must be spec.names.plural+"."+spec.group'
        found.append(schema.FieldError("metadata.name", schema.INVALID, detail, crd["metadata"].get("name")))
    storage = [v for v in spec.get("versions") or [] if v.get("storage")]
    if len(storage) != 1:
        found.append(
            schema.FieldError(
                "spec.versions",
                schema.INVALID,
                "must have exactly one version marked as storage version",
                "array",
            )
        )
    return found
