"""Deployment and ReplicaSet controllers, after kube-controller-manager's.

A Deployment owns one ReplicaSet per pod template (named by the template's
hash, numbered by the `deployment.kubernetes.io/revision` annotation) and
moves replicas from the old ones to the new one within maxSurge and
maxUnavailable (RollingUpdate) or all at once after the old pods are gone
(Recreate). A ReplicaSet keeps its count of pods and reports how many are
ready and available.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any

from kiln.devcluster import controllers, objects, scheduling, selectors, store
from kiln.devcluster.controllers import DEPLOYMENT, POD, REPLICA_SET, Key

Object = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
TEMPLATE_HASH = "pod-template-hash"


def template_hash(template: Object) -> str:
    """A short, stable name for a pod template, as the pod-template-hash label."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    number = int(digest[:16], 16)
    return "".join(alphabet[(number >> (5 * i)) % len(alphabet)] for i in range(10))


def scaled_value(value: int | str | None, total: int, round_up: bool) -> int:
    """An IntOrString such as maxSurge: an absolute number or a percentage of `total`."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        share = int(text[:-1]) * total / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(text)


def surge_and_unavailable(deployment: Object) -> tuple[int, int]:
    spec = deployment["spec"]
    replicas = int(spec.get("replicas", 1))
    if (spec.get("strategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
        return 0, 0  # Recreate: availability is judged against every replica
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = scaled_value(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # the API forbids both zero; kube-controller-manager falls back to one
    return surge, min(unavailable, replicas)


def _spec_replicas(replica_set: Object) -> int:
    return int(replica_set["spec"].get("replicas", 0))


def _status_count(replica_set: Object, field: str) -> int:
    return int((replica_set.get("status") or {}).get(field, 0))


def _revision(replica_set: Object) -> int:
    return int((replica_set["metadata"].get("annotations") or {}).get(REVISION, "0"))


def _template_without_hash(template: Object) -> Object:
    stripped: Object = json.loads(json.dumps(template))
    labels = stripped.get("metadata", {}).get("labels") or {}
    labels.pop(TEMPLATE_HASH, None)
    return stripped


def rolling_targets(deployment: Object, new: Object, olds: list[Object]) -> dict[str, int]:
    """The replica count each ReplicaSet should have now, by name (RollingUpdate).

    The same arithmetic as kube-controller-manager: scale the new set up to
    replicas + maxSurge pods in total, then scale old sets down while at least
    replicas - maxUnavailable pods stay available; unavailable old pods go first.
    """
    replicas = int(deployment["spec"].get("replicas", 1))
    surge, max_unavailable = surge_and_unavailable(deployment)
    targets = {rs["metadata"]["name"]: _spec_replicas(rs) for rs in [new, *olds]}
    name = new["metadata"]["name"]
    total = sum(targets.values())
    if targets[name] < replicas and total < replicas + surge:
        targets[name] = min(targets[name] + replicas + surge - total, replicas)
    elif targets[name] > replicas:
        targets[name] = replicas
    min_available = replicas - max_unavailable
    new_unavailable = targets[name] - _status_count(new, "availableReplicas")
    all_pods = sum(targets.values())
    room = all_pods - min_available - new_unavailable
    oldest_first = sorted(olds, key=lambda rs: (rs["metadata"].get("creationTimestamp", ""), rs["metadata"]["name"]))
    for rs in oldest_first:  # unhealthy old pods first: removing them costs no availability
        if room <= 0:
            break
        rs_name = rs["metadata"]["name"]
        unhealthy = targets[rs_name] - _status_count(rs, "availableReplicas")
        cut = min(room, max(unhealthy, 0))
        targets[rs_name] -= cut
        room -= cut
    available = sum(_status_count(rs, "availableReplicas") for rs in [new, *olds])
    budget = min(available - min_available, room)
    for rs in oldest_first:
        if budget <= 0:
            break
        rs_name = rs["metadata"]["name"]
        cut = min(targets[rs_name], budget)
        targets[rs_name] -= cut
        budget -= cut
    return targets


def deployment_status(
    deployment: Object, new: Object | None, sets: list[Object], previous: Object, now: datetime.datetime
) -> Object:
    """Counts over all ReplicaSets and the Available and Progressing conditions."""
    spec = deployment["spec"]
    replicas = int(spec.get("replicas", 1))
    _, max_unavailable = surge_and_unavailable(deployment)
    available = sum(_status_count(rs, "availableReplicas") for rs in sets)
    status: Object = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": sum(_status_count(rs, "replicas") for rs in sets),
        "updatedReplicas": _status_count(new, "replicas") if new else 0,
        "readyReplicas": sum(_status_count(rs, "readyReplicas") for rs in sets),
        "availableReplicas": available,
        "unavailableReplicas": max(sum(_spec_replicas(rs) for rs in sets) - available, 0),
    }
    status = {key: value for key, value in status.items() if value or key == "observedGeneration"}
    stamp = objects.format_time(now)
    conditions = list(previous.get("conditions") or [])
    if available >= replicas - max_unavailable:
        conditions = objects.set_condition(
            conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            stamp,
            lastUpdateTime=stamp,
        )
    else:
        conditions = objects.set_condition(
            conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            stamp,
            lastUpdateTime=stamp,
        )
    conditions = _progressing(deployment, new, status, previous=previous, conditions=conditions, now=now)
    status["conditions"] = conditions
    if previous.get("collisionCount"):
        status["collisionCount"] = previous["collisionCount"]
    return status


def _has_old_pods(status: Object) -> bool:
    return bool(status.get("replicas", 0) > status.get("updatedReplicas", 0))


def _progressing(
    deployment: Object,
    new: Object | None,
    status: Object,
    *,
    previous: Object,
    conditions: list[Object],
    now: datetime.datetime,
) -> list[Object]:
    stamp = objects.format_time(now)
    spec = deployment["spec"]
    replicas = int(spec.get("replicas", 1))
    name = new["metadata"]["name"] if new else ""
    current = controllers.condition(deployment, "Progressing")
    if spec.get("paused"):
        return objects.set_condition(
            conditions,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            stamp,
            lastUpdateTime=stamp,
        )
    complete = (
        status.get("updatedReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
    )
    if complete or (current and current.get("reason") == "NewReplicaSetAvailable" and not _has_old_pods(status)):
        # complete, or merely scaled: scaling is not a rollout and does not restart the progress deadline
        if current and current.get("reason") == "NewReplicaSetAvailable":
            return conditions
        return objects.set_condition(
            conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{name}" has successfully progressed.',
            stamp,
            lastUpdateTime=stamp,
        )
    gained = ("updatedReplicas", "readyReplicas", "availableReplicas")
    old_before = previous.get("replicas", 0) - previous.get("updatedReplicas", 0)
    moved = any(status.get(key, 0) > previous.get(key, 0) for key in gained) or (
        status.get("replicas", 0) - status.get("updatedReplicas", 0) < old_before
    )  # only gains are progress, as kube-controller-manager counts it
    if current is None or moved or current.get("reason") in ("NewReplicaSetAvailable", "DeploymentPaused"):
        return objects.set_condition(
            conditions,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            f'ReplicaSet "{name}" is progressing.',
            stamp,
            lastUpdateTime=stamp,
        )
    deadline = spec.get("progressDeadlineSeconds")
    last_update = objects.parse_time(current.get("lastUpdateTime") or current.get("lastTransitionTime") or stamp)
    if deadline is not None and (now - last_update).total_seconds() > int(deadline):
        return objects.set_condition(
            conditions,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            f'ReplicaSet "{name}" has timed out progressing.',
            stamp,
            lastUpdateTime=stamp,
        )
    return conditions


class DeploymentController(controllers.Controller):
    name = "deployment-controller"

    def initial_keys(self) -> Iterable[Key]:
        return self.keys_of(DEPLOYMENT)

    def keys_for(self, event: store.Event) -> Iterable[Key]:
        if event.resource == DEPLOYMENT:
            return [controllers.object_key(event)]
        if event.resource == REPLICA_SET:
            owner = controllers.controller_named(event.object, "Deployment")
            if owner:
                return [(event.object["metadata"].get("namespace", ""), owner)]
        if event.resource == POD and (event.type == store.DELETED or scheduling.is_terminal(event.object)):
            # Recreate scales the new ReplicaSet up once the old pods are gone or finished: their
            # ReplicaSet's count of active pods reached 0 when they started terminating, before.
            return self._deployment_of_pod(event.object)
        return ()

    def _deployment_of_pod(self, pod: Object) -> list[Key]:
        namespace = pod["metadata"].get("namespace", "")
        replica_set_name = controllers.controller_named(pod, "ReplicaSet")
        replica_set = self.client.get(REPLICA_SET, namespace, replica_set_name) if replica_set_name else None
        owner = controllers.controller_named(replica_set, "Deployment") if replica_set else None
        return [(namespace, owner)] if owner else []

    async def reconcile(self, key: Key) -> float | None:
        namespace, name = key
        deployment = self.client.get(DEPLOYMENT, namespace, name)
        if deployment is None or deployment["metadata"].get("deletionTimestamp"):
            return None
        sets = controllers.owned_by(self.client.list(REPLICA_SET, namespace), deployment)
        template = deployment["spec"]["template"]
        new = next((rs for rs in sets if _template_without_hash(rs["spec"]["template"]) == template), None)
        spec = deployment["spec"]
        if new is None and not spec.get("paused"):
            new, deployment = self._create_replica_set(deployment, sets)
            sets.append(new)
        olds = [rs for rs in sets if rs is not new]
        if not spec.get("paused") and new is not None:
            self._scale(deployment, new, olds)
            self._cleanup(deployment, olds)
        sets = controllers.owned_by(self.client.list(REPLICA_SET, namespace), deployment)
        new = next((rs for rs in sets if new and rs["metadata"]["uid"] == new["metadata"]["uid"]), None)
        now = datetime.datetime.now(datetime.UTC)
        status = deployment_status(deployment, new, sets, deployment.get("status") or {}, now)
        self.client.update_status(DEPLOYMENT, deployment, status)
        progressing = controllers.condition({"status": status}, "Progressing")
        if progressing and progressing.get("reason") == "ReplicaSetUpdated" and spec.get("progressDeadlineSeconds"):
            return float(spec["progressDeadlineSeconds"]) + 1
        return None

    def _create_replica_set(self, deployment: Object, sets: list[Object]) -> tuple[Object, Object]:
        """The new ReplicaSet, and the Deployment as stored with its revision (its status is written
        over that, not over the version read before)."""
        metadata = deployment["metadata"]
        template = controllers.copied(deployment["spec"]["template"])
        hashed = template_hash(template)
        template.setdefault("metadata", {}).setdefault("labels", {})[TEMPLATE_HASH] = hashed
        selector = controllers.copied(deployment["spec"]["selector"])
        selector.setdefault("matchLabels", {})[TEMPLATE_HASH] = hashed
        revision = max((_revision(rs) for rs in sets), default=0) + 1
        surge, _ = surge_and_unavailable(deployment)
        replicas = int(deployment["spec"].get("replicas", 1))
        body = {
            "metadata": {
                "name": f"{metadata['name']}-{hashed}",
                "namespace": metadata.get("namespace"),
                "labels": {**(template["metadata"].get("labels") or {})},
                "annotations": {
                    REVISION: str(revision),
                    DESIRED_REPLICAS: str(replicas),
                    MAX_REPLICAS: str(replicas + surge),
                },
                "ownerReferences": [controllers.owner_reference(deployment)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": deployment["spec"].get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        created = self.client.create(REPLICA_SET, metadata.get("namespace", ""), body)
        self.client.event(
            deployment, "Normal", "ScalingReplicaSet", f"Created new replica set {created['metadata']['name']}"
        )
        annotations = {**(metadata.get("annotations") or {}), REVISION: str(revision)}
        if annotations != metadata.get("annotations"):
            deployment = self.client.update(
                DEPLOYMENT, {**deployment, "metadata": {**metadata, "annotations": annotations}}
            )
        return created, deployment

    def _scale(self, deployment: Object, new: Object, olds: list[Object]) -> None:
        replicas = int(deployment["spec"].get("replicas", 1))
        strategy = (deployment["spec"].get("strategy") or {}).get("type", "RollingUpdate")
        if strategy == "Recreate":
            targets = {rs["metadata"]["name"]: 0 for rs in olds}
            old_pods = [
                pod
                for pod in self.client.list(POD, deployment["metadata"].get("namespace"))
                if not scheduling.is_terminal(pod)
                and any(controllers.controller_of(pod) == rs["metadata"]["uid"] for rs in olds)
            ]
            targets[new["metadata"]["name"]] = replicas if not old_pods else 0
        else:
            targets = rolling_targets(deployment, new, olds)
        for rs in [new, *olds]:
            wanted = targets[rs["metadata"]["name"]]
            if wanted != _spec_replicas(rs):
                self._scale_replica_set(deployment, rs, wanted)

    def _scale_replica_set(self, deployment: Object, rs: Object, replicas: int) -> None:
        before = _spec_replicas(rs)
        surge, _ = surge_and_unavailable(deployment)
        wanted = int(deployment["spec"].get("replicas", 1))
        annotations = {
            **(rs["metadata"].get("annotations") or {}),
            DESIRED_REPLICAS: str(wanted),
            MAX_REPLICAS: str(wanted + surge),
        }
        updated = {
            **rs,
            "metadata": {**rs["metadata"], "annotations": annotations},
            "spec": {**rs["spec"], "replicas": replicas},
        }
        self.client.update(REPLICA_SET, updated)
        direction = "up" if replicas > before else "down"
        self.client.event(
            deployment,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {direction} replica set {rs['metadata']['name']} from {before} to {replicas}",
        )

    def _cleanup(self, deployment: Object, olds: list[Object]) -> None:
        limit = deployment["spec"].get("revisionHistoryLimit", 10)
        idle = sorted(
            (rs for rs in olds if _spec_replicas(rs) == 0 and _status_count(rs, "replicas") == 0), key=_revision
        )
        for rs in idle[: max(len(idle) - int(limit), 0)]:
            self.client.delete(REPLICA_SET, rs["metadata"].get("namespace", ""), rs["metadata"]["name"])


def _pod_rank(pod: Object) -> tuple[int, int, str]:
    """Which pods a shrinking ReplicaSet deletes first: unscheduled, pending, not ready, then the youngest."""
    scheduled = 1 if pod["spec"].get("nodeName") else 0
    running = 1 if pod.get("status", {}).get("phase") == "Running" else 0
    ready = 1 if controllers.is_pod_ready(pod) else 0
    created = pod["metadata"].get("creationTimestamp", "")
    return (scheduled + running + ready, -_timestamp_order(created), pod["metadata"]["name"])


def _timestamp_order(stamp: str) -> int:
    return int(objects.parse_time(stamp).timestamp()) if stamp else 0


def available_since(pod: Object, min_ready_seconds: int, now: datetime.datetime) -> float | None:
    """Seconds until a ready pod counts as available (0: it does), or None when it is not ready."""
    if not controllers.is_pod_ready(pod):
        return None
    if min_ready_seconds <= 0:
        return 0.0
    ready = controllers.condition(pod, "Ready") or {}
    since = objects.parse_time(ready.get("lastTransitionTime") or objects.now())
    return max(min_ready_seconds - (now - since).total_seconds(), 0.0)


def is_active(pod: Object) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and not scheduling.is_terminal(pod)


def pod_from_template(owner: Object, template: Object, generate_name: str) -> Object:
    """A pod as a workload controller creates it from its template, owned by the controller."""
    metadata = template.get("metadata") or {}
    return {
        "metadata": {
            "generateName": generate_name,
            "namespace": owner["metadata"].get("namespace"),
            "labels": dict(metadata.get("labels") or {}),
            "annotations": dict(metadata.get("annotations") or {}),
            "ownerReferences": [controllers.owner_reference(owner)],
        },
        "spec": controllers.copied(template.get("spec") or {}),
    }


class ReplicaSetController(controllers.Controller):
    name = "replicaset-controller"

    def initial_keys(self) -> Iterable[Key]:
        return self.keys_of(REPLICA_SET)

    def keys_for(self, event: store.Event) -> Iterable[Key]:
        if event.resource == REPLICA_SET:
            return [controllers.object_key(event)]
        if event.resource == POD:
            owner = controllers.controller_named(event.object, "ReplicaSet")
            if owner:
                return [(event.object["metadata"].get("namespace", ""), owner)]
        return ()

    async def reconcile(self, key: Key) -> float | None:
        namespace, name = key
        rs = self.client.get(REPLICA_SET, namespace, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return None
        pods = self._adopt(rs, self.client.list(POD, namespace))
        active = [pod for pod in pods if is_active(pod)]
        wanted = _spec_replicas(rs)
        if len(active) < wanted:
            for _ in range(wanted - len(active)):
                body = pod_from_template(rs, rs["spec"]["template"], f"{name}-")
                created = self.client.create(POD, namespace, body)
                self.client.event(rs, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        elif len(active) > wanted:
            for pod in sorted(active, key=_pod_rank)[: len(active) - wanted]:
                self.client.delete(POD, namespace, pod["metadata"]["name"])
                self.client.event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
        pods = controllers.owned_by(self.client.list(POD, namespace), rs)
        now = datetime.datetime.now(datetime.UTC)
        min_ready = int(rs["spec"].get("minReadySeconds") or 0)
        waits = [available_since(pod, min_ready, now) for pod in pods if is_active(pod)]
        selector = rs["spec"].get("selector")
        status: Object = {
            "replicas": len([pod for pod in pods if is_active(pod)]),
            "fullyLabeledReplicas": len(
                [
                    p
                    for p in pods
                    if is_active(p) and selectors.selector_matches(selector, p["metadata"].get("labels") or {})
                ]
            ),
            "readyReplicas": len([wait for wait in waits if wait is not None]),
            "availableReplicas": len([wait for wait in waits if wait == 0.0]),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        status = {key: value for key, value in status.items() if value or key in ("replicas", "observedGeneration")}
        self.client.update_status(REPLICA_SET, rs, status)
        pending = [wait for wait in waits if wait]
        return min(pending) if pending else None

    def _adopt(self, rs: Object, pods: list[Object]) -> list[Object]:
        """Its own pods, plus orphans its selector matches (adopted, as the real controller does)."""
        selector = rs["spec"].get("selector")
        owned = []
        for pod in pods:
            if controllers.controller_of(pod) == rs["metadata"]["uid"]:
                owned.append(pod)
            elif (
                controllers.controller_of(pod) is None
                and is_active(pod)
                and selectors.selector_matches(selector, pod["metadata"].get("labels") or {})
            ):
                refs = [*(pod["metadata"].get("ownerReferences") or []), controllers.owner_reference(rs)]
                owned.append(self.client.update(POD, {**pod, "metadata": {**pod["metadata"], "ownerReferences": refs}}))
        return owned
