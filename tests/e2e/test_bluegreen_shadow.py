"""Blue-green and shadow rollouts end to end: real kiln-server pods, kiln-router, a real Prometheus
and `kiln run`, with a client sending live traffic through the ModelDeployment's Service."""

from __future__ import annotations

import json
from typing import Any

from kiln_cluster import REPO
from polling import eventually
from rollout_world import IRIS_ROWS, Traffic, World, served_versions
from sklearn.tree import DecisionTreeClassifier
from test_canary_rollout import CANDIDATE_REQUESTS, error_rate, moment, serving, train

INTERVAL_SECONDS = 2.0
BROKEN = '{"errorRate": 0.5}'


def answered(**overrides: Any) -> dict[str, Any]:
    """The candidate answered requests at all: what a preview must show before the switch."""
    return {
        "name": "answered",
        "provider": "prometheus",
        "query": CANDIDATE_REQUESTS,
        "interval": f"{INTERVAL_SECONDS:g}s",
        "initialDelay": "4s",
        "count": 2,
        "successCondition": "result > 0",
        "inconclusiveLimit": 5,
        **overrides,
    }


def blue_green(version: str) -> dict[str, Any]:
    return {
        "model": "iris",
        "version": version,
        "replicas": 1,
        "strategy": {
            "blueGreen": {
                "previewReplicas": 1,
                "autoPromotion": True,
                "autoPromotionSeconds": 0,
                "prePromotionAnalysis": {"metrics": ["answered"]},
                "postPromotionAnalysis": {"metrics": ["error-rate"]},
                "scaleDownDelaySeconds": 120,
            }
        },
        "analysis": {"metrics": [answered(), error_rate(count=4)]},
        "progressDeadlineSeconds": 120,
    }


def live_versions(traffic: Traffic) -> list[str | None]:
    """The versions that answered the live client, in order, one entry per change."""
    changes: list[str | None] = []
    for answer in traffic.answers:
        if answer.status == 200 and (not changes or changes[-1] != answer.version):
            changes.append(answer.version)
    return changes


def test_blue_green_switches_at_once_and_switches_back_when_post_promotion_analysis_fails(
    world: World, namespace: str
) -> None:
    url = serving(world, namespace, blue_green("1.0.0"), "1.0.0", "1.1.0", "1.2.0", **{"1.2.0": BROKEN})

    with Traffic(url) as live, Traffic(url, headers={"x-kiln-variant": "preview"}):
        world.set_version(namespace, "1.1.0")
        promoted = world.wait_for(
            namespace,
            "1.1.0 switched and stable",
            lambda s: s.get("stableVersion") == "1.1.0" and s.get("phase") == "Healthy",
        )
        assert live_versions(live) == ["1.0.0", "1.1.0"], "after the switch an answer came from the old version"
        stable_pods = world.pod_uids(namespace)

        world.set_version(namespace, "1.2.0")
        rolled = world.wait_for(namespace, "1.2.0 switched back", lambda s: s.get("phase") == "RolledBack")
        world.wait_for(
            namespace,
            "traffic after the switch back",
            lambda _: len(live.since(moment(rolled["history"][-1]["endTime"]) + 1)) >= 30,
        )

    analysed = {(r["metric"], r["step"]): r for r in promoted["analysis"]}
    assert analysed[("answered", 0)]["phase"] == analysed[("error-rate", 1)]["phase"] == "Successful"
    (post,) = [r for r in rolled["analysis"] if r["step"] == 1]
    first_failure = next(moment(m["time"]) for m in post["measurements"] if m["phase"] == "Failed")
    assert moment(rolled["history"][-1]["endTime"]) - first_failure <= INTERVAL_SECONDS
    assert "metric error-rate failed" in rolled["message"]
    assert (rolled["stableVersion"], rolled["weights"]["stable"]) == ("1.1.0", 100)
    assert live_versions(live)[:2] == ["1.0.0", "1.1.0"]
    assert live_versions(live)[-1] == "1.1.0"
    survivors = {name: uid for name, uid in world.pod_uids(namespace).items() if name.startswith("iris-v1-1-0")}
    assert survivors == {name: uid for name, uid in stable_pods.items() if name.startswith("iris-v1-1-0")}, (
        "the old version was restarted while the candidate was live"
    )
    assert world.replicas(namespace, "iris-v1-2-0") == 0
    failures = {(a.status, a.variant) for a in live.answers if a.status != 200}
    assert failures <= {(500, "preview")}, "the switch itself failed requests"


