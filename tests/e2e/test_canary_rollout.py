"""Canary rollouts end to end: real kiln-server pods, a real kiln-router, a real Prometheus scraping
them, `kiln run` deciding, and a client sending live traffic through the ModelDeployment's Service.

Analysis here uses the operator's default Prometheus (`KILN_PROMETHEUS_URL`): the metrics name no
address. Intervals are two seconds so that a rollout takes seconds, not minutes.
"""

from __future__ import annotations

import datetime
import math
import pathlib
from typing import Any

import httpx
from kiln_cluster import REPO
from rollout_world import BODY, INFER, Traffic, World, served_versions

INTERVAL_SECONDS = 2.0
CANDIDATE_ERRORS = (
    'sum(increase(kiln_server_requests_total{namespace="{{namespace}}",model="{{model}}",'
    'version="{{candidate}}",code=~"5.."}[10s]))'
)
CANDIDATE_REQUESTS = (
    'sum(increase(kiln_server_requests_total{namespace="{{namespace}}",model="{{model}}",'
    'version="{{candidate}}"}[10s]))'
)
BROKEN = '{"errorRate": 0.5}'


def error_rate(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "error-rate",
        "provider": "prometheus",
        "query": f"{CANDIDATE_ERRORS} / {CANDIDATE_REQUESTS}",
        "interval": f"{INTERVAL_SECONDS:g}s",
        "initialDelay": "4s",
        "count": 3,
        "successCondition": "result <= 0.05",
        "failureCondition": "result > 0.2",
        # A new pod is scraped a few seconds after it starts; until then the answer is empty.
        "inconclusiveLimit": 5,
        **overrides,
    }


def canary(version: str, steps: list[dict[str, Any]], *metrics: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "model": "iris",
        "version": version,
        "replicas": 1,
        "strategy": {"canary": {"steps": steps, "scaleDownDelaySeconds": 120}},
        "analysis": {"metrics": list(metrics)},
        "progressDeadlineSeconds": 120,
        **spec,
    }


def serving(world: World, namespace: str, spec: dict[str, Any], *versions: str, **faults: str) -> str:
    """Register the versions (a fault-injected one when `faults` names it), deploy, and wait until
    the first version serves; the address clients use."""
    for version in versions:
        annotations = {"kiln.dev/fault-injection": faults[version]} if version in faults else {}
        world.register(namespace, version, **annotations)
    world.deploy(namespace, spec)
    world.wait_for(
        namespace, "Healthy", lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == spec["version"]
    )
    return world.url(namespace)


def at_step(world: World, namespace: str, index: int, phase: str = "Paused") -> dict[str, Any]:
    return world.wait_for(
        namespace, f"{phase} at step {index}", lambda s: s.get("currentStepIndex") == index and s.get("phase") == phase
    )


def candidate_share(url: str, requests: int = 400) -> float:
    """The share of `requests` answered by the candidate, as the answers' x-kiln-variant says."""
    with httpx.Client(timeout=10) as client:
        variants = [client.post(url + INFER, json=BODY).headers.get("x-kiln-variant") for _ in range(requests)]
    return variants.count("candidate") / requests


def binomial_tolerance(weight: int, requests: int = 400) -> float:
    """Four standard deviations of the share a fair weighted pick gives: a bug moves it further."""
    share = weight / 100
    return 4 * math.sqrt(share * (1 - share) / requests)


