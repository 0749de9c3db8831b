"""The admission plugins every write goes through, and the quota controller that keeps quotas current.

kube-apiserver's order: LimitRanger defaults (mutating, beside the dev
cluster's other built-in defaulting), then mutating webhooks (`webhooks`), then
schema validation, then LimitRanger bounds, ValidatingAdmissionPolicy,
validating webhooks and ResourceQuota. The plugins here run inside the
registry, so writes by the dev cluster's own controllers (a ReplicaSet making
pods) are admitted like a client's; a write made through the REST API carries
who made it in a context variable, which the webhook dispatcher also uses to
run the registry's plugins in the phases its own calls fit between.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kiln.devcluster import (
    admission,
    controllers,
    errors,
    identity,
    kinds,
    limitranges,
    policies,
    quota,
    registry,
    selectors,
    store,
)

Object = dict[str, Any]

ENABLED = (
    "NamespaceLifecycle",
    "LimitRanger",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook",
    "ResourceQuota",
)
"""The admission plugins the dev cluster runs, in kube-apiserver's order."""

POLICIES = "validatingadmissionpolicies.admissionregistration.k8s.io"
BINDINGS = "validatingadmissionpolicybindings.admissionregistration.k8s.io"
RESOURCE_QUOTA = "resourcequotas"
LIMIT_RANGE = "limitranges"
CONTROLLER_MANAGER = identity.UserInfo("system:kube-controller-manager", (identity.AUTHENTICATED,))

WRITE = "write"
"""The one pass of a write no webhook applies to: every plugin runs."""
MUTATING_PREVIEW = "mutating-preview"
"""The dry run that makes the object mutating webhooks see: no validating plugin runs."""
VALIDATING_PREVIEW = "validating-preview"
"""The dry run before validating webhooks: policies run, quota waits for the real write."""
AFTER_WEBHOOKS = "after-webhooks"
"""The real write after the webhooks: only quota is left, so it is charged without a pause."""


@dataclass
class Context:
    """One REST request being admitted: who makes it, and what the client is told besides the answer."""

    user: identity.UserInfo
    resource_key: str
    dry_run: bool = False
    phase: str = WRITE
    warnings: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)


_CURRENT: contextvars.ContextVar[Context | None] = contextvars.ContextVar("kiln_devcluster_admission", default=None)


def current() -> Context | None:
    return _CURRENT.get()


@contextlib.contextmanager
def requesting(user: identity.UserInfo, resource_key: str, dry_run: bool) -> Iterator[Context]:
    context = Context(user, resource_key, dry_run)
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    context = current()
    if context is None:
        yield
        return
    before, context.phase = context.phase, name
    try:
        yield
    finally:
        context.phase = before


def _context_for(rt: kinds.ResourceType) -> Context | None:
    """The request's context, if this write is the request's own (not one it caused, like a namespace's
    default ServiceAccount)."""
    context = current()
    return context if context is not None and context.resource_key == rt.key else None


def _phase(rt: kinds.ResourceType) -> str:
    context = _context_for(rt)
    return context.phase if context is not None else WRITE


def admission_request(
    cluster: registry.Registry,
    rt: kinds.ResourceType,
    obj: Object | None,
    old: Object | None,
    *,
    operation: str,
    subresource: str = "",
) -> admission.Request:
    context = _context_for(rt)
    metadata = (obj or old or {}).get("metadata") or {}
    namespace = metadata.get("namespace", "") if rt.namespaced else ""
    owner = cluster.store.get("namespaces", "", namespace) if namespace else None
    return admission.Request(
        operation=operation,
        group=rt.group,
        version=rt.version,
        resource=rt.plural,
        kind=rt.kind,
        namespace=namespace,
        name=metadata.get("name", ""),
        user=context.user if context is not None else CONTROLLER_MANAGER,
        namespaced=rt.namespaced,
        subresource=subresource,
        dry_run=context.dry_run if context is not None else False,
        uid=metadata.get("uid", ""),
        namespace_labels=dict(((owner or {}).get("metadata") or {}).get("labels") or {}),
    )


# mutating


_WEBHOOK_DEFAULTS = {"failurePolicy": "Fail", "matchPolicy": "Equivalent", "timeoutSeconds": 10,
                     "namespaceSelector": {}, "objectSelector": {}}  # fmt: skip


