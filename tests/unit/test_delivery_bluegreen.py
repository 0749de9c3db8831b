"""The blue-green state machine driven through reconciles with time injected: the preview beside the
active version, pre-promotion analysis, the promotion clock or `kiln promote`, the switch of all
traffic in one plan, post-promotion analysis and the switch back, and the old version's retirement."""

from __future__ import annotations

from typing import Any

import delivery_fixtures as fx
import pytest

from kiln.api import modeldeployment
from kiln.delivery import analysis, plan, reasons, serving

Phase = modeldeployment.ModelDeploymentPhase
Outcome = modeldeployment.RolloutOutcome
Verdict = modeldeployment.AnalysisPhase
V = fx.version_body

GOOD = {"error-rate": analysis.Answer(value=0.001)}
BAD = {"error-rate": analysis.Answer(value=0.2)}
STABLE, PREVIEW = serving.stable_service(fx.NAME), serving.preview_service(fx.NAME)
ANALYSED = {"metrics": ["error-rate"]}


def weights(result: plan.Plan) -> tuple[int, int]:
    return result.status.weights.stable, result.status.weights.canary


def outcomes(result: plan.Plan) -> list[tuple[str, Outcome | None]]:
    return [(entry.version, entry.outcome) for entry in result.status.history]


def serving_v1(*, replicas: int = 4, **blue_green: Any) -> fx.Cluster:
    """Version 1.0.0 healthy on `replicas` pods behind a blue-green strategy (`blue_green`, camelCase)."""
    strategy = {"blueGreen": blue_green}
    world = fx.cluster(
        V("1.0.0"), version="1.0.0", replicas=replicas, strategy=strategy, analysis={"metrics": [fx.ERROR_RATE]}
    )
    world.settle(world.reconcile(0))
    assert world.reconcile(1).status.phase is Phase.HEALTHY
    return world


def roll_out(world: fx.Cluster, version: str = "1.1.0", seconds: float = 10) -> plan.Plan:
    """Pin the deployment to a new version (registering it) and reconcile."""
    if not any(v["spec"]["version"] == version for v in world.versions):
        world.versions.append(V(version))
    world.spec["version"] = version
    return world.reconcile(seconds)


def switched(world: fx.Cluster) -> plan.Plan:
    """1.1.0 previewed on one pod from t=10 (ready at 20), scaled to all four, and switched at t=40
    with the first good answer to the post-promotion analysis."""
    roll_out(world)
    world.ready("1.1.0", 1)
    world.reconcile(20)
    world.ready("1.1.0", 4)
    result = world.reconcile(40, GOOD)
    assert weights(result) == (0, 100)
    return result


# -- the preview --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "preview_replicas", "expected"),
    [
        pytest.param(4, 1, 1, id="one-preview-pod"),
        pytest.param(3, 2, 2, id="two-preview-pods"),
        pytest.param(4, None, 4, id="unset-means-spec-replicas"),
    ],
)
def test_the_preview_runs_preview_replicas_beside_the_active_version_with_no_live_traffic(
    replicas: int, preview_replicas: int | None, expected: int
) -> None:
    blue_green: dict[str, Any] = {"autoPromotion": False}
    if preview_replicas is not None:
        blue_green["previewReplicas"] = preview_replicas
    world = serving_v1(replicas=replicas, **blue_green)

    started = roll_out(world)
    world.ready("1.1.0", expected)
    previewing = world.reconcile(20)

    for result in (started, previewing):
        assert fx.replicas_of(result, "1.1.0") == expected
        assert fx.replicas_of(result, "1.0.0") == replicas
        assert weights(result) == (100, 0)
        assert fx.router_weights(result) == {"stable": 100, "preview": 0}
        assert fx.router_upstreams(result) == {"stable": "iris-v1-0-0", "preview": "iris-v1-1-0"}
    assert previewing.status.current_step_index == 0
    assert previewing.status.stable_version == "1.0.0"


def test_the_preview_service_selects_the_candidate_and_the_stable_service_the_active_version() -> None:
    world = serving_v1(previewReplicas=1, autoPromotion=False)
    before = world.reconcile(5)
    assert fx.selected_version(before, PREVIEW) == "1.0.0"

    previewing = roll_out(world)

    assert fx.selected_version(previewing, PREVIEW) == "1.1.0"
    assert fx.selected_version(previewing, STABLE) == "1.0.0"
    assert fx.objects(previewing, "Service")[PREVIEW]["metadata"]["name"] == "iris-preview"