def moment(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_good_candidate_walks_its_steps_and_becomes_stable(world: World, namespace: str) -> None:
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}, {"analysis": {}}, {"setWeight": 100}]
    url = serving(world, namespace, canary("1.0.0", steps, error_rate()), "1.0.0", "1.1.0")

    with Traffic(url) as traffic:
        world.set_version(namespace, "1.1.0")
        for weight, pause in ((20, 1), (60, 3)):
            status = at_step(world, namespace, pause)
            assert status["weights"] == {"stable": 100 - weight, "canary": weight, "mirror": 0}
            share = candidate_share(url)
            assert abs(share - weight / 100) <= binomial_tolerance(weight), f"{share:.3f} answered at weight {weight}"
            world.kiln.kiln("resume", "md/iris", "-n", namespace)
        promoted = world.wait_for(
            namespace, "promoted", lambda s: s.get("stableVersion") == "1.1.0" and s.get("phase") == "Healthy"
        )
        after = world.kiln.kubectl("get", "md", "iris", "-n", namespace).stdout
        promoted_at = moment(promoted["history"][-1]["endTime"])
        world.wait_for(namespace, "traffic after the promotion", lambda _: len(traffic.since(promoted_at + 1)) >= 30)

    (analysed,) = promoted["analysis"]
    assert (analysed["metric"], analysed["step"], analysed["phase"]) == ("error-rate", 4, "Successful")
    assert analysed["successful"] >= 1
    assert analysed["failed"] == 0
    assert [(h["version"], h["outcome"]) for h in promoted["history"]] == [("1.0.0", "Deployed"), ("1.1.0", "Promoted")]
    assert promoted["weights"]["stable"] == 100
    assert "candidateVersion" not in promoted
    assert "1.1.0" in after
    assert "Healthy" in after
    assert all(answer.status == 200 for answer in traffic.answers), "a request failed during the rollout"
    last = traffic.since(promoted_at + 1)
    assert served_versions(last) == {"1.1.0": len(last)}, "the old version answered after the promotion"


def test_a_bad_candidate_is_rolled_back_automatically(world: World, namespace: str) -> None:
    steps = [{"setWeight": 50}, {"analysis": {}}, {"setWeight": 100}]
    spec = canary("1.0.0", steps, error_rate(count=5))
    url = serving(world, namespace, spec, "1.0.0", "1.1.0", **{"1.1.0": BROKEN})

    with Traffic(url) as traffic:
        world.set_version(namespace, "1.1.0")
        rolled = world.wait_for(namespace, "RolledBack", lambda s: s.get("phase") == "RolledBack")
        config = world.router_config(namespace)
        rolled_at = moment(rolled["history"][-1]["endTime"])
        world.wait_for(namespace, "traffic after the rollback", lambda _: len(traffic.since(rolled_at + 1)) >= 50)

    (analysed,) = rolled["analysis"]
    first_failure = next(moment(m["time"]) for m in analysed["measurements"] if m["phase"] == "Failed")
    assert rolled_at - first_failure <= 2 * INTERVAL_SECONDS
    assert rolled["weights"] == {"stable": 100, "canary": 0, "mirror": 0}
    assert config["weights"] == {"stable": 100}
    assert config["variants"]["stable"]["version"] == "1.0.0"
    assert world.replicas(namespace, "iris-v1-1-0") == 0
    assert rolled["rolledBackVersions"] == ["1.1.0"]
    assert rolled["stableVersion"] == "1.0.0"
    for words in ("error-rate", "failureCondition 'result > 0.2'", "value 0."):
        assert words in rolled["message"]
    assert any(event[:2] == ("Warning", "AnalysisFailed") for event in world.kiln.events(namespace, "iris"))
    failures = [answer for answer in traffic.answers if answer.status != 200]
    assert failures, "the fault-injected version never failed a request"
    assert {(answer.status, answer.variant) for answer in failures} == {(500, "candidate")}, (
        "the switch failed requests"
    )
    after = traffic.since(rolled_at + 1)
    assert served_versions(after) == {"1.0.0": len(after)}