def default_configuration(cluster: registry.Registry, rt: kinds.ResourceType, obj: Object, old: Object | None) -> None:
    """The API's defaults for policies and webhook configurations."""
    if rt.group != "admissionregistration.k8s.io":
        return
    spec = obj.get("spec") or {}
    if rt.kind == "ValidatingAdmissionPolicy":
        spec.setdefault("failurePolicy", admission.FAIL)
        constraints = spec.setdefault("matchConstraints", {})
        constraints.setdefault("matchPolicy", "Equivalent")
        constraints.setdefault("namespaceSelector", {})
        constraints.setdefault("objectSelector", {})
    elif rt.kind.endswith("WebhookConfiguration"):
        for webhook in obj.get("webhooks") or []:
            for key, value in _WEBHOOK_DEFAULTS.items():
                webhook.setdefault(key, value)
            if rt.kind.startswith("Mutating"):
                webhook.setdefault("reinvocationPolicy", "Never")
            for rule in webhook.get("rules") or []:
                rule.setdefault("scope", "*")


def limit_ranger(cluster: registry.Registry, rt: kinds.ResourceType, obj: Object, old: Object | None) -> None:
    if rt.key != "pods" or old is not None:
        return
    ranges = cluster.store.list(LIMIT_RANGE, obj["metadata"].get("namespace", ""))
    if ranges:
        limitranges.apply_defaults(ranges, obj)


# validating


def limit_bounds(cluster: registry.Registry, rt: kinds.ResourceType, obj: Object, old: Object | None) -> None:
    if rt.key != "pods" or old is not None or _phase(rt) == MUTATING_PREVIEW:
        return
    ranges = cluster.store.list(LIMIT_RANGE, obj["metadata"].get("namespace", ""))
    found = limitranges.violations(ranges, obj) if ranges else []
    if found:
        why = found[0] if len(found) == 1 else "[" + ", ".join(found) + "]"
        raise errors.forbidden(rt.plural, rt.group, obj["metadata"]["name"], why)


def validating_policies(cluster: registry.Registry, rt: kinds.ResourceType, obj: Object,
                        old: Object | None) -> None:  # fmt: skip
    if _phase(rt) in (MUTATING_PREVIEW, AFTER_WEBHOOKS):
        return
    _apply_policies(cluster, rt, obj, old, admission.UPDATE if old is not None else admission.CREATE)


def validate_deletion(cluster: registry.Registry, rt: kinds.ResourceType, old: Object) -> None:
    """The policies on a DELETE: `object` is null, `oldObject` the object being deleted."""
    _apply_policies(cluster, rt, None, old, admission.DELETE)


def _apply_policies(cluster: registry.Registry, rt: kinds.ResourceType, obj: Object | None, old: Object | None,
                    operation: str) -> None:  # fmt: skip
    bindings = cluster.store.list(BINDINGS)
    if not bindings:
        return
    request = admission_request(cluster, rt, obj, old, operation=operation)
    failures: list[policies.Failure] = []
    for binding in bindings:
        policy = cluster.store.get(POLICIES, "", (binding.get("spec") or {}).get("policyName", ""))
        if policy is None or not policies.binding_matches(policy, binding, request, obj, old):
            continue
        found = _params(cluster, policy, binding, request)
        if found is None:
            failures += policies.missing_params(policy, binding)
            continue
        for params in found:
            failures += policies.evaluate(policy, binding, request, obj, old, params=params)
    _enforce(rt, obj or old or {}, policies.verdict(failures))