def test_nothing_switches_before_the_preview_is_ready() -> None:
    world = serving_v1(previewReplicas=1, prePromotionAnalysis=ANALYSED)
    roll_out(world)

    for seconds in (20, 100, 500):
        waiting = world.reconcile(seconds)
        assert waiting.measure == ()
        assert waiting.status.phase is Phase.PROGRESSING
        assert "preview: 0 of 1 pods of version 1.1.0 ready" in (waiting.status.message or "")
        assert fx.condition(waiting.status, reasons.PROGRESSING) == ("True", reasons.WAITING_FOR_PODS)
        assert waiting.status.current_step_index == 0
        assert weights(waiting) == (100, 0)
        assert fx.router_weights(waiting) == {"stable": 100, "preview": 0}
        assert fx.replicas_of(waiting, "1.1.0") == 1

    world.ready("1.1.0", 1)
    assert world.plan(510).measure


def test_a_preview_never_ready_is_rolled_back_at_the_progress_deadline_with_traffic_unmoved() -> None:
    world = serving_v1(previewReplicas=1)
    world.spec["progressDeadlineSeconds"] = 60
    roll_out(world)

    assert world.reconcile(70).status.candidate_version == "1.1.0"
    rolled = world.reconcile(71)

    assert rolled.status.phase is Phase.ROLLED_BACK
    assert fx.condition(rolled.status, reasons.PROGRESSING) == ("False", reasons.PROGRESS_DEADLINE_EXCEEDED)
    assert fx.router_weights(rolled) == {"stable": 100}
    assert fx.router_upstreams(rolled) == {"stable": "iris-v1-0-0"}


# -- pre-promotion analysis ---------------------------------------------------------------------


def test_pre_promotion_analysis_measures_the_preview_before_anything_is_applied() -> None:
    world = serving_v1(previewReplicas=1, prePromotionAnalysis=ANALYSED)
    roll_out(world)
    world.ready("1.1.0", 1)

    asking = world.plan(20)

    (request,) = asking.measure
    assert (request.key, request.provider, request.address) == ("error-rate@0", "prometheus", fx.PROMETHEUS)
    assert request.expression == 'sum(rate(errors{model="iris",version="1.1.0"}[1m]))'
    assert (asking.apply, asking.events, fx.deleted(asking), asking.traffic) == ((), (), (), None)

    first = world.reconcile(20, GOOD)
    assert first.status.phase is Phase.PROGRESSING
    assert "pre-promotion analysis of the preview of version 1.1.0" in (first.status.message or "")
    assert first.status.current_step_index == 0
    assert fx.router_weights(first) == {"stable": 100, "preview": 0}
    assert world.plan(49).measure == ()

    passed = world.reconcile(50, GOOD)
    (result,) = passed.status.analysis
    assert (result.step, result.phase, result.successful) == (0, Verdict.SUCCESSFUL, 2)
    assert passed.status.current_step_index == 1
    assert fx.replicas_of(passed, "1.1.0") == 4
    assert weights(passed) == (100, 0)


def test_a_failed_pre_promotion_analysis_drops_the_candidate_before_any_traffic_moved() -> None:
    world = serving_v1(previewReplicas=1, prePromotionAnalysis=ANALYSED)
    plans = [roll_out(world)]
    world.ready("1.1.0", 1)
    plans.append(world.reconcile(20, GOOD))

    rolled = world.reconcile(50, BAD)
    plans.append(rolled)

    assert rolled.status.phase is Phase.ROLLED_BACK
    assert (rolled.status.stable_version, rolled.status.candidate_version) == ("1.0.0", None)
    assert "pre-promotion analysis failed" in (rolled.status.message or "")
    assert fx.condition(rolled.status, reasons.PROGRESSING) == ("False", reasons.ANALYSIS_FAILED)
    assert outcomes(rolled)[-1] == ("1.1.0", Outcome.ROLLED_BACK)
    assert rolled.status.rolled_back_versions == ["1.1.0"]
    assert fx.router_weights(rolled) == {"stable": 100}
    assert fx.router_upstreams(rolled) == {"stable": "iris-v1-0-0"}
    assert fx.replicas_of(rolled, "1.1.0") == 0
    assert all(fx.router_weights(p).get("preview", 0) == 0 for p in plans)
    assert all(fx.replicas_of(p, "1.0.0") == 4 for p in plans)
    assert all(p.status.stable_version == "1.0.0" for p in plans)


# -- promotion: the clock, or `kiln promote` ----------------------------------------------------