def shadow(version: str, **overrides: Any) -> dict[str, Any]:
    return {
        "model": "iris",
        "version": version,
        "replicas": 1,
        "strategy": {
            "shadow": {
                "mirrorPercent": 100,
                "duration": "15s",
                "comparison": {"maxDisagreement": 0.05, "interval": "2s"},
                "autoPromotion": True,
                **overrides,
            }
        },
        "progressDeadlineSeconds": 120,
    }


def agreement(stable: Any, candidate: Any, rows: int) -> float:
    """The share of the first `rows` iris rows on which the two models predict the same class."""
    inputs = IRIS_ROWS[:rows]
    return float((stable.predict(inputs) == candidate.predict(inputs)).mean())


def test_a_shadow_is_compared_live_discarded_when_it_disagrees_and_promoted_when_it_agrees(
    world: World, namespace: str
) -> None:
    rows = 150
    stable = world.register(namespace, "1.0.0")
    stump = world.register(namespace, "2.0.0", model=DecisionTreeClassifier(max_depth=1, random_state=0))
    twin = world.register(namespace, "1.1.0")
    world.deploy(namespace, shadow("1.0.0"))
    world.wait_for(namespace, "Healthy", lambda s: s.get("phase") == "Healthy")
    url = world.url(namespace)

    with Traffic(url, rows=rows) as traffic:
        world.set_version(namespace, "2.0.0")
        discarded = world.wait_for(namespace, "2.0.0 discarded", lambda s: s.get("phase") == "RolledBack", timeout=120)
        served_while_shadowing = list(traffic.answers)
        world.set_version(namespace, "1.1.0")
        promoted = world.wait_for(namespace, "1.1.0 promoted", lambda s: s.get("stableVersion") == "1.1.0", timeout=120)

    expected = agreement(stable, stump, rows)
    figures = discarded["shadow"]
    assert figures["compared"] >= 100
    assert abs(figures["agreement"] - expected) <= 0.05, f"{figures} against {expected:.3f} computed here"
    assert discarded["history"][-1]["outcome"] == "Discarded"
    assert "more than maxDisagreement 5.0%" in discarded["message"]
    assert f"{figures['disagreed']} of {figures['compared']}" in discarded["message"]
    assert {(a.status, a.variant, a.version) for a in served_while_shadowing} == {(200, "stable", "1.0.0")}, (
        "a shadow's answer reached the client"
    )
    assert agreement(stable, twin, rows) == 1.0
    assert promoted["shadow"]["agreement"] == 1.0
    assert promoted["history"][-1]["outcome"] == "Promoted"


# The examples, run as their READMEs say: TrainingJobs train the versions, `kubectl apply` deploys.

EXAMPLES = REPO / "examples"
PREVIEW = {"x-kiln-variant": "preview"}


def run_example(world: World, namespace: str, scenario: str, name: str, first: str) -> str:
    """Train the example's first version, apply the example and wait until it is Ready; the
    address clients use."""
    kubectl = world.kiln.kubectl
    train(world, namespace, first, example=EXAMPLES / scenario)
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / scenario))
    kubectl("wait", "-n", namespace, "--for=condition=Ready", f"md/{name}", "--timeout=120s", timeout=140)
    service = world.kiln.core().read_namespaced_service(name, namespace)
    return f"http://{service.spec.cluster_ip}:80"


def wait_md(world: World, namespace: str, name: str, what: str, check: Any, *, timeout: float = 180) -> dict[str, Any]:
    """Poll md/`name`'s status until `check(status)` holds; the status then."""

    def satisfied() -> dict[str, Any] | None:
        status = world.status(namespace, name)
        return status if check(status) else None

    found: dict[str, Any] = eventually(satisfied, f"md/{name} {what} (see {world.kiln.operator_log})", timeout)
    return found


def patch_version(world: World, namespace: str, name: str, version: str) -> None:
    patch = json.dumps({"spec": {"version": version}})
    world.kiln.kubectl("patch", "md", name, "-n", namespace, "--type", "merge", "-p", patch)


def outcomes(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(h["version"], h["outcome"]) for h in status["history"]]


