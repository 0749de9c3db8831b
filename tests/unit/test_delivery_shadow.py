"""The shadow state machine driven through reconciles with time injected: the mirror beside stable,
the running comparison in status, the verdict at the end of the shadow period (discard, hold or
pass), going live directly or through the canary steps of `then`, `kiln promote`, analysis and a
spec that changes mid-shadow."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import delivery_fixtures as fx
import pytest

from kiln.api import modeldeployment
from kiln.delivery import analysis, plan, reasons, rollout, serving, traffic

Phase = modeldeployment.ModelDeploymentPhase
Outcome = modeldeployment.RolloutOutcome
ShadowPhase = modeldeployment.ShadowPhase
V = fx.version_body

BAD = {"error-rate": analysis.Answer(value=0.2)}
STABLE = serving.stable_service(fx.NAME)
STARTED, END = 20, 320
"""Mirroring starts once the candidate's pods are ready at t=20; the 5m shadow period ends at t=320."""
SHADOW: dict[str, Any] = {
    "mirrorPercent": 50,
    "duration": "5m",
    "comparison": {"maxDisagreement": 0.05, "maxLatencyRatio": 1.5},
    "autoPromotion": True,
}


@dataclasses.dataclass
class World(fx.Cluster):
    """A cluster whose traffic provider reports a comparison of the shadow's answers."""

    comparison: traffic.Comparison | None = None

    def observed(self, answers: Mapping[str, analysis.Answer] | None = None) -> rollout.Observed:
        return dataclasses.replace(super().observed(answers), comparison=self.comparison)


def seen(compared: int, agreed: int, latency: float | None = 1.0, **more: Any) -> traffic.Comparison:
    """What the router compared: `agreed` of `compared` requests matched stable."""
    return traffic.Comparison(
        compared=compared, agreed=agreed, disagreed=compared - agreed, latency_ratio=latency, **more
    )


def mirror_of(result: plan.Plan) -> traffic.Mirror | None:
    """The mirror of the split the plan puts in force."""
    assert result.traffic is not None, "the plan puts no traffic split in force"
    return result.traffic.mirror


def weights(result: plan.Plan) -> tuple[int, int, int]:
    w = result.status.weights
    return w.stable, w.canary, w.mirror


def outcomes(result: plan.Plan) -> list[tuple[str, Outcome | None]]:
    return [(entry.version, entry.outcome) for entry in result.status.history]


def figures(result: plan.Plan) -> modeldeployment.ShadowStatus:
    assert result.status.shadow is not None, "the plan keeps no shadow figures"
    return result.status.shadow


def serving_v1(*, replicas: int = 4, **shadow: Any) -> World:
    """Version 1.0.0 healthy on `replicas` pods behind a shadow strategy (SHADOW updated by `shadow`)."""
    body = fx.deployment_body(
        version="1.0.0",
        replicas=replicas,
        strategy={"shadow": {**SHADOW, **shadow}},
        analysis={"metrics": [fx.ERROR_RATE]},
    )
    world = World(body, [V("1.0.0")])
    world.settle(world.reconcile(0))
    assert world.reconcile(1).status.phase is Phase.HEALTHY
    return world


def roll_out(world: World, version: str = "1.1.0", seconds: float = 10) -> plan.Plan:
    """Pin the deployment to a new version (registering it) and reconcile."""
    if not any(v["spec"]["version"] == version for v in world.versions):
        world.versions.append(V(version))
    world.spec["version"] = version
    return world.reconcile(seconds)


def shadowing(world: World, pods: int = 2) -> plan.Plan:
    """Roll 1.1.0 out at t=10; its `pods` are ready and mirroring starts at t=20."""
    roll_out(world)
    world.ready("1.1.0", pods)
    result = world.reconcile(STARTED)
    assert figures(result).started == fx.at(STARTED)
    return result