def test_an_unreachable_prometheus_pauses_the_rollout_until_it_answers_again(world: World, namespace: str) -> None:
    steps = [{"setWeight": 50}, {"analysis": {}}, {"setWeight": 100}]
    spec = canary("1.0.0", steps, error_rate(count=6, consecutiveErrorLimit=1))
    url = serving(world, namespace, spec, "1.0.0", "1.1.0")

    def analysis(status: dict[str, Any]) -> dict[str, Any]:
        return next(iter(status.get("analysis") or [{}]))

    with Traffic(url):
        world.set_version(namespace, "1.1.0")
        world.wait_for(namespace, "a successful measurement", lambda s: analysis(s).get("successful", 0) >= 1)
        world.prometheus.stop()
        try:
            paused = world.wait_for(namespace, "paused by provider errors", lambda s: s.get("phase") == "Paused")
            errors_then = analysis(paused)["errors"]

            def held(status: dict[str, Any]) -> bool:
                assert (status["stableVersion"], status["phase"]) == ("1.0.0", "Paused"), status["message"]
                return bool(analysis(status)["errors"] >= errors_then + 2)

            still_down = world.wait_for(namespace, "more provider errors while paused", held)
        finally:
            world.prometheus.start()
        promoted = world.wait_for(
            namespace, "promoted once Prometheus answers", lambda s: s.get("stableVersion") == "1.1.0", timeout=120
        )

    paused_condition = next(c for c in paused["conditions"] if c["type"] == "Paused")
    assert (paused_condition["status"], paused_condition["reason"]) == ("True", "AnalysisInconclusive")
    assert "provider errors in a row" in paused["message"]
    last_error = [m for m in analysis(still_down)["measurements"] if m["phase"] == "Error"][-1]
    assert f"prometheus at {world.prometheus.url}" in last_error["error"]
    assert promoted["history"][-1]["outcome"] == "Promoted"


def test_a_restarted_operator_resumes_mid_rollout_without_moving_traffic(world: World, namespace: str) -> None:
    steps = [{"setWeight": 30}, {"analysis": {}}, {"setWeight": 100}]
    url = serving(world, namespace, canary("1.0.0", steps, error_rate(count=12)), "1.0.0", "1.1.0")

    def successes(status: dict[str, Any]) -> int:
        return int(next(iter(status.get("analysis") or [{}])).get("successful", 0))

    with Traffic(url) as traffic:
        world.set_version(namespace, "1.1.0")
        before = world.wait_for(namespace, "two successful measurements", lambda s: successes(s) >= 2)
        pods, config = world.pod_uids(namespace), world.router_config(namespace)
        world.operator.kill()
        world.operator.start()
        after = world.wait_for(namespace, "analysis going on", lambda s: successes(s) >= successes(before) + 2)
        assert (after["currentStepIndex"], after["weights"]["canary"]) == (1, 30)
        assert world.pod_uids(namespace) == pods, "a pod was recreated"
        assert world.router_config(namespace) == config
        world.wait_for(namespace, "promoted", lambda s: s.get("stableVersion") == "1.1.0", timeout=120)

    (run_before,), (run_after,) = before["analysis"], after["analysis"]
    assert run_after["started"] == run_before["started"], "the analysis started over"
    assert run_after["measurements"][0]["time"] <= run_before["measurements"][-1]["time"]
    assert all(answer.status == 200 for answer in traffic.answers)


def test_abort_promote_full_and_rollback_move_all_traffic_at_once(world: World, namespace: str) -> None:
    steps = [{"setWeight": 40}, {"pause": {}}, {"setWeight": 80}, {"pause": {}}]
    url = serving(world, namespace, canary("1.0.0", steps), "1.0.0", "1.1.0", "1.2.0")

    with Traffic(url) as traffic:
        world.set_version(namespace, "1.1.0")
        at_step(world, namespace, 1)
        world.kiln.kiln("abort", "md/iris", "-n", namespace)
        aborted = world.wait_for(namespace, "aborted", lambda s: s.get("phase") == "RolledBack")
        # The router's weights are written before the status that reports them.
        assert world.router_config(namespace)["weights"] == {"stable": 100}
        assert aborted["history"][-1]["outcome"] == "Aborted"

        world.set_version(namespace, "1.2.0")
        at_step(world, namespace, 1)
        world.kiln.kiln("promote", "--full", "md/iris", "-n", namespace)
        promoted = world.wait_for(namespace, "promoted", lambda s: s.get("stableVersion") == "1.2.0")
        assert world.router_config(namespace)["variants"]["stable"]["version"] == "1.2.0"

        world.kiln.kiln("rollback", "md/iris", "-n", namespace)
        rolled = world.wait_for(namespace, "rolled back", lambda s: s.get("stableVersion") == "1.0.0")
        config = world.router_config(namespace)
        rolled_at = moment(rolled["history"][-1]["endTime"])
        world.wait_for(namespace, "traffic after the rollback", lambda _: len(traffic.since(rolled_at + 1)) >= 30)
        history = world.kiln.kiln("history", "md/iris", "-n", namespace).stdout

    assert rolled["phase"] == "RolledBack"
    assert "candidateVersion" not in rolled
    assert (config["weights"], config["variants"]["stable"]["version"]) == ({"stable": 100}, "1.0.0")
    skipped = [event for event in world.kiln.events(namespace, "iris") if event[2].startswith("step 3 of 4")]
    assert skipped == [], "promote --full moves past every step at once"
    outcomes = [(h["version"], h["outcome"]) for h in rolled["history"]]
    assert outcomes == [("1.0.0", "Deployed"), ("1.1.0", "Aborted"), ("1.2.0", "Promoted"), ("1.2.0", "RolledBack")]
    assert promoted["phase"] == "Healthy"
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        assert version in history
    assert all(answer.status == 200 for answer in traffic.answers), "a request failed while traffic moved"
    after = traffic.since(rolled_at + 1)
    assert served_versions(after) == {"1.0.0": len(after)}