def test_the_blue_green_example_switches_to_a_good_version_and_back_from_a_bad_one(
    world: World, namespace: str
) -> None:
    name, example, kubectl = "iris-blue-green", EXAMPLES / "blue-green", world.kiln.kubectl
    url = run_example(world, namespace, "blue-green", name, "3.0.0")

    with Traffic(url, input_name="input-0") as live, Traffic(url, input_name="input-0", headers=PREVIEW) as preview:
        train(world, namespace, "3.1.0", example=example)
        patch_version(world, namespace, name, "3.1.0")
        good = wait_md(
            world,
            namespace,
            name,
            "3.1.0 switched and stable",
            lambda s: s.get("stableVersion") == "3.1.0" and s.get("phase") == "Healthy",
        )

        train(world, namespace, "3.2.0", example=example)
        kubectl("annotate", "-n", namespace, "mv", "iris-3.2.0", f"kiln.dev/fault-injection={BROKEN}")
        patch_version(world, namespace, name, "3.2.0")
        bad = wait_md(world, namespace, name, "3.2.0 switched back", lambda s: s.get("phase") == "RolledBack")
        back_at = moment(bad["history"][-1]["endTime"])
        wait_md(world, namespace, name, "traffic after the switch back", lambda _: len(live.since(back_at + 1)) >= 30)
        history = world.kiln.kiln("history", f"md/{name}", "-n", namespace).stdout
        shown = world.kiln.kiln("status", f"md/{name}", "-n", namespace).stdout

    analysed = {(r["metric"], r["step"], r["phase"]) for r in good["analysis"]}
    assert analysed == {("preview-answered", 0, "Successful"), ("error-rate", 1, "Successful")}
    assert outcomes(bad) == [("3.0.0", "Deployed"), ("3.1.0", "Promoted"), ("3.2.0", "RolledBack")]
    assert "metric error-rate failed" in bad["message"]
    assert "failureCondition 'result > 0.05' held" in bad["message"]
    assert (bad["stableVersion"], bad["weights"]["stable"]) == ("3.1.0", 100)
    assert world.replicas(namespace, f"{name}-v3-2-0") == 0
    # Live clients: all on 3.0.0, then at once all on 3.1.0; 3.2.0 while it was switched to, then 3.1.0 again.
    assert live_versions(live) == ["3.0.0", "3.1.0", "3.2.0", "3.1.0"], "an answer came from a version not live"
    assert {(a.status, a.variant) for a in live.answers if a.status != 200} <= {(500, "preview")}
    after = live.since(back_at + 1)
    assert served_versions(after) == {"3.1.0": len(after)}
    previewed = {a.version for a in preview.answers if a.status == 200 and a.variant == "preview"}
    assert previewed == {"3.1.0", "3.2.0"}, "the preview header reached something other than a candidate"
    for version in ("3.0.0", "3.1.0", "3.2.0"):
        assert version in history
    assert "3.1.0" in shown


def test_the_shadow_example_promotes_an_agreeing_version_and_discards_a_disagreeing_one(
    world: World, namespace: str
) -> None:
    name, example = "iris-shadow", EXAMPLES / "shadow"
    url = run_example(world, namespace, "shadow", name, "4.0.0")

    with Traffic(url, input_name="input-0", rows=len(IRIS_ROWS)) as traffic:
        train(world, namespace, "4.1.0", example=example)
        patch_version(world, namespace, name, "4.1.0")
        good = wait_md(
            world,
            namespace,
            name,
            "4.1.0 promoted",
            lambda s: s.get("stableVersion") == "4.1.0" and s.get("phase") == "Healthy",
            timeout=240,
        )

        train(world, namespace, "4.2.0", example=example)
        shadowing_from = len(traffic.answers)
        patch_version(world, namespace, name, "4.2.0")
        bad = wait_md(world, namespace, name, "4.2.0 discarded", lambda s: s.get("phase") == "RolledBack")
        served_while_shadowing = traffic.answers[shadowing_from:]
        history = world.kiln.kiln("history", f"md/{name}", "-n", namespace).stdout

    assert good["shadow"]["compared"] >= 100
    assert good["shadow"]["agreement"] == 1.0
    assert {(r["metric"], r["phase"]) for r in good["analysis"]} == {("error-rate", "Successful")}
    figures = bad["shadow"]
    assert figures["compared"] >= 100
    # The stump calls versicolor and virginica alike: it disagrees on about a third of the flowers.
    assert abs(figures["agreement"] - 2 / 3) <= 0.1, figures
    assert outcomes(bad) == [("4.0.0", "Deployed"), ("4.1.0", "Promoted"), ("4.2.0", "Discarded")]
    assert "more than maxDisagreement 5.0%" in bad["message"]
    assert f"{figures['disagreed']} of {figures['compared']}" in bad["message"]
    assert bad["stableVersion"] == "4.1.0"
    assert world.replicas(namespace, f"{name}-v4-2-0") == 0
    assert {(a.status, a.variant, a.version) for a in served_while_shadowing} == {(200, "stable", "4.1.0")}, (
        "a shadow's answer reached the client"
    )
    assert all(a.status == 200 for a in traffic.answers), "a request failed during the rollouts"
    assert set(served_versions(traffic.answers)) == {"4.0.0", "4.1.0"}
    for version in ("4.0.0", "4.1.0", "4.2.0"):
        assert version in history