@pytest.mark.parametrize("delay", [30, 300])
def test_with_auto_promotion_the_switch_waits_auto_promotion_seconds_after_the_preview_is_ready(delay: int) -> None:
    world = serving_v1(previewReplicas=1, autoPromotionSeconds=delay)
    roll_out(world)
    assert world.reconcile(100).status.current_step_index == 0

    world.ready("1.1.0", 1)
    ready_at = 120
    clock = world.reconcile(ready_at)
    assert clock.status.pause_start_time == fx.at(ready_at)
    assert f"switching in {delay}s" in (clock.status.message or "")

    for seconds in (ready_at + 1, ready_at + delay - 1):
        waiting = world.reconcile(seconds)
        assert waiting.status.phase is Phase.PROGRESSING
        assert waiting.status.current_step_index == 0
        assert fx.replicas_of(waiting, "1.1.0") == 1
        assert fx.router_weights(waiting) == {"stable": 100, "preview": 0}
    assert "switching in 1s" in (waiting.status.message or "")

    due = world.reconcile(ready_at + delay)
    assert due.status.current_step_index == 1
    assert fx.replicas_of(due, "1.1.0") == 4


def test_with_auto_promotion_and_no_delay_the_ready_preview_goes_to_the_switch_at_once() -> None:
    world = serving_v1(previewReplicas=1)
    roll_out(world)
    world.ready("1.1.0", 1)

    at_once = world.reconcile(20)

    assert at_once.status.current_step_index == 1
    assert fx.replicas_of(at_once, "1.1.0") == 4


def test_without_auto_promotion_the_ready_preview_waits_paused_for_promote() -> None:
    world = serving_v1(previewReplicas=1, autoPromotion=False)
    roll_out(world)
    world.ready("1.1.0", 1)

    for seconds in (20, 3600, 86400):
        held = world.reconcile(seconds)
        assert held.status.phase is Phase.PAUSED
        assert fx.condition(held.status, reasons.PAUSED) == ("True", reasons.PAUSE_STEP)
        assert "`kiln promote` switches" in (held.status.message or "")
        assert held.status.current_step_index == 0
        assert fx.replicas_of(held, "1.1.0") == 1
        assert fx.router_weights(held) == {"stable": 100, "preview": 0}

    world.act("promote", "p-1")
    promoted = world.reconcile(86410)

    assert promoted.status.current_step_index == 1
    assert promoted.status.handled_action == "p-1"
    assert reasons.PROMOTE_REQUESTED in [e.reason for e in promoted.events]
    assert fx.replicas_of(promoted, "1.1.0") == 4
    world.ready("1.1.0", 4)
    assert world.reconcile(86420).status.stable_version == "1.1.0"


# -- the switch ---------------------------------------------------------------------------------


def test_the_switch_scales_the_candidate_to_full_size_then_moves_all_traffic_in_one_plan() -> None:
    world = serving_v1(previewReplicas=1, postPromotionAnalysis=ANALYSED)
    plans = [roll_out(world)]
    world.ready("1.1.0", 1)

    scaling = world.reconcile(20)
    plans.append(scaling)
    assert scaling.status.current_step_index == 1
    assert fx.replicas_of(scaling, "1.1.0") == 4
    assert fx.replicas_of(scaling, "1.0.0") == 4
    assert fx.router_weights(scaling) == {"stable": 100, "preview": 0}
    assert scaling.measure == ()

    world.ready("1.1.0", 3)
    almost = world.reconcile(30)
    plans.append(almost)
    assert "switching: 3 of 4 pods of version 1.1.0 ready" in (almost.status.message or "")
    assert fx.router_weights(almost) == {"stable": 100, "preview": 0}

    world.ready("1.1.0", 4)
    assert world.plan(40).measure
    switch = world.reconcile(40, GOOD)
    plans.append(switch)

    assert weights(switch) == (0, 100)
    assert fx.router_weights(switch) == {"stable": 0, "preview": 100}
    assert fx.router_upstreams(switch) == {"stable": "iris-v1-0-0", "preview": "iris-v1-1-0"}
    assert fx.replicas_of(switch, "1.0.0") == 4
    assert fx.replicas_of(switch, "1.1.0") == 4
    assert switch.status.stable_version == "1.0.0"
    assert switch.status.phase is Phase.PROGRESSING
    assert "post-promotion analysis of version 1.1.0" in (switch.status.message or "")
    assert [e.reason for e in switch.events] == [reasons.WEIGHT_SET]
    assert {weights(p) for p in plans} == {(100, 0), (0, 100)}


