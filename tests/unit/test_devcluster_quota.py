"""ResourceQuota arithmetic and LimitRange defaults in the dev cluster (pure)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from kiln.devcluster import limitranges, quota

Object = dict[str, Any]


def pod(*containers: Object, phase: str = "Running", init: tuple[Object, ...] = ()) -> Object:
    spec: Object = {"containers": list(containers)}
    if init:
        spec["initContainers"] = list(init)
    return {"metadata": {"name": "p"}, "spec": spec, "status": {"phase": phase}}


def container(name: str = "app", **resources: dict[str, str]) -> Object:
    return {"name": name, "resources": resources}


def a_quota(**hard: str) -> Object:
    return {"metadata": {"name": "q"}, "spec": {"hard": {k.replace("_", "."): v for k, v in hard.items()}}}


def test_a_pod_uses_its_containers_requests_and_limits_and_the_largest_init_container() -> None:
    usage = quota.pod_usage(
        pod(
            container(requests={"cpu": "250m", "nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "1"}),
            container("side", requests={"cpu": "250m", "memory": "1Gi"}),
            init=(container("setup", requests={"cpu": "2"}),),
        )
    )
    assert usage["requests.cpu"] == usage["cpu"] == Fraction(2)
    assert usage["requests.memory"] == 2**30
    assert usage["requests.nvidia.com/gpu"] == usage["limits.nvidia.com/gpu"] == 1
    assert usage["pods"] == usage["count/pods"] == 1


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_pod_in_a_terminal_phase_uses_nothing(phase: str) -> None:
    assert quota.pod_usage(pod(container(requests={"cpu": "1"}), phase=phase)) == {}


def test_other_objects_count_by_resource_and_group() -> None:
    assert quota.object_usage("deployments", "apps", {}) == {"count/deployments.apps": 1}
    assert quota.object_usage("configmaps", "", {}) == {"count/configmaps": 1, "configmaps": 1}


def stored(name: str, version: str, gpus: str, phase: str = "Running") -> Object:
    one = pod(container(requests={"nvidia.com/gpu": gpus}), phase=phase)
    one["metadata"] = {"name": name, "resourceVersion": version}
    return one


def test_kept_usages_follow_each_objects_version_and_forget_the_objects_gone() -> None:
    usages = quota.Usages()
    gpus = a_quota(**{"requests.nvidia.com/gpu": "8"})
    first = usages.of("pods", "", "team-a", [stored("a", "1", "2"), stored("b", "2", "3")])
    assert quota.used(gpus, first) == {"requests.nvidia.com/gpu": 5}
    # "b" finished under a new version, "a" is gone, "c" is new; a same-named pod elsewhere is apart
    later = usages.of("pods", "", "team-a", [stored("b", "5", "3", phase="Succeeded"), stored("c", "6", "1")])
    assert quota.used(gpus, later) == {"requests.nvidia.com/gpu": 1}
    elsewhere = usages.of("pods", "", "team-b", [stored("b", "5", "4")])
    assert quota.used(gpus, elsewhere) == {"requests.nvidia.com/gpu": 4}


def test_the_fifth_gpu_is_refused_with_kubes_message() -> None:
    limit = a_quota(**{"requests.nvidia.com/gpu": "4"})
    gpu = quota.pod_usage(pod(container(requests={"nvidia.com/gpu": "1"})))
    four = quota.used(limit, [gpu] * 4)
    assert quota.exceeded(limit, quota.used(limit, [gpu] * 3), gpu) is None
    assert quota.exceeded(limit, four, gpu) == (
        "exceeded quota: q, requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, "
        "limited: requests.nvidia.com/gpu=4"
    )
    assert quota.status(limit, four) == {"hard": {"requests.nvidia.com/gpu": "4"},
                                         "used": {"requests.nvidia.com/gpu": "4"}}  # fmt: skip


def test_only_the_exceeded_resources_are_named_in_the_notation_of_the_limits() -> None:
    limit = a_quota(**{"requests.cpu": "2", "requests.memory": "2Gi"})
    big = quota.pod_usage(pod(container(requests={"cpu": "500m", "memory": "1536Mi"})))
    message = quota.exceeded(limit, quota.used(limit, [big]), big)
    assert (
        message == "exceeded quota: q, requested: requests.memory=1536Mi, used: requests.memory=1536Mi, "
        "limited: requests.memory=2Gi"
    )


@pytest.mark.parametrize(
    ("value", "binary", "text"),
    [(Fraction(0), False, "0"), (Fraction(1, 2), False, "500m"), (Fraction(4), False, "4"),
     (Fraction(2000), False, "2k"), (Fraction(2**31), True, "2Gi"), (Fraction(1536 * 2**20), True, "1536Mi")],
)  # fmt: skip
def test_quantities_are_formatted_canonically(value: Fraction, binary: bool, text: str) -> None:
    assert quota.format_quantity(value, binary) == text


def test_a_cpu_quota_needs_every_container_to_ask_for_cpu() -> None:
    limit = a_quota(**{"requests.cpu": "2", "limits.memory": "1Gi"})
    bare = pod(container("app"), container("side", requests={"cpu": "1"}))
    assert (
        quota.unspecified(limit, bare)
        == "failed quota: q: must specify limits.memory for: app,side; requests.cpu for: app"
    )
    assert quota.unspecified(a_quota(**{"requests.nvidia.com/gpu": "4"}), bare) is None


def test_a_limit_range_defaults_missing_requests_and_limits_and_says_so() -> None:
    ranges = [{"spec": {"limits": [{"type": "Container", "default": {"cpu": "1"}, "defaultRequest": {"cpu": "100m"},
                                    "max": {"memory": "1Gi"}}]}}]  # fmt: skip
    target = pod(container(requests={"memory": "64Mi"}))
    assert limitranges.apply_defaults(ranges, target)
    resources = target["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    assert target["metadata"]["annotations"][limitranges.ANNOTATION] == (
        "LimitRanger plugin set: cpu request for container app; cpu, memory limit for container app"
    )
    assert not limitranges.apply_defaults(ranges, target)


def test_a_limit_range_refuses_a_container_over_its_max() -> None:
    ranges = [{"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}}]}}]
    assert limitranges.violations(ranges, pod(container(limits={"cpu": "3"}))) == [
        "maximum cpu usage per Container is 2, but limit is 3"
    ]
    assert limitranges.violations(ranges, pod(container(limits={"cpu": "2"}))) == []
