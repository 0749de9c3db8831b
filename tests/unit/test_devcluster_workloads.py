"""The dev cluster's Deployment and Job arithmetic matches kube-controller-manager's.

Pure functions with injected time: the pod-template hash, maxSurge/maxUnavailable
resolution, the replica targets of each rolling-update step (walked as a whole
rollout, checking the bounds at every step), the Deployment status counts and its
Available/Progressing conditions, minReadySeconds, Indexed Jobs' completedIndexes
and the Job selector admission.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any

import pytest

from kiln.devcluster import jobs, kinds, registry, store, workloads

Object = dict[str, Any]
NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
HASH_ALPHABET = set("bcdfghjklmnpqrstvwxz2456789")


def ago(seconds: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment(
    replicas: int | None = 3,
    max_surge: int | str | None = None,
    max_unavailable: int | str | None = None,
    *,
    strategy: str = "RollingUpdate",
    status: Object | None = None,
    **spec: Any,
) -> Object:
    body: Object = {"metadata": {"name": "web", "namespace": "default", "generation": 1}, "spec": dict(spec)}
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    rolling: Object = {}
    if max_surge is not None:
        rolling["maxSurge"] = max_surge
    if max_unavailable is not None:
        rolling["maxUnavailable"] = max_unavailable
    body["spec"]["strategy"] = {"type": strategy, **({"rollingUpdate": rolling} if rolling else {})}
    if status is not None:
        body["status"] = status
    return body


def replica_set(
    name: str,
    spec: int,
    *,
    available: int = 0,
    ready: int | None = None,
    replicas: int | None = None,
    created: str = "2024-05-01T10:00:00Z",
) -> Object:
    return {
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": {"replicas": spec},
        "status": {
            "replicas": spec if replicas is None else replicas,
            "readyReplicas": available if ready is None else ready,
            "availableReplicas": available,
        },
    }


# The pod-template hash


TEMPLATE: Object = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]},
}


def test_template_hash_is_a_stable_name() -> None:
    reordered = {
        "spec": {"containers": [{"image": "registry.example/web:1", "name": "web"}]},
        "metadata": {"labels": {"app": "web"}},
    }

    hashed = workloads.template_hash(TEMPLATE)

    assert hashed == workloads.template_hash(reordered)
    assert len(hashed) == 10
    assert set(hashed) <= HASH_ALPHABET
    # ReplicaSets are named by it: a restarted dev cluster must compute the same name from the same template
    assert hashed == "9r6fvjc6rn"


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(
            {**TEMPLATE, "spec": {"containers": [{"name": "web", "image": "registry.example/web:2"}]}}, id="image"
        ),
        pytest.param({**TEMPLATE, "metadata": {"labels": {"app": "web", "track": "canary"}}}, id="label"),
        pytest.param({**TEMPLATE, "spec": {**TEMPLATE["spec"], "nodeSelector": {"zone": "a"}}}, id="pod-spec-field"),
    ],
)
def test_template_hash_differs_per_template(changed: Object) -> None:
    assert workloads.template_hash(changed) != workloads.template_hash(TEMPLATE)


# maxSurge and maxUnavailable


@pytest.mark.parametrize(
    ("value", "total", "round_up", "expected"),
    [
        pytest.param(None, 10, True, 0, id="unset"),
        pytest.param(3, 10, True, 3, id="absolute"),
        pytest.param("5", 10, False, 5, id="absolute-as-string"),
        pytest.param("25%", 10, True, 3, id="percent-rounded-up"),
        pytest.param("25%", 10, False, 2, id="percent-rounded-down"),
        pytest.param("50%", 3, True, 2, id="half-of-three-up"),
        pytest.param("50%", 3, False, 1, id="half-of-three-down"),
        pytest.param("20%", 10, True, 2, id="exact-percent-up"),
        pytest.param("20%", 10, False, 2, id="exact-percent-down"),
        pytest.param("0%", 10, True, 0, id="zero-percent"),
        pytest.param("100%", 4, False, 4, id="all"),
    ],
)
def test_scaled_value(value: int | str | None, total: int, round_up: bool, expected: int) -> None:
    assert workloads.scaled_value(value, total, round_up) == expected


@pytest.mark.parametrize(
    ("the_deployment", "expected"),
    [
        pytest.param(deployment(10), (3, 2), id="defaults-25-percent-of-10"),
        pytest.param(deployment(4), (1, 1), id="defaults-25-percent-of-4"),
        pytest.param(deployment(1), (1, 0), id="defaults-of-1-surge-up-unavailable-down"),
        pytest.param(deployment(None), (1, 0), id="replicas-default-to-1"),
        pytest.param(deployment(3, 1, 1), (1, 1), id="absolute"),
        pytest.param(deployment(3, "50%", "50%"), (2, 1), id="percentages"),
        pytest.param(deployment(5, 0, "10%"), (0, 1), id="both-resolve-to-zero-unavailable-becomes-1"),
        pytest.param(deployment(2, None, 5), (1, 2), id="unavailable-capped-at-replicas"),
        pytest.param(deployment(0), (0, 0), id="zero-replicas"),
    ],
)
def test_surge_and_unavailable(the_deployment: Object, expected: tuple[int, int]) -> None:
    assert workloads.surge_and_unavailable(the_deployment) == expected


# One rolling-update step


@pytest.mark.parametrize(
    ("the_deployment", "new", "olds", "expected"),
    [
        pytest.param(deployment(3), replica_set("new", 0), [], {"new": 3}, id="fresh-deployment-scales-straight-up"),
        pytest.param(
            deployment(10),
            replica_set("new", 0),
            [replica_set("old", 10, available=10)],
            {"new": 3, "old": 8},
            id="first-step-of-25-percent",
        ),
        pytest.param(
            deployment(4, 0, 1),
            replica_set("new", 0),
            [replica_set("old", 4, available=4)],
            {"new": 0, "old": 3},
            id="no-surge-makes-room-first",
        ),
        pytest.param(
            deployment(3, 1, 0),
            replica_set("new", 1, available=0),
            [replica_set("old", 3, available=3)],
            {"new": 1, "old": 3},
            id="waits-for-new-pods-to-be-available",
        ),
        pytest.param(
            deployment(3, 1, 0),
            replica_set("new", 3, available=3),
            [replica_set("old", 1, available=1)],
            {"new": 3, "old": 0},
            id="last-old-pod-goes",
        ),
        pytest.param(
            deployment(4, 1, 0),
            replica_set("new", 1, available=1),
            [replica_set("old", 4, available=2)],
            {"new": 1, "old": 3},
            id="unhealthy-old-pods-go-first",
        ),
        pytest.param(
            deployment(4, 0, 2),
            replica_set("new", 0),
            [
                replica_set("old-b", 2, available=2, created="2024-05-01T10:00:00Z"),
                replica_set("old-a", 2, available=2, created="2024-05-01T09:00:00Z"),
            ],
            {"new": 0, "old-a": 0, "old-b": 2},
            id="oldest-old-set-first",
        ),
        pytest.param(deployment(3), replica_set("new", 5, available=5), [], {"new": 3}, id="new-set-above-replicas"),
    ],
)
def test_rolling_targets(the_deployment: Object, new: Object, olds: list[Object], expected: dict[str, int]) -> None:
    assert workloads.rolling_targets(the_deployment, new, olds) == expected


# A whole rollout, step by step


class Rollout:
    """An old and a new ReplicaSet; each sync applies rolling_targets, then the new pods become available."""

    def __init__(self, the_deployment: Object) -> None:
        self.deployment = the_deployment
        replicas = int(the_deployment["spec"]["replicas"])
        self.spec = {"new": 0, "old": replicas}
        self.available = {"new": 0, "old": replicas}

    def sets(self) -> tuple[Object, list[Object]]:
        new, old = (replica_set(name, self.spec[name], available=self.available[name]) for name in ("new", "old"))
        return new, [old]

    def sync(self) -> None:
        self.spec = workloads.rolling_targets(self.deployment, *self.sets())
        # scaling a set down deletes its pods (unavailable ones first, but these are all available)
        self.available = {name: min(self.available[name], self.spec[name]) for name in self.spec}

    def start_new_pods(self) -> None:
        self.available["new"] = self.spec["new"]

    @property
    def total(self) -> int:
        return sum(self.spec.values())

    @property
    def total_available(self) -> int:
        return sum(self.available.values())


@pytest.mark.parametrize(
    ("replicas", "max_surge", "max_unavailable"),
    [
        pytest.param(3, 1, 1, id="3-surge-1-unavailable-1"),
        pytest.param(3, 1, 0, id="3-surge-only"),
        pytest.param(3, 0, 1, id="3-unavailable-only"),
        pytest.param(10, "25%", "25%", id="10-defaults"),
        pytest.param(1, 1, 0, id="1-surge-only"),
        pytest.param(7, "30%", "10%", id="7-odd-percentages"),
    ],
)
def test_a_rolling_update_stays_within_its_bounds_and_completes(
    replicas: int, max_surge: int | str, max_unavailable: int | str
) -> None:
    rollout = Rollout(deployment(replicas, max_surge, max_unavailable))
    surge, unavailable = workloads.surge_and_unavailable(rollout.deployment)

    for _ in range(2 * replicas + 2):
        rollout.sync()
        assert rollout.total <= replicas + surge
        assert rollout.total_available >= replicas - unavailable
        if rollout.spec == {"new": replicas, "old": 0} and rollout.available["new"] == replicas:
            break
        rollout.start_new_pods()

    assert rollout.spec == {"new": replicas, "old": 0}
    assert rollout.available == {"new": replicas, "old": 0}


def test_a_rollout_of_3_with_surge_1_and_unavailable_1_step_by_step() -> None:
    rollout = Rollout(deployment(3, 1, 1))
    steps = []
    for _ in range(4):
        rollout.sync()
        steps.append((rollout.spec["new"], rollout.spec["old"], rollout.total_available))
        rollout.start_new_pods()

    # (new, old, available right after the sync): one up, one down, never below 2 available
    assert steps == [(1, 2, 2), (2, 1, 2), (3, 0, 2), (3, 0, 3)]


@pytest.mark.parametrize(
    ("max_surge", "max_unavailable", "stuck_at"),
    [
        pytest.param(1, 0, {"new": 1, "old": 3}, id="surge-only-keeps-every-old-pod"),
        pytest.param(1, 1, {"new": 2, "old": 2}, id="gives-up-at-most-max-unavailable"),
    ],
)
def test_a_rollout_whose_new_pods_never_become_available_stops_safely(
    max_surge: int, max_unavailable: int, stuck_at: dict[str, int]
) -> None:
    rollout = Rollout(deployment(3, max_surge, max_unavailable))

    for _ in range(10):
        rollout.sync()
        assert rollout.total <= 3 + max_surge
        assert rollout.available["old"] >= 3 - max_unavailable

    assert rollout.spec == stuck_at


# Deployment status


def test_deployment_status_counts_over_all_replica_sets() -> None:
    the_deployment = deployment(3)
    the_deployment["metadata"]["generation"] = 4
    new = replica_set("web-new", 3, ready=3, available=2)
    old = replica_set("web-old", 1, available=1)

    status = workloads.deployment_status(the_deployment, new, [new, old], {}, NOW)

    counts = {key: value for key, value in status.items() if key != "conditions"}
    assert counts == {
        "observedGeneration": 4,
        "replicas": 4,
        "updatedReplicas": 3,
        "readyReplicas": 4,
        "availableReplicas": 3,
        "unavailableReplicas": 1,
    }


def test_deployment_status_omits_zero_counts_and_never_reports_negative_unavailable() -> None:
    assert set(workloads.deployment_status(deployment(3), None, [], {}, NOW)) == {"observedGeneration", "conditions"}

    shrinking = replica_set("web-new", 2, replicas=3, available=3)
    status = workloads.deployment_status(deployment(2), shrinking, [shrinking], {}, NOW)
    assert "unavailableReplicas" not in status


def condition(status: Object, kind: str) -> Object:
    return next(entry for entry in status["conditions"] if entry["type"] == kind)


@pytest.mark.parametrize(
    ("the_deployment", "available", "expected"),
    [
        pytest.param(deployment(4), 3, "True", id="within-max-unavailable"),
        pytest.param(deployment(4), 2, "False", id="below-min-available"),
        pytest.param(deployment(4, 1, 0), 3, "False", id="max-unavailable-0"),
        pytest.param(deployment(0), 0, "True", id="zero-replicas"),
        # kube-controller-manager's MaxUnavailable is 0 for a Deployment that is not RollingUpdate
        pytest.param(deployment(4, strategy="Recreate"), 3, "False", id="recreate-needs-every-replica"),
        pytest.param(deployment(4, strategy="Recreate"), 4, "True", id="recreate-all-available"),
    ],
)
def test_available_condition(the_deployment: Object, available: int, expected: str) -> None:
    replicas = the_deployment["spec"]["replicas"]
    new = replica_set("web-new", replicas, available=available)

    status = workloads.deployment_status(the_deployment, new, [new], {}, NOW)

    found = condition(status, "Available")
    assert found["status"] == expected
    assert (found["reason"], found["message"]) == (
        ("MinimumReplicasAvailable", "Deployment has minimum availability.")
        if expected == "True"
        else ("MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    )


def progressing(status: str, reason: str, *, updated: str, transitioned: str) -> Object:
    messages = {
        "NewReplicaSetAvailable": 'ReplicaSet "web-new" has successfully progressed.',
        "ReplicaSetUpdated": 'ReplicaSet "web-new" is progressing.',
        "ProgressDeadlineExceeded": 'ReplicaSet "web-new" has timed out progressing.',
        "DeploymentPaused": "Deployment is paused",
    }
    return {
        "type": "Progressing",
        "status": status,
        "reason": reason,
        "message": messages[reason],
        "lastUpdateTime": updated,
        "lastTransitionTime": transitioned,
    }


def counts(replicas: int, updated: int, ready: int, available: int) -> Object:
    return {"replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": available}


STAMP = ago(0)
UPDATING_LONG_AGO = progressing("True", "ReplicaSetUpdated", updated=ago(700), transitioned=ago(900))


@pytest.mark.parametrize(
    ("replicas", "new", "previous", "expected"),
    [
        pytest.param(
            3,
            replica_set("web-new", 3, available=1),
            None,
            progressing("True", "ReplicaSetUpdated", updated=STAMP, transitioned=STAMP),
            id="first-sync",
        ),
        pytest.param(
            3,
            replica_set("web-new", 3, available=3),
            {**counts(3, 3, 2, 2), "conditions": [UPDATING_LONG_AGO]},
            progressing("True", "NewReplicaSetAvailable", updated=STAMP, transitioned=ago(900)),
            id="complete",
        ),
        pytest.param(
            3,
            replica_set("web-new", 3, available=3),
            {
                **counts(3, 3, 3, 3),
                "conditions": [progressing("True", "NewReplicaSetAvailable", updated=ago(50), transitioned=ago(900))],
            },
            progressing("True", "NewReplicaSetAvailable", updated=ago(50), transitioned=ago(900)),
            id="complete-is-left-alone",
        ),
        pytest.param(
            3,
            replica_set("web-new", 3, available=2),
            {**counts(3, 3, 1, 1), "conditions": [UPDATING_LONG_AGO]},
            progressing("True", "ReplicaSetUpdated", updated=STAMP, transitioned=ago(900)),
            id="progress-renews-the-deadline",
        ),
        pytest.param(
            3,
            replica_set("web-new", 3, available=1),
            {
                **counts(3, 3, 1, 1),
                "conditions": [progressing("True", "ReplicaSetUpdated", updated=ago(100), transitioned=ago(900))],
            },
            progressing("True", "ReplicaSetUpdated", updated=ago(100), transitioned=ago(900)),
            id="no-progress-within-the-deadline",
        ),
        pytest.param(
            3,
            replica_set("web-new", 3, available=1),
            {**counts(3, 3, 1, 1), "conditions": [UPDATING_LONG_AGO]},
            progressing("False", "ProgressDeadlineExceeded", updated=STAMP, transitioned=STAMP),
            id="no-progress-past-the-deadline",
        ),
        pytest.param(
            3,
            replica_set("web-new", 3, available=1),
            {
                **counts(3, 3, 1, 1),
                "conditions": [progressing("False", "ProgressDeadlineExceeded", updated=ago(10), transitioned=ago(10))],
            },
            progressing("False", "ProgressDeadlineExceeded", updated=ago(10), transitioned=ago(10)),
            id="timed-out-stays-timed-out",
        ),
        # kube-controller-manager's DeploymentProgressing counts only gains: more updated, ready or
        # available replicas, or fewer old ones; a pod losing readiness does not renew the deadline
        pytest.param(
            3,
            replica_set("web-new", 3, ready=1, available=1),
            {**counts(3, 3, 2, 2), "conditions": [UPDATING_LONG_AGO]},
            progressing("False", "ProgressDeadlineExceeded", updated=STAMP, transitioned=STAMP),
            id="losing-readiness-is-not-progress",
        ),
        # scaling a complete Deployment is no new rollout: syncRolloutStatus skips progress estimation
        # while replicas == updatedReplicas and the condition says NewReplicaSetAvailable
        pytest.param(
            5,
            replica_set("web-new", 5, replicas=5, available=3),
            {
                **counts(3, 3, 3, 3),
                "conditions": [progressing("True", "NewReplicaSetAvailable", updated=ago(50), transitioned=ago(900))],
            },
            progressing("True", "NewReplicaSetAvailable", updated=ago(50), transitioned=ago(900)),
            id="scaling-up-a-complete-deployment-is-not-a-rollout",
        ),
    ],
)
def test_progressing_condition(replicas: int, new: Object, previous: Object | None, expected: Object) -> None:
    the_deployment = deployment(replicas, progressDeadlineSeconds=600, status=previous or {})

    status = workloads.deployment_status(the_deployment, new, [new], previous or {}, NOW)

    assert condition(status, "Progressing") == expected


def test_a_paused_deployment_is_progressing_unknown() -> None:
    previous = {**counts(3, 3, 3, 3), "conditions": [UPDATING_LONG_AGO]}
    the_deployment = deployment(3, paused=True, progressDeadlineSeconds=600, status=previous)
    new = replica_set("web-new", 3, available=3)

    status = workloads.deployment_status(the_deployment, new, [new], previous, NOW)

    assert condition(status, "Progressing") == progressing(
        "Unknown", "DeploymentPaused", updated=STAMP, transitioned=STAMP
    )


def test_deployment_status_keeps_the_collision_count() -> None:
    status = workloads.deployment_status(deployment(3), None, [], {"collisionCount": 2}, NOW)
    assert status["collisionCount"] == 2


# minReadySeconds


def pod(ready: bool | None, since: str | None = None) -> Object:
    conditions = [] if ready is None else [{"type": "Ready", "status": "True" if ready else "False"}]
    if since is not None:
        conditions[0]["lastTransitionTime"] = since
    return {"metadata": {"name": "p"}, "status": {"conditions": conditions}}


@pytest.mark.parametrize(
    ("the_pod", "min_ready_seconds", "expected"),
    [
        pytest.param(pod(None), 0, None, id="no-ready-condition"),
        pytest.param(pod(False, ago(100)), 10, None, id="not-ready"),
        pytest.param(pod(True, ago(0)), 0, 0.0, id="ready-no-min-ready-seconds"),
        pytest.param(pod(True, ago(4)), 10, 6.0, id="ready-for-less-than-min"),
        pytest.param(pod(True, ago(30)), 10, 0.0, id="ready-for-longer-than-min"),
    ],
)
def test_available_since(the_pod: Object, min_ready_seconds: int, expected: float | None) -> None:
    assert workloads.available_since(the_pod, min_ready_seconds, NOW) == expected


# Indexed Jobs: completedIndexes


@pytest.mark.parametrize(
    ("indexes", "text"),
    [
        pytest.param(set(), "", id="none"),
        pytest.param({0}, "0", id="one"),
        pytest.param({0, 1, 2, 3, 5}, "0-3,5", id="range-and-single"),
        pytest.param({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "0-10", id="multi-digit"),
        pytest.param({1, 3, 4, 5, 7}, "1,3-5,7", id="api-reference-example"),
        # kube-controller-manager's orderedIntervals.String writes two consecutive indexes as "a,b":
        # only three or more are compressed into a range
        pytest.param({1, 2}, "1,2", id="two-consecutive-are-not-a-range"),
        pytest.param({0, 2, 3, 7, 8, 9}, "0,2,3,7-9", id="pair-then-range"),
    ],
)
def test_format_indexes(indexes: set[int], text: str) -> None:
    assert jobs._format_indexes(indexes) == text


@pytest.mark.parametrize(
    ("text", "indexes"),
    [
        pytest.param(None, set(), id="unset"),
        pytest.param("", set(), id="empty"),
        pytest.param("0-3,5", {0, 1, 2, 3, 5}, id="range-and-single"),
        pytest.param("1,2", {1, 2}, id="pair"),
        pytest.param("1,3-5,7", {1, 3, 4, 5, 7}, id="api-reference-example"),
    ],
)
def test_parse_indexes(text: str | None, indexes: set[int]) -> None:
    assert jobs._parse_indexes(text) == indexes


@pytest.mark.parametrize(
    "indexes",
    [
        pytest.param({0, 1, 2, 3, 5}, id="range-and-single"),
        pytest.param(set(range(0, 100, 3)) | {50, 51, 52}, id="scattered"),
        pytest.param(set(range(1000)), id="one-long-range"),
        pytest.param({7}, id="single"),
    ],
)
def test_indexes_round_trip(indexes: set[int]) -> None:
    assert jobs._parse_indexes(jobs._format_indexes(indexes)) == indexes


# Job admission: the generated selector


def job_type() -> kinds.ResourceType:
    found = registry.Registry(store.Store(None)).types.get("batch", "v1", "jobs")
    assert found is not None
    return found


def job(**spec: Any) -> Object:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train", "namespace": "default", "uid": "1234-uid"},
        "spec": {"template": {"metadata": {"labels": {"app": "train"}}, "spec": {"containers": []}}, **spec},
    }


def test_default_selector_selects_the_jobs_uid_and_labels_its_pods() -> None:
    created = job()

    jobs.default_selector(registry.Registry(store.Store(None)), job_type(), created, None)

    assert created["spec"]["selector"] == {"matchLabels": {jobs.CONTROLLER_UID: "1234-uid"}}
    assert created["spec"]["template"]["metadata"]["labels"] == {
        "app": "train",
        jobs.CONTROLLER_UID: "1234-uid",
        jobs.JOB_NAME: "train",
        "controller-uid": "1234-uid",
        "job-name": "train",
    }


@pytest.mark.parametrize(
    ("body", "old"),
    [
        pytest.param(job(manualSelector=True, selector={"matchLabels": {"app": "train"}}), None, id="manual-selector"),
        pytest.param(job(), job(), id="update"),
    ],
)
def test_default_selector_leaves(body: Object, old: Object | None) -> None:
    before = copy.deepcopy(body)
    jobs.default_selector(registry.Registry(store.Store(None)), job_type(), body, old)
    assert body == before


def test_the_api_server_admits_jobs_with_a_generated_selector() -> None:
    cluster = registry.Registry(store.Store(None))
    cluster.admission.append(jobs.default_selector)
    body = job(template={"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}})
    del body["metadata"]["uid"]

    created = cluster.create(job_type(), "default", body)

    uid = created["metadata"]["uid"]
    assert created["spec"]["selector"] == {"matchLabels": {jobs.CONTROLLER_UID: uid}}
    assert created["spec"]["template"]["metadata"]["labels"][jobs.JOB_NAME] == "train"


def reconcile(controller: workloads.DeploymentController) -> None:
    asyncio.run(controller.reconcile(("default", "web")))


def recreated_deployment(cluster: registry.Registry) -> tuple[workloads.DeploymentController, Object]:
    """A Recreate Deployment of 2 whose first ReplicaSet runs one pod, its template then changed."""
    controller = workloads.DeploymentController(cluster)
    template = {"metadata": {"labels": {"app": "batch"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    body = deployment(2, strategy="Recreate", selector={"matchLabels": {"app": "batch"}}, template=template)
    del body["metadata"]["generation"]
    controller.client.create(workloads.DEPLOYMENT, "default", body)
    reconcile(controller)
    (first,) = controller.client.list(workloads.REPLICA_SET, "default")
    pod = workloads.pod_from_template(first, first["spec"]["template"], "web-")
    created = controller.client.create(workloads.POD, "default", pod)
    changed = controller.client.get(workloads.DEPLOYMENT, "default", "web")
    assert changed is not None
    changed["spec"]["template"]["metadata"]["labels"]["version"] = "2"
    controller.client.update(workloads.DEPLOYMENT, changed)
    reconcile(controller)
    return controller, created


def replicas_by_revision(controller: workloads.DeploymentController) -> dict[str, int]:
    return {
        rs["metadata"]["annotations"][workloads.REVISION]: rs["spec"]["replicas"]
        for rs in controller.client.list(workloads.REPLICA_SET, "default")
    }


@pytest.mark.parametrize("ends", ["deleted", "succeeded"])
def test_recreate_scales_the_new_replica_set_up_when_the_last_old_pod_is_gone_or_finished(ends: str) -> None:
    cluster = registry.Registry(store.Store(None))
    controller, old_pod = recreated_deployment(cluster)
    assert replicas_by_revision(controller) == {"1": 0, "2": 0}, "the old pod still runs"
    seen: list[store.Event] = []
    cluster.store.listeners.append(seen.append)

    if ends == "deleted":
        controller.client.delete(workloads.POD, "default", old_pod["metadata"]["name"], {"gracePeriodSeconds": 0})
    else:
        controller.client.update_status(workloads.POD, old_pod, {"phase": "Succeeded"})

    # The pod's own event wakes the Deployment: its ReplicaSet's count of active pods does not change.
    woken = {key for event in seen for key in controller.keys_for(event)}
    assert woken == {("default", "web")}
    reconcile(controller)
    assert replicas_by_revision(controller) == {"1": 0, "2": 2}