def _enforce(rt: kinds.ResourceType, obj: Object, verdict: policies.Verdict) -> None:
    context = _context_for(rt)
    if context is not None:
        context.warnings += verdict.warnings
        context.annotations.update(verdict.audit_annotations)
    denied = verdict.denied
    if denied is None:
        return
    name = obj["metadata"].get("name", "")
    refusal = errors.forbidden(rt.plural, rt.group, name, denied.denial)
    code = {"Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413}.get(denied.reason, 422)
    details = {**(refusal.details or {}), "causes": [{"message": denied.denial}]}
    raise errors.ApiError(code, denied.reason, refusal.message, details)


def _params(cluster: registry.Registry, policy: Object, binding: Object,
            request: admission.Request) -> list[Object | None] | None:  # fmt: skip
    """The parameter objects to evaluate against ([None] for a policy without paramKind); None if
    they are not found."""
    kind = (policy.get("spec") or {}).get("paramKind")
    ref = policies.param_ref(binding)
    if not kind:
        return [None]
    if ref is None:
        return None
    resource = next(
        (r for r in cluster.types.all() if r.api_version == kind.get("apiVersion") and r.kind == kind.get("kind")),
        None,
    )
    if resource is None:
        return None
    namespace = (ref.get("namespace") or request.namespace) if resource.namespaced else ""
    if ref.get("name"):
        found = cluster.store.get(resource.key, namespace, ref["name"])
        return [found] if found is not None else None
    selector = ref.get("selector")
    if selector is None:
        return None
    selected: list[Object | None] = [
        obj
        for obj in cluster.store.list(resource.key, namespace if resource.namespaced else None)
        if selectors.selector_matches(selector, (obj["metadata"].get("labels") or {}))
    ]
    return selected or None


def resource_quota(
    cluster: registry.Registry, rt: kinds.ResourceType, obj: Object, old: Object | None, *, usages: quota.Usages
) -> None:
    """Refuse a create that would take a namespace over one of its quotas."""
    if old is not None or not rt.namespaced or _phase(rt) in (MUTATING_PREVIEW, VALIDATING_PREVIEW):
        return
    namespace = obj["metadata"].get("namespace", "")
    quotas = cluster.store.list(RESOURCE_QUOTA, namespace)
    if not quotas:
        return
    requested = quota.object_usage(rt.plural, rt.group, obj)
    for limit in quotas:
        why = quota.unspecified(limit, obj) if rt.key == "pods" else None
        if why is None and set(requested) & set(quota.hard(limit)):
            why = quota.exceeded(limit, namespace_usage(cluster, limit, namespace, usages), requested)
        if why:
            raise errors.forbidden(rt.plural, rt.group, obj["metadata"]["name"], why)


def _counted_keys(limit: Object) -> set[str]:
    """The stored resources whose objects a quota's limits count."""
    keys = set()
    for name in quota.hard(limit):
        if name.startswith("count/"):
            keys.add(name.removeprefix("count/"))
        elif name in ("services", "configmaps", "secrets", "persistentvolumeclaims", "resourcequotas"):
            keys.add(name)
        elif name == "requests.storage":
            keys.add("persistentvolumeclaims")
        else:
            keys.add("pods")
    return keys


def namespace_usage(cluster: registry.Registry, limit: Object, namespace: str, usages: quota.Usages) -> quota.Usage:
    counted = []
    for key in _counted_keys(limit):
        resource = cluster.type_for_key(key)
        if resource is None:
            continue
        counted += usages.of(resource.plural, resource.group, namespace, cluster.store.list(key, namespace))
    return quota.used(limit, counted)


def install(cluster: registry.Registry) -> quota.Usages:
    """The plugins, in their order; the usages quota admission keeps, for the quota controller to share."""
    usages = quota.Usages()
    cluster.admission.extend([default_configuration, limit_ranger])
    cluster.validating.extend([limit_bounds, validating_policies, functools.partial(resource_quota, usages=usages)])
    return usages


class QuotaController(controllers.Controller):
    """status.hard and status.used of every ResourceQuota, recomputed as objects come and go."""

    name = "resourcequota-controller"
    # Each reconcile adds up the whole namespace: a burst of pod writes is counted once, as
    # kube-controller-manager's quota controller counts changes in batches.
    debounce_seconds = 0.05
    busy_share = 0.1

    def __init__(self, cluster: registry.Registry, usages: quota.Usages) -> None:
        super().__init__(cluster)
        self._usages = usages
        self._counting: dict[str, dict[str, set[str]]] = {}
        """Namespace to the name of each of its quotas to the stored resources it counts, kept from
        the quotas' own events: every write in the cluster asks which quotas it concerns."""
        for limit in self.client.list(RESOURCE_QUOTA):
            self._count_for(limit, store.ADDED)

    def initial_keys(self) -> Iterable[controllers.Key]:
        return self.keys_of(RESOURCE_QUOTA)

    def keys_for(self, event: store.Event) -> Iterable[controllers.Key]:
        if event.resource == RESOURCE_QUOTA:
            self._count_for(event.object, event.type)
            return [controllers.object_key(event)]
        namespace = event.object.get("metadata", {}).get("namespace")
        quotas = self._counting.get(namespace or "", {})
        return [(namespace, name) for name, counted in quotas.items() if event.resource in counted]

    def _count_for(self, limit: Object, event_type: str) -> None:
        namespace, name = store.key_of(limit)
        quotas = self._counting.setdefault(namespace, {})
        if event_type == store.DELETED:
            quotas.pop(name, None)
        else:
            quotas[name] = _counted_keys(limit)

    async def reconcile(self, key: controllers.Key) -> float | None:
        namespace, name = key
        limit = self.client.get(RESOURCE_QUOTA, namespace, name)
        if limit is None:
            return None
        wanted = quota.status(limit, namespace_usage(self.client.registry, limit, namespace, self._usages))
        self.client.update_status(RESOURCE_QUOTA, limit, wanted)
        return None