# -- mirroring ----------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [100, 50, 10])
def test_while_shadowing_stable_takes_all_traffic_and_a_mirror_copies_requests_to_the_candidate(
    percent: int,
) -> None:
    world = serving_v1(mirrorPercent=percent)
    waiting = roll_out(world)
    assert mirror_of(waiting) is None
    assert fx.router_weights(waiting)["stable"] == 100

    world.ready("1.1.0", 4)
    result = world.reconcile(STARTED)

    assert fx.router_weights(result) == {"stable": 100}
    assert fx.router_upstreams(result) == {"stable": "iris-v1-0-0"}
    mirror = mirror_of(result)
    assert mirror is not None
    assert (mirror.variant, mirror.service, mirror.version) == ("candidate", "iris-v1-1-0", "1.1.0")
    assert (mirror.percent, mirror.compare_against) == (percent, "stable")
    assert weights(result) == (100, 0, percent)
    assert result.status.phase is Phase.PROGRESSING
    assert figures(result).phase is ShadowPhase.SHADOWING
    assert f"{percent}% of requests mirrored to version 1.1.0" in [e.message for e in result.events]
    assert fx.selected_version(result, STABLE) == "1.0.0"
    assert fx.replicas_of(result, "1.0.0") == 4


@pytest.mark.parametrize(
    ("replicas", "percent", "expected"),
    [
        pytest.param(4, 100, 4, id="all-mirrored"),
        pytest.param(4, 50, 2, id="half"),
        pytest.param(10, 25, 3, id="rounded-up"),
        pytest.param(4, 10, 1, id="at-least-one"),
        pytest.param(1, 50, 1, id="one-replica"),
    ],
)
def test_the_candidate_runs_the_mirror_share_of_replicas(replicas: int, percent: int, expected: int) -> None:
    world = serving_v1(replicas=replicas, mirrorPercent=percent)

    started = roll_out(world)
    world.ready("1.1.0", expected)
    mirroring = world.reconcile(STARTED)

    for result in (started, mirroring):
        assert fx.replicas_of(result, "1.1.0") == expected
        assert fx.replicas_of(result, "1.0.0") == replicas
    assert weights(mirroring) == (100, 0, percent)


# -- the running comparison ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("comparison", "agreement"),
    [
        pytest.param(seen(1000, 990, 1.2, errors=3, dropped=7), 0.99, id="mostly-agreeing"),
        pytest.param(seen(4, 1, None), 0.25, id="no-latency-ratio"),
        pytest.param(seen(0, 0, None, errors=5, dropped=2), None, id="nothing-compared"),
    ],
)
def test_the_shadow_figures_follow_the_observed_comparison(
    comparison: traffic.Comparison, agreement: float | None
) -> None:
    world = serving_v1()
    shadowing(world)
    world.comparison = comparison

    result = world.reconcile(60)

    shadow = figures(result)
    assert (shadow.compared, shadow.agreed, shadow.disagreed) == (
        comparison.compared,
        comparison.agreed,
        comparison.disagreed,
    )
    assert (shadow.errors, shadow.dropped) == (comparison.errors, comparison.dropped)
    assert shadow.agreement == agreement
    assert shadow.latency_ratio == comparison.latency_ratio
    assert shadow.last_updated == fx.at(60)
    assert shadow.message is None
    assert world.status.shadow == shadow
    expected = "no comparison yet" if agreement is None else f"agreement {agreement:.1%}"
    assert f"shadowing version 1.1.0: {expected} over {comparison.compared} requests" in (result.status.message or "")


def test_an_unreadable_comparison_keeps_the_last_figures_and_says_why() -> None:
    world = serving_v1()
    shadowing(world)
    world.comparison = seen(200, 198, 1.1)
    read = figures(world.reconcile(30))

    world.comparison = traffic.Comparison(error="the router at 10.0.0.7:8080 did not answer")
    unreadable = figures(world.reconcile(40))

    assert unreadable.message == "the router at 10.0.0.7:8080 did not answer"
    assert unreadable.model_copy(update={"message": None}) == read
    assert unreadable.last_updated == fx.at(30)

    world.comparison = seen(300, 297, 1.1)
    again = figures(world.reconcile(50))
    assert (again.compared, again.message, again.last_updated) == (300, None, fx.at(50))


# -- the end of the shadow period ---------------------------------------------------------------