def test_without_post_promotion_analysis_the_switch_makes_the_candidate_stable_in_the_same_plan() -> None:
    world = serving_v1(previewReplicas=1, scaleDownDelaySeconds=60)
    roll_out(world)
    world.ready("1.1.0", 1)
    world.reconcile(20)
    world.ready("1.1.0", 4)

    done = world.reconcile(30)

    assert (done.status.stable_version, done.status.candidate_version) == ("1.1.0", None)
    assert done.status.phase is Phase.HEALTHY
    assert fx.router_weights(done) == {"stable": 100}
    assert fx.router_upstreams(done) == {"stable": "iris-v1-1-0"}
    assert outcomes(done)[-1] == ("1.1.0", Outcome.PROMOTED)
    assert fx.replicas_of(done, "1.0.0") == 4
    assert fx.selected_version(done, STABLE) == fx.selected_version(done, PREVIEW) == "1.1.0"


# -- post-promotion analysis --------------------------------------------------------------------


def test_a_failed_post_promotion_analysis_switches_straight_back_with_the_old_version_at_full_size() -> None:
    world = serving_v1(previewReplicas=1, postPromotionAnalysis=ANALYSED)
    plans = [switched(world)]

    back = world.reconcile(70, BAD)
    plans.append(back)

    assert back.status.phase is Phase.ROLLED_BACK
    assert (back.status.stable_version, back.status.candidate_version) == ("1.0.0", None)
    assert weights(back) == (100, 0)
    assert fx.router_weights(back) == {"stable": 100}
    assert fx.router_upstreams(back) == {"stable": "iris-v1-0-0"}
    assert fx.selected_version(back, STABLE) == "1.0.0"
    assert "post-promotion analysis failed" in (back.status.message or "")
    assert outcomes(back)[-1] == ("1.1.0", Outcome.ROLLED_BACK)
    assert back.status.retiring == []
    assert fx.replicas_of(back, "1.1.0") == 0
    assert "iris-v1-0-0" not in fx.deleted(back)
    assert all(fx.replicas_of(p, "1.0.0") == 4 for p in plans)


@pytest.mark.parametrize("delay", [30, 120])
def test_a_passed_post_promotion_analysis_makes_the_candidate_stable_and_retires_the_old_version_after_the_delay(
    delay: int,
) -> None:
    world = serving_v1(previewReplicas=1, postPromotionAnalysis=ANALYSED, scaleDownDelaySeconds=delay)
    switched(world)

    done = world.reconcile(70, GOOD)

    assert (done.status.stable_version, done.status.candidate_version) == ("1.1.0", None)
    assert done.status.phase is Phase.HEALTHY
    assert outcomes(done)[-1] == ("1.1.0", Outcome.PROMOTED)
    assert weights(done) == (100, 0)
    assert fx.router_weights(done) == {"stable": 100}
    assert fx.router_upstreams(done) == {"stable": "iris-v1-1-0"}
    assert [(r.version, r.since) for r in done.status.retiring] == [("1.0.0", fx.at(70))]
    assert fx.replicas_of(done, "1.0.0") == 4

    kept = world.reconcile(70 + delay - 1)
    assert fx.replicas_of(kept, "1.0.0") == 4
    assert fx.deleted(kept) == ()

    retired = world.reconcile(70 + delay)
    assert retired.status.retiring == []
    assert fx.replicas_of(retired, "1.0.0") is None
    assert fx.deleted(retired) == ("iris-v1-0-0",)
    assert reasons.RETIRED in [e.reason for e in retired.events]


# -- `kiln promote --full` ----------------------------------------------------------------------


def test_promote_full_skips_both_analyses() -> None:
    world = serving_v1(
        previewReplicas=1, autoPromotion=False, prePromotionAnalysis=ANALYSED, postPromotionAnalysis=ANALYSED
    )
    roll_out(world)
    world.ready("1.1.0", 1)
    assert world.plan(20).measure

    world.act("promote-full", "f-1")
    skipping = world.reconcile(20)

    assert skipping.measure == ()
    assert skipping.status.direct_promotion
    assert fx.replicas_of(skipping, "1.1.0") == 4
    assert fx.router_weights(skipping) == {"stable": 100, "preview": 0}
    assert reasons.PROMOTE_REQUESTED in [e.reason for e in skipping.events]

    world.ready("1.1.0", 4)
    assert world.plan(30).measure == ()
    done = world.reconcile(30)

    assert (done.status.stable_version, done.status.candidate_version) == ("1.1.0", None)
    assert outcomes(done)[-1] == ("1.1.0", Outcome.PROMOTED)
    assert fx.router_weights(done) == {"stable": 100}
    assert fx.router_upstreams(done) == {"stable": "iris-v1-1-0"}
    assert done.status.analysis == []
    assert not done.status.direct_promotion