EXAMPLE = REPO / "examples" / "canary-rollout"


def train(world: World, namespace: str, version: str, example: pathlib.Path = EXAMPLE) -> None:
    """Apply the example's TrainingJob for `version` (from `example`/versions) and wait, as its
    README does, until the ModelVersion it registers is Ready."""
    kubectl = world.kiln.kubectl
    kubectl("apply", "-n", namespace, "-f", str(example / "versions" / f"iris-{version}.yaml"))
    job = f"tj/iris-{version.replace('.', '-')}"
    kubectl("wait", "-n", namespace, "--for=condition=Succeeded", job, "--timeout=180s", timeout=200)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", f"mv/iris-{version}", "--timeout=60s", timeout=80)


def test_the_canary_example_promotes_a_good_version_and_rolls_back_a_bad_one(world: World, namespace: str) -> None:
    kubectl = world.kiln.kubectl
    train(world, namespace, "2.0.0")
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "md/iris", "--timeout=120s", timeout=140)

    with Traffic(world.url(namespace), input_name="input-0") as traffic:
        train(world, namespace, "2.1.0")
        world.set_version(namespace, "2.1.0")
        good = world.wait_for(namespace, "2.1.0 promoted", lambda s: s.get("stableVersion") == "2.1.0", timeout=180)

        train(world, namespace, "2.2.0")
        kubectl("annotate", "-n", namespace, "mv", "iris-2.2.0", 'kiln.dev/fault-injection={"errorRate": 0.5}')
        world.set_version(namespace, "2.2.0")
        bad = world.wait_for(namespace, "2.2.0 rolled back", lambda s: s.get("phase") == "RolledBack", timeout=180)
        rolled_at = moment(bad["history"][-1]["endTime"])
        world.wait_for(namespace, "traffic after the rollback", lambda _: len(traffic.since(rolled_at + 1)) >= 30)
        history = world.kiln.kiln("history", "md/iris", "-n", namespace).stdout

    analysed = {(result["metric"], result["step"], result["phase"]) for result in good["analysis"]}
    assert analysed == {
        ("error-rate", 2, "Successful"),
        ("error-rate", 4, "Successful"),
        ("latency-p99", 4, "Successful"),
    }
    outcomes = [(h["version"], h["outcome"]) for h in bad["history"]]
    assert outcomes == [("2.0.0", "Deployed"), ("2.1.0", "Promoted"), ("2.2.0", "RolledBack")]
    assert "metric error-rate failed" in bad["message"]
    assert "failureCondition 'result > 0.05' held" in bad["message"]
    assert (bad["stableVersion"], bad["weights"]["stable"]) == ("2.1.0", 100)
    assert world.replicas(namespace, "iris-v2-2-0") == 0
    assert {(a.status, a.variant) for a in traffic.answers if a.status != 200} <= {(500, "candidate")}
    after = traffic.since(rolled_at + 1)
    assert served_versions(after) == {"2.1.0": len(after)}
    for version in ("2.0.0", "2.1.0", "2.2.0"):
        assert version in history