@pytest.mark.parametrize(("duration", "seconds"), [("90s", 90), ("5m", 300), ("1h", 3600)])
def test_nothing_is_decided_before_the_duration_ends(duration: str, seconds: int) -> None:
    world = serving_v1(duration=duration)
    shadowing(world)
    world.comparison = seen(1000, 500, 5.0)

    for moment in (STARTED + 1, STARTED + seconds // 2, STARTED + seconds - 1):
        undecided = world.reconcile(moment)
        assert undecided.status.phase is Phase.PROGRESSING
        assert undecided.status.candidate_version == "1.1.0"
        assert figures(undecided).phase is ShadowPhase.SHADOWING
        assert weights(undecided) == (100, 0, 50)
        assert "agreement 50.0% over 1000 requests" in (undecided.status.message or "")
        assert outcomes(undecided)[-1] == ("1.1.0", None)

    decided = world.reconcile(STARTED + seconds)
    assert decided.status.candidate_version is None
    assert outcomes(decided)[-1] == ("1.1.0", Outcome.DISCARDED)


@pytest.mark.parametrize(
    ("comparison", "because"),
    [
        pytest.param(
            seen(1000, 900, 1.0),
            "the shadow disagreed with stable on 100 of 1000 requests (10.0%), more than maxDisagreement 5.0%",
            id="disagreement",
        ),
        pytest.param(
            seen(1000, 1000, 2.0),
            "the shadow's p99 latency was 2.00x stable's, more than maxLatencyRatio 1.5",
            id="latency",
        ),
        pytest.param(
            seen(1000, 940, 1.6),
            "the shadow disagreed with stable on 60 of 1000 requests (6.0%), more than maxDisagreement 5.0%",
            id="both-disagreement-first",
        ),
    ],
)
def test_a_shadow_over_a_limit_is_discarded_with_the_figures_in_the_reason(
    comparison: traffic.Comparison, because: str
) -> None:
    world = serving_v1()
    shadowing(world)
    world.comparison = comparison

    discarded = world.reconcile(END)

    assert discarded.status.phase is Phase.ROLLED_BACK
    assert (discarded.status.stable_version, discarded.status.candidate_version) == ("1.0.0", None)
    (record,) = [entry for entry in discarded.status.history if entry.version == "1.1.0"]
    assert record.outcome is Outcome.DISCARDED
    assert record.reason == f"discarded after the shadow period: {because}"
    assert because in (discarded.status.message or "")
    assert fx.condition(discarded.status, reasons.PROGRESSING) == ("False", reasons.SHADOW_DISCARDED)
    assert [(e.type, e.reason) for e in discarded.events] == [("Warning", reasons.SHADOW_DISCARDED)]
    assert discarded.status.rolled_back_versions == ["1.1.0"]
    assert weights(discarded) == (100, 0, 0)
    assert mirror_of(discarded) is None
    assert fx.router_weights(discarded) == {"stable": 100}
    assert fx.replicas_of(discarded, "1.1.0") == 0
    assert fx.replicas_of(discarded, "1.0.0") == 4

    later = world.reconcile(END + 600)
    assert later.status.candidate_version is None
    assert later.status.phase is Phase.ROLLED_BACK


@pytest.mark.parametrize(
    "comparison",
    [
        pytest.param(seen(1000, 990, 1.1), id="well-within"),
        pytest.param(seen(1000, 950, 1.0), id="disagreement-at-the-limit"),
        pytest.param(seen(20, 19, 1.0), id="one-in-twenty-at-the-limit"),
        pytest.param(seen(1000, 1000, 1.5), id="latency-at-the-limit"),
        pytest.param(seen(1000, 1000, None), id="no-latency-ratio"),
    ],
)
def test_a_shadow_within_the_limits_passes(comparison: traffic.Comparison) -> None:
    world = serving_v1()
    shadowing(world)
    world.comparison = comparison

    passed = world.reconcile(END)

    assert passed.status.candidate_version == "1.1.0"
    assert passed.status.phase is not Phase.ROLLED_BACK
    assert figures(passed).phase is ShadowPhase.PROMOTING
    assert reasons.SHADOW_PASSED in [e.reason for e in passed.events]


@pytest.mark.parametrize(
    ("comparison", "because"),
    [
        pytest.param(None, "no mirrored request was compared", id="no-comparison-observed"),
        pytest.param(traffic.Comparison(), "no mirrored request was compared", id="zero-compared"),
        pytest.param(seen(0, 0, None, errors=40, dropped=3), "no mirrored request was compared", id="only-errors"),
        pytest.param(traffic.Comparison(error="router unreachable"), "router unreachable", id="unreadable"),
    ],
)
def test_a_shadow_period_with_nothing_compared_holds_and_never_promotes(
    comparison: traffic.Comparison | None, because: str
) -> None:
    world = serving_v1()
    shadowing(world)
    world.comparison = comparison

    for seconds in (END, 3600, 86400 * 7):
        held = world.reconcile(seconds)
        assert held.status.phase is Phase.PAUSED
        assert fx.condition(held.status, reasons.PAUSED) == ("True", reasons.SHADOW_INCONCLUSIVE)
        assert f"the shadow period ended with nothing to judge: {because}" in (held.status.message or "")
        assert (held.status.stable_version, held.status.candidate_version) == ("1.0.0", "1.1.0")
        assert figures(held).phase is ShadowPhase.SHADOWING
        assert fx.router_weights(held) == {"stable": 100}
        assert outcomes(held)[-1] == ("1.1.0", None)
        assert reasons.SHADOW_PASSED not in [e.reason for e in held.events]


# -- going live ---------------------------------------------------------------------------------


def test_a_passing_shadow_with_auto_promotion_promotes_directly_once_the_candidate_runs_at_full_size() -> None:
    world = serving_v1()
    plans = [shadowing(world)]
    world.comparison = seen(1000, 995, 1.1)

    going_live = world.reconcile(END)
    plans.append(going_live)

    assert figures(going_live).phase is ShadowPhase.PROMOTING
    assert weights(going_live) == (100, 0, 0)
    assert mirror_of(going_live) is None
    assert fx.router_weights(going_live) == {"stable": 100, "candidate": 0}
    assert fx.replicas_of(going_live, "1.1.0") == 4
    assert going_live.status.stable_version == "1.0.0"
    assert [e.reason for e in going_live.events] == [reasons.SHADOW_PASSED]
    assert "agreement 99.5% over 1000 requests" in going_live.events[0].message

    world.ready("1.1.0", 3)
    plans.append(world.reconcile(END + 10))
    assert plans[-1].status.stable_version == "1.0.0"

    world.ready("1.1.0", 4)
    done = world.reconcile(END + 20)
    plans.append(done)

    assert (done.status.stable_version, done.status.candidate_version) == ("1.1.0", None)
    assert done.status.phase is Phase.HEALTHY
    assert outcomes(done)[-1] == ("1.1.0", Outcome.PROMOTED)
    assert fx.router_weights(done) == {"stable": 100}
    assert fx.router_upstreams(done) == {"stable": "iris-v1-1-0"}
    assert [r.version for r in done.status.retiring] == ["1.0.0"]
    assert all(fx.router_weights(p).get("candidate", 0) == 0 for p in plans[:-1])


def test_a_passing_shadow_with_then_walks_the_canary_steps_and_then_promotes() -> None:
    then = {"steps": [{"setWeight": 25}, {"pause": {"duration": "30s"}}, {"setWeight": 50}]}
    world = serving_v1(mirrorPercent=25, then=then)
    shadowing(world, pods=1)
    world.comparison = seen(1000, 1000, 1.0)

    passed = world.reconcile(END)
    assert figures(passed).phase is ShadowPhase.CANARY
    assert passed.status.current_step_index == 0
    assert mirror_of(passed) is None
    assert fx.router_weights(passed) == {"stable": 100, "candidate": 0}

    first = world.reconcile(END + 10)
    assert fx.router_weights(first) == {"stable": 75, "candidate": 25}
    assert first.status.phase is Phase.PAUSED
    assert first.status.current_step_index == 1

    assert fx.router_weights(world.reconcile(END + 39)) == {"stable": 75, "candidate": 25}

    scaling = world.reconcile(END + 40)
    assert scaling.status.current_step_index == 2
    assert fx.router_weights(scaling) == {"stable": 75, "candidate": 25}
    assert fx.replicas_of(scaling, "1.1.0") == 2

    world.ready("1.1.0", 2)
    second = world.reconcile(END + 50)
    assert fx.router_weights(second) == {"stable": 50, "candidate": 50}
    assert fx.replicas_of(second, "1.1.0") == 4
    assert second.status.stable_version == "1.0.0"

    world.ready("1.1.0", 4)
    done = world.reconcile(END + 60)
    assert (done.status.stable_version, done.status.candidate_version) == ("1.1.0", None)
    assert outcomes(done)[-1] == ("1.1.0", Outcome.PROMOTED)
    assert fx.router_weights(done) == {"stable": 100}


def test_without_auto_promotion_a_passed_shadow_waits_paused_for_promote() -> None:
    world = serving_v1(autoPromotion=False)
    shadowing(world)
    world.comparison = seen(1000, 1000, 1.0)

    for seconds in (END, 3600, 86400):
        held = world.reconcile(seconds)
        assert held.status.phase is Phase.PAUSED
        assert fx.condition(held.status, reasons.PAUSED) == ("True", reasons.PAUSE_STEP)
        assert "`kiln promote`" in (held.status.message or "")
        assert figures(held).phase is ShadowPhase.PASSED
        assert weights(held) == (100, 0, 0)
        assert mirror_of(held) is None
        assert (held.status.stable_version, held.status.candidate_version) == ("1.0.0", "1.1.0")
    passed_events = [e.reason for e in world.reconcile(86401).events]
    assert reasons.SHADOW_PASSED not in passed_events

    world.act("promote", "p-1")
    promoted = world.reconcile(86410)

    assert figures(promoted).phase is ShadowPhase.PROMOTING
    assert promoted.status.handled_action == "p-1"
    assert reasons.PROMOTE_REQUESTED in [e.reason for e in promoted.events]
    assert fx.replicas_of(promoted, "1.1.0") == 4

    world.ready("1.1.0", 4)
    done = world.reconcile(86420)
    assert (done.status.stable_version, done.status.candidate_version) == ("1.1.0", None)
    assert outcomes(done)[-1] == ("1.1.0", Outcome.PROMOTED)


# -- analysis and a changing spec ---------------------------------------------------------------


def test_a_failed_shadow_analysis_rolls_the_candidate_back_and_stops_the_mirror() -> None:
    world = serving_v1(analysis={"metrics": ["error-rate"]})
    roll_out(world)
    world.ready("1.1.0", 2)
    world.comparison = seen(100, 100, 1.0)

    (request,) = world.plan(STARTED).measure
    assert request.key == "error-rate@0"
    rolled = world.reconcile(STARTED, BAD)

    assert rolled.status.phase is Phase.ROLLED_BACK
    assert (rolled.status.stable_version, rolled.status.candidate_version) == ("1.0.0", None)
    assert fx.condition(rolled.status, reasons.PROGRESSING) == ("False", reasons.ANALYSIS_FAILED)
    assert outcomes(rolled)[-1] == ("1.1.0", Outcome.ROLLED_BACK)
    assert weights(rolled) == (100, 0, 0)
    assert mirror_of(rolled) is None
    assert fx.router_weights(rolled) == {"stable": 100}
    assert fx.replicas_of(rolled, "1.1.0") == 0


@pytest.mark.parametrize(("version", "candidate"), [("1.2.0", "1.2.0"), ("1.0.0", None)])
def test_a_spec_change_mid_shadow_supersedes_the_shadow(version: str, candidate: str | None) -> None:
    world = serving_v1()
    shadowing(world)
    world.comparison = seen(500, 500, 1.0)
    world.reconcile(60)

    changed = roll_out(world, version, seconds=70)

    assert changed.status.candidate_version == candidate
    assert changed.status.stable_version == "1.0.0"
    assert ("1.1.0", Outcome.SUPERSEDED) in outcomes(changed)
    assert changed.status.rolled_back_versions == []
    assert mirror_of(changed) is None
    assert changed.status.weights.mirror == 0
    assert fx.replicas_of(changed, "1.1.0") is None
    assert "iris-v1-1-0" in fx.deleted(changed)
    assert changed.events[0].reason == reasons.SUPERSEDED
    if candidate is not None:
        assert outcomes(changed)[-1] == (candidate, None)
        fresh = figures(changed)
        assert (fresh.phase, fresh.started, fresh.compared, fresh.agreement) == (ShadowPhase.SHADOWING, None, 0, None)
        assert fx.replicas_of(changed, candidate) == 2


def test_over_a_provider_that_only_mirrors_the_shadow_is_judged_by_its_analysis() -> None:
    world = serving_v1(analysis={"metrics": ["error-rate"]}, autoPromotion=True)
    world.spec["traffic"] = {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "public"}]}}
    roll_out(world)
    world.ready("1.1.0", 2)
    world.comparison = traffic.Comparison(error="a Gateway discards the mirrored answers")

    good = {"error-rate": analysis.Answer(value=0.0)}
    mirrored = world.reconcile(STARTED, good)
    assert mirror_of(mirrored) is not None
    for seconds in range(STARTED + 30, END + 60, 30):
        passed = world.reconcile(seconds, good)
    assert figures(passed).compared == 0
    assert figures(passed).message == "a Gateway discards the mirrored answers"
    assert figures(passed).phase is ShadowPhase.PROMOTING
