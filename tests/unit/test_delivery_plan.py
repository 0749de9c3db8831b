"""The ModelDeployment plan as a machine, driven through reconciles with time injected: the first
deployment, a canary's steps, analysis, promotion and retirement, rollbacks, people's requests,
deadlines, supersession, and a plan that is the same whenever it is replayed."""

from __future__ import annotations

import copy
from typing import Any

import delivery_fixtures as fx
import pytest

from kiln.api import modeldeployment
from kiln.delivery import analysis, plan, reasons, serving

Phase = modeldeployment.ModelDeploymentPhase
Outcome = modeldeployment.RolloutOutcome
V = fx.version_body

GOOD = {"error-rate": analysis.Answer(value=0.001)}
BAD = {"error-rate": analysis.Answer(value=0.2)}
EMPTY = {"error-rate": analysis.Answer()}
DOWN = {"error-rate": analysis.Answer(error="dial tcp 10.0.0.9:9090: connection refused")}
STABLE, CANARY = serving.stable_service(fx.NAME), serving.canary_service(fx.NAME)


def weights(result: plan.Plan) -> tuple[int, int]:
    return result.status.weights.stable, result.status.weights.canary


def outcomes(result: plan.Plan) -> list[tuple[str, Outcome | None]]:
    return [(entry.version, entry.outcome) for entry in result.status.history]


def serving_v1(*, replicas: int = 2, **spec: Any) -> fx.Cluster:
    """Version 1.0.0 healthy behind a canary strategy (fx.CANARY_STEPS unless `spec` says otherwise)."""
    fields = {**fx.canary_spec(), **spec}
    world = fx.cluster(V("1.0.0"), version="1.0.0", replicas=replicas, **fields)
    world.settle(world.reconcile(0))
    assert world.reconcile(1).status.phase is Phase.HEALTHY
    return world


def roll_out(world: fx.Cluster, version: str = "1.1.0", seconds: float = 10, **body: Any) -> plan.Plan:
    """Pin the deployment to a new version (registering it) and reconcile."""
    if not any(v["spec"]["version"] == version for v in world.versions):
        world.versions.append(V(version, **body))
    world.spec["version"] = version
    return world.reconcile(seconds)


def at_analysis(world: fx.Cluster) -> plan.Plan:
    """Roll 1.1.0 out to 20% (from t=10, pods ready at 20) and let the 30s pause run out at t=50."""
    roll_out(world)
    world.ready("1.1.0", 1)
    assert weights(world.reconcile(20)) == (80, 20)
    return world.reconcile(50)


def promoted(world: fx.Cluster) -> plan.Plan:
    """1.1.0 through every step with good answers to the analysis; stable from t=100."""
    at_analysis(world)
    world.reconcile(50, GOOD)
    world.reconcile(80, GOOD)
    world.ready("1.1.0", 2)
    world.endpoints("1.1.0")
    world.reconcile(90)
    result = world.reconcile(100)
    assert result.status.stable_version == "1.1.0"
    return result


def retiring_since(world: fx.Cluster) -> float:
    (retiring,) = world.status.retiring
    return (retiring.since - fx.T0).total_seconds()


# -- the first deployment -----------------------------------------------------------------------


def test_a_first_deployment_goes_straight_to_stable_and_is_ready_once_pods_and_router_are() -> None:
    world = fx.cluster(V("1.0.0"), version="1.0.0", replicas=2)

    first = world.reconcile(0)

    assert (first.status.stable_version, first.status.candidate_version) == ("1.0.0", None)
    assert first.status.phase is Phase.PROGRESSING
    assert fx.condition(first.status, reasons.READY)[0] == "False"
    assert first.status.url == "http://iris.ml.svc"
    assert [e.reason for e in first.events] == [reasons.DEPLOYED]

    world.ready("1.0.0", 2)
    world.router_ready = 0
    assert world.reconcile(5).status.phase is Phase.PROGRESSING

    world.router_ready = 1
    ready = world.reconcile(6)

    assert ready.status.phase is Phase.HEALTHY
    assert fx.condition(ready.status, reasons.READY) == ("True", reasons.HEALTHY)
    assert fx.condition(ready.status, reasons.AVAILABLE) == ("True", reasons.SERVING)
    assert outcomes(ready) == [("1.0.0", Outcome.DEPLOYED)]
    assert ready.status.ready_replicas == 2
    assert ready.status.observed_generation == 1
    types = [c.type for c in ready.status.conditions]
    assert types == [t for t in reasons.CONDITION_ORDER if t in types]


def test_a_first_deployment_that_never_gets_ready_is_degraded_after_the_deadline() -> None:
    world = fx.cluster(V("1.0.0"), version="1.0.0", progressDeadlineSeconds=60)
    world.reconcile(0)

    assert world.reconcile(60).status.phase is Phase.PROGRESSING
    assert world.reconcile(61).status.phase is Phase.DEGRADED


def test_with_no_servable_version_the_deployment_is_pending_and_applies_nothing() -> None:
    world = fx.cluster(V("1.0.0", phase="Validating"), version="1.0.0")

    result = world.reconcile(0)

    assert result.status.phase is Phase.PENDING
    assert fx.condition(result.status, reasons.PROGRESSING) == ("False", reasons.NO_SERVABLE_VERSION)
    assert result.apply == ()


def test_a_first_deployment_applies_the_server_the_variant_services_and_the_router() -> None:
    result = fx.cluster(V("1.0.0"), version="1.0.0", replicas=2).reconcile(0)

    kinds = sorted((obj["kind"], obj["metadata"]["name"]) for obj in result.apply)
    assert kinds == [
        ("Deployment", "iris-router"),
        ("Deployment", "iris-v1-0-0"),
        ("Role", "iris-router"),
        ("RoleBinding", "iris-router"),
        ("Service", "iris"),
        ("Service", "iris-canary"),
        ("Service", "iris-stable"),
        ("Service", "iris-v1-0-0"),
        ("ServiceAccount", "iris-router"),
    ]
    assert fx.router_weights(result) == {"stable": 100}
    server = fx.objects(result, "Deployment")["iris-v1-0-0"]
    assert server["spec"]["replicas"] == 2
    served = fx.env_of(server)["KILN_MODEL_VERSIONS"]
    assert '"version": "1.0.0"' in served
    assert '"status"' not in served
    assert fx.objects(result, "Service")["iris"]["spec"]["ports"][0]["port"] == 80
    assert fx.selected_version(result, STABLE) == fx.selected_version(result, CANARY) == "1.0.0"
    assert fx.router_weights(result) == {"stable": 100}
    assert fx.router_upstreams(result) == {"stable": "iris-v1-0-0"}


def test_every_object_is_owned_by_and_labelled_for_the_deployment() -> None:
    result = fx.cluster(V("1.0.0"), version="1.0.0").reconcile(0)

    for obj in result.apply:
        metadata = obj["metadata"]
        assert metadata["namespace"] == fx.NAMESPACE
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "kiln"
        assert metadata["labels"]["kiln.dev/modeldeployment"] == fx.NAME
        (owner,) = metadata["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "ModelDeployment",
            fx.NAME,
            fx.UID,
            True,
        )


@pytest.mark.parametrize("name", ["iris-v1-0-0", "iris-router"])
def test_pods_meet_the_restricted_profile(name: str) -> None:
    result = fx.cluster(V("1.0.0"), version="1.0.0").reconcile(0)
    pod = fx.objects(result, "Deployment")[name]["spec"]["template"]

    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["spec"]["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_the_server_is_ready_on_the_health_endpoint_and_reads_its_claim_read_only() -> None:
    result = fx.cluster(V("1.0.0"), version="1.0.0").reconcile(0)
    pod = fx.objects(result, "Deployment")["iris-v1-0-0"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {"name": "model-store", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    assert pod["automountServiceAccountToken"] is False


def test_the_server_keeps_verified_artifacts_in_an_emptydir_that_outlives_a_container_restart() -> None:
    result = fx.cluster(V("1.0.0"), version="1.0.0").reconcile(0)
    deployment = fx.objects(result, "Deployment")["iris-v1-0-0"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert {"name": "artifacts", "emptyDir": {}} in pod["volumes"]
    assert {"name": "artifacts", "mountPath": "/var/run/kiln/artifacts"} in container["volumeMounts"]
    assert fx.env_of(deployment)["KILN_ARTIFACT_CACHE"] == "/var/run/kiln/artifacts"


def test_the_server_takes_at_most_spec_server_max_batch_size_rows_per_request() -> None:
    default = fx.cluster(V("1.0.0"), version="1.0.0").reconcile(0)
    small = fx.cluster(V("1.0.0"), version="1.0.0", server={"maxBatchSize": 8}).reconcile(0)

    assert fx.env_of(fx.objects(default, "Deployment")["iris-v1-0-0"])["KILN_MAX_BATCH_SIZE"] == "64"
    assert fx.env_of(fx.objects(small, "Deployment")["iris-v1-0-0"])["KILN_MAX_BATCH_SIZE"] == "8"


# -- a canary -----------------------------------------------------------------------------------


def test_weights_never_move_before_the_candidates_pods_are_ready() -> None:
    world = serving_v1()
    started = roll_out(world)

    assert started.status.candidate_version == "1.1.0"
    assert started.status.current_step_index == 0
    assert [e.reason for e in started.events] == [reasons.ROLLOUT_STARTED]
    assert outcomes(started)[-1] == ("1.1.0", None)
    for seconds in (20, 60, 300):
        waiting = world.reconcile(seconds)
        assert weights(waiting) == (100, 0)
        assert fx.router_weights(waiting) == {"stable": 100, "candidate": 0}

    world.ready("1.1.0", 1)
    moved = world.reconcile(310)

    assert weights(moved) == (80, 20)
    assert fx.router_weights(moved) == {"stable": 80, "candidate": 20}
    assert reasons.WEIGHT_SET in [e.reason for e in moved.events]


def test_a_rollout_waiting_for_pods_says_so_in_its_progressing_condition() -> None:
    world = serving_v1()
    roll_out(world)

    waiting = world.reconcile(20)

    assert "0 of 1 pods of version 1.1.0 ready" in (waiting.status.message or "")
    assert fx.condition(waiting.status, reasons.PROGRESSING) == ("True", reasons.WAITING_FOR_PODS)

    world.ready("1.1.0", 1)
    paused = world.reconcile(21)  # the weight moves and the pause step begins

    assert paused.status.phase is Phase.PAUSED
    assert fx.condition(paused.status, reasons.PROGRESSING) == ("True", reasons.PODS_READY), "no stale wait"


@pytest.mark.parametrize(
    ("replicas", "step_weights", "candidate_replicas"),
    [
        pytest.param(4, [20, 50], [1, 2], id="four-replicas"),
        pytest.param(10, [20, 50], [2, 5], id="ten-replicas"),
        pytest.param(3, [10, 70], [1, 3], id="rounded-up"),
    ],
)
def test_the_candidate_is_scaled_to_its_share_of_replicas(
    replicas: int, step_weights: list[int], candidate_replicas: list[int]
) -> None:
    world = serving_v1(replicas=replicas, **fx.canary_spec(steps=[{"setWeight": w} for w in step_weights]))

    first = roll_out(world)
    assert fx.replicas_of(first, "1.1.0") == candidate_replicas[0]
    assert fx.replicas_of(first, "1.0.0") == replicas

    world.ready("1.1.0", candidate_replicas[0])
    second = world.reconcile(20)
    assert weights(second) == (100 - step_weights[0], step_weights[0])
    assert fx.replicas_of(second, "1.1.0") == candidate_replicas[1]


def test_a_pause_step_holds_until_its_time_has_passed() -> None:
    world = serving_v1()
    roll_out(world)
    world.ready("1.1.0", 1)
    world.reconcile(20)

    for seconds in (21, 35, 49):
        held = world.reconcile(seconds)
        assert held.status.phase is Phase.PAUSED
        assert held.status.current_step_index == 1
        assert fx.condition(held.status, reasons.PAUSED) == ("True", reasons.PAUSE_STEP)
        assert weights(held) == (80, 20)
        assert (held.status.message or "").startswith("paused at step 2 of ")  # counted from 1, as kiln status counts

    over = world.reconcile(50)
    assert over.measure
    assert over.apply == ()


def test_analysis_asks_for_measurements_before_anything_is_applied() -> None:
    world = serving_v1()

    asking = at_analysis(world)

    (request,) = asking.measure
    assert (request.key, request.provider, request.address) == ("error-rate@2", "prometheus", fx.PROMETHEUS)
    assert request.expression == 'sum(rate(errors{model="iris",version="1.1.0"}[1m]))'
    assert (asking.apply, asking.events, fx.deleted(asking)) == ((), (), ())


def test_analysis_folds_the_answers_and_measures_again_after_the_interval() -> None:
    world = serving_v1()
    at_analysis(world)

    first = world.reconcile(50, GOOD)
    (result,) = first.status.analysis
    assert (result.metric, result.step, result.successful) == ("error-rate", 2, 1)
    assert first.status.phase is Phase.PROGRESSING
    assert first.measure == ()

    assert world.plan(79).measure == ()
    assert world.plan(80).measure


def test_a_successful_canary_is_promoted_once_the_candidate_runs_at_full_size() -> None:
    world = serving_v1()
    at_analysis(world)
    world.reconcile(50, GOOD)

    past_analysis = world.reconcile(80, GOOD)
    assert weights(past_analysis) == (50, 50)
    assert past_analysis.status.current_step_index == 4
    assert fx.replicas_of(past_analysis, "1.1.0") == 2
    assert fx.router_upstreams(past_analysis) == {
        "stable": "iris-v1-0-0",
        "candidate": "iris-v1-1-0",
    }
    assert world.reconcile(85).status.stable_version == "1.0.0"

    world.ready("1.1.0", 2)
    world.endpoints("1.1.0")
    done = world.reconcile(90)

    assert (done.status.stable_version, done.status.candidate_version) == ("1.1.0", None)
    assert done.status.phase is Phase.HEALTHY
    assert weights(done) == (100, 0)
    assert fx.router_weights(done) == {"stable": 100}
    assert fx.router_upstreams(done) == {"stable": "iris-v1-1-0"}
    assert fx.selected_version(done, STABLE) == "1.1.0"
    assert outcomes(done)[-1] == ("1.1.0", Outcome.PROMOTED)
    assert reasons.PROMOTED in [e.reason for e in done.events]
    assert [(r.version, r.since) for r in done.status.retiring] == [("1.0.0", fx.at(90))]
    assert fx.replicas_of(done, "1.0.0") == 2


def test_the_old_version_retires_after_the_scale_down_delay() -> None:
    world = serving_v1()
    promoted(world)
    since = retiring_since(world)

    kept = world.reconcile(since + 29)
    assert fx.replicas_of(kept, "1.0.0") == 2
    assert fx.deleted(kept) == ()

    retired = world.reconcile(since + 30)
    assert retired.status.retiring == []
    assert fx.replicas_of(retired, "1.0.0") is None
    assert fx.deleted(retired) == ("iris-v1-0-0",)
    assert reasons.RETIRED in [e.reason for e in retired.events]


def test_without_a_strategy_a_new_version_takes_all_traffic_once_ready() -> None:
    world = fx.cluster(V("1.0.0"), version="1.0.0", replicas=2)
    world.settle(world.reconcile(0))
    world.reconcile(1)

    started = roll_out(world)
    assert fx.replicas_of(started, "1.1.0") == 2
    assert weights(started) == (100, 0)

    world.ready("1.1.0", 2)
    world.reconcile(20)
    world.endpoints("1.1.0")
    done = world.reconcile(30)
    assert (done.status.stable_version, done.status.phase) == ("1.1.0", Phase.HEALTHY)


def test_background_analysis_runs_from_its_starting_step_and_its_failure_rolls_back() -> None:
    spec = fx.canary_spec(steps=[{"setWeight": 20}, {"pause": {}}], analysis={"startingStep": 1})
    world = serving_v1(**spec)
    roll_out(world)
    world.ready("1.1.0", 1)

    assert world.plan(20).measure == ()
    world.reconcile(20)
    (request,) = world.plan(21).measure
    assert request.key == "error-rate@background"

    failed = world.reconcile(21, BAD)
    assert failed.status.phase is Phase.ROLLED_BACK
    assert "background analysis failed" in (failed.status.message or "")


# -- rollback -----------------------------------------------------------------------------------


def test_a_failed_analysis_rolls_back_at_once() -> None:
    world = serving_v1()
    at_analysis(world)

    rolled = world.reconcile(50, BAD)

    assert weights(rolled) == (100, 0)
    assert fx.router_weights(rolled) == {"stable": 100}
    assert fx.replicas_of(rolled, "1.1.0") == 0
    assert fx.selected_version(rolled, STABLE) == "1.0.0"
    assert rolled.status.phase is Phase.ROLLED_BACK
    assert (rolled.status.stable_version, rolled.status.candidate_version) == ("1.0.0", None)
    message = rolled.status.message or ""
    assert "error-rate" in message
    assert "value 0.2" in message
    assert "failureCondition 'result > 0.05' held" in message
    warnings = [e for e in rolled.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == [reasons.ANALYSIS_FAILED]
    assert outcomes(rolled)[-1] == ("1.1.0", Outcome.ROLLED_BACK)
    assert rolled.status.rolled_back_versions == ["1.1.0"]
    assert fx.condition(rolled.status, reasons.READY)[0] == "False"


def test_a_rolled_back_version_is_not_chosen_again_until_the_spec_selects_differently() -> None:
    world = serving_v1()
    at_analysis(world)
    world.reconcile(50, BAD)

    for seconds in (60, 600, 6000):
        later = world.reconcile(seconds)
        assert later.status.candidate_version is None
        assert later.status.phase is Phase.ROLLED_BACK
        assert weights(later) == (100, 0)

    del world.spec["version"]
    world.spec["versionPolicy"] = "LatestValidated"
    again = world.reconcile(6010)

    assert again.status.rolled_back_versions == []
    assert again.status.candidate_version == "1.1.0"


def test_a_candidate_whose_pods_never_get_ready_is_rolled_back_at_the_progress_deadline() -> None:
    world = serving_v1(progressDeadlineSeconds=60)
    roll_out(world)

    assert world.reconcile(70).status.candidate_version == "1.1.0"
    rolled = world.reconcile(71)

    assert rolled.status.phase is Phase.ROLLED_BACK
    assert fx.condition(rolled.status, reasons.PROGRESSING) == ("False", reasons.PROGRESS_DEADLINE_EXCEEDED)
    assert "0 of 1 pods of version 1.1.0" in (rolled.status.message or "")
    assert outcomes(rolled)[-1] == ("1.1.0", Outcome.ROLLED_BACK)
    assert fx.replicas_of(rolled, "1.1.0") == 0


def test_a_candidate_with_different_inputs_is_refused_before_any_traffic_moves() -> None:
    world = serving_v1()

    refused = roll_out(world, inputs=[{"name": "features", "datatype": "FP64", "shape": [-1, 5]}])

    assert refused.status.phase is Phase.DEGRADED
    assert refused.status.candidate_version is None
    assert weights(refused) == (100, 0)
    assert outcomes(refused)[-1] == ("1.1.0", Outcome.REFUSED)
    assert fx.condition(refused.status, reasons.PROGRESSING) == ("False", reasons.INCOMPATIBLE_SIGNATURE)
    assert [e.type for e in refused.events] == ["Warning"]
    assert world.reconcile(20).status.phase is Phase.DEGRADED


# -- holding: provider errors, inconclusive answers, pauses --------------------------------------


def test_provider_errors_pause_the_rollout_until_the_provider_answers_again() -> None:
    world = serving_v1(**fx.canary_spec(metrics=[{**fx.ERROR_RATE, "consecutiveErrorLimit": 1}]))
    at_analysis(world)
    for index in range(2):
        held = world.reconcile(50 + 30 * index, DOWN)
    assert held.status.phase is Phase.PAUSED
    assert fx.condition(held.status, reasons.PAUSED) == ("True", reasons.ANALYSIS_INCONCLUSIVE)

    for seconds in (200, 3600):
        still_down = world.reconcile(seconds, DOWN)
        assert still_down.status.phase is Phase.PAUSED
        assert weights(still_down) == (80, 20)
        assert still_down.status.stable_version == "1.0.0"

    back = world.reconcile(3700, GOOD)
    (result,) = back.status.analysis
    assert result.phase is modeldeployment.AnalysisPhase.RUNNING
    assert (result.successful, result.consecutive_errors) == (1, 0)
    assert back.status.phase is Phase.PROGRESSING
    assert back.status.stable_version == "1.0.0"


def test_inconclusive_answers_pause_and_never_promote() -> None:
    world = serving_v1(**fx.canary_spec(metrics=[{**fx.ERROR_RATE, "inconclusiveLimit": 1}]))
    at_analysis(world)
    for index in range(2):
        held = world.reconcile(50 + 30 * index, EMPTY)

    assert held.status.phase is Phase.PAUSED
    assert fx.condition(held.status, reasons.PAUSED) == ("True", reasons.ANALYSIS_INCONCLUSIVE)
    for seconds in (200, 3600, 86400 * 7):
        later = world.reconcile(seconds, GOOD)
        assert later.measure == ()
        assert later.status.phase is Phase.PAUSED
        assert (later.status.candidate_version, later.status.current_step_index) == ("1.1.0", 2)
        assert weights(later) == (80, 20)
        assert later.status.stable_version == "1.0.0"


def test_resume_restarts_an_inconclusive_analysis() -> None:
    world = serving_v1(**fx.canary_spec(metrics=[{**fx.ERROR_RATE, "consecutiveErrorLimit": 0}]))
    at_analysis(world)
    assert world.reconcile(50, DOWN).status.phase is Phase.PAUSED

    world.act("resume", "r-1")
    assert world.plan(100).measure
    resumed = world.reconcile(100, GOOD)

    (result,) = resumed.status.analysis
    assert (result.successful, result.errors, result.phase) == (1, 0, modeldeployment.AnalysisPhase.RUNNING)
    assert resumed.status.handled_action == "r-1"
    assert resumed.status.phase is Phase.PROGRESSING
    assert weights(world.reconcile(130, GOOD)) == (50, 50)


def test_spec_paused_holds_the_rollout_until_it_is_unset() -> None:
    world = serving_v1(paused=True)
    roll_out(world)
    world.ready("1.1.0", 1)

    for seconds in (20, 600):
        held = world.reconcile(seconds)
        assert held.status.phase is Phase.PAUSED
        assert fx.condition(held.status, reasons.PAUSED) == ("True", reasons.PAUSED_BY_SPEC)
        assert weights(held) == (100, 0)

    world.spec["paused"] = False
    assert weights(world.reconcile(610)) == (80, 20)


INDEFINITE = fx.canary_spec(steps=[{"setWeight": 20}, {"pause": {}}, {"pause": {}}, {"setWeight": 100}])


def paused_indefinitely() -> fx.Cluster:
    world = serving_v1(**INDEFINITE)
    roll_out(world)
    world.ready("1.1.0", 1)
    assert world.reconcile(20).status.current_step_index == 1
    return world


def test_an_indefinite_pause_step_waits_for_resume() -> None:
    world = paused_indefinitely()

    assert world.reconcile(86400).status.current_step_index == 1
    world.act("resume", "r-1")
    resumed = world.reconcile(86410)

    assert resumed.status.current_step_index == 2
    assert reasons.RESUMED in [e.reason for e in resumed.events]


def test_promote_skips_one_step_and_an_action_is_handled_once() -> None:
    world = paused_indefinitely()

    world.act("promote", "p-1")
    skipped = world.reconcile(30)
    assert skipped.status.current_step_index == 2
    assert skipped.status.handled_action == "p-1"
    assert reasons.PROMOTE_REQUESTED in [e.reason for e in skipped.events]

    again = world.reconcile(40)
    assert again.status.current_step_index == 2
    assert reasons.PROMOTE_REQUESTED not in [e.reason for e in again.events]

    world.act("promote", "p-2")
    assert world.reconcile(50).status.current_step_index == 3


def test_promote_full_skips_every_remaining_step() -> None:
    world = paused_indefinitely()

    world.act("promote-full", "p-1")
    result = world.reconcile(30)

    assert result.status.direct_promotion
    assert fx.replicas_of(result, "1.1.0") == 2
    assert fx.selected_version(result, CANARY) == "1.1.0"
    world.ready("1.1.0", 2)
    assert world.reconcile(40).status.stable_version == "1.1.0"


def test_abort_rolls_the_candidate_back() -> None:
    world = paused_indefinitely()

    world.act("abort", "a-1")
    aborted = world.reconcile(30)

    assert aborted.status.phase is Phase.ROLLED_BACK
    assert weights(aborted) == (100, 0)
    assert outcomes(aborted)[-1] == ("1.1.0", Outcome.ABORTED)
    assert aborted.status.rolled_back_versions == ["1.1.0"]
    assert "`kiln abort` by ada" in (aborted.status.message or "")


def test_an_action_with_no_rollout_in_progress_is_ignored() -> None:
    world = serving_v1()

    world.act("promote", "p-1")
    ignored = world.reconcile(10)

    assert [e.reason for e in ignored.events] == [reasons.ACTION_IGNORED]
    assert ignored.status.handled_action == "p-1"
    assert ignored.status.phase is Phase.HEALTHY


def test_rollback_after_a_promotion_switches_back_at_once_while_the_old_version_retires() -> None:
    world = serving_v1()
    promoted(world)

    world.act("rollback", "b-1")
    back = world.reconcile(110)

    assert (back.status.stable_version, back.status.candidate_version) == ("1.0.0", None)
    assert back.status.phase is Phase.ROLLED_BACK
    assert weights(back) == (100, 0)
    assert fx.selected_version(back, STABLE) == "1.0.0"
    assert fx.replicas_of(back, "1.0.0") == 2
    assert fx.replicas_of(back, "1.1.0") == 0
    assert back.status.rolled_back_versions == ["1.1.0"]
    assert back.status.retiring == []
    assert outcomes(back)[-1] == ("1.1.0", Outcome.ROLLED_BACK)
    assert world.reconcile(500).status.stable_version == "1.0.0"


def test_rollback_after_the_old_version_retired_rolls_it_out_again() -> None:
    world = serving_v1()
    promoted(world)
    world.settle(world.reconcile(130))

    world.act("rollback", "b-1")
    back = world.reconcile(140)

    assert (back.status.stable_version, back.status.candidate_version) == ("1.1.0", "1.0.0")
    assert fx.replicas_of(back, "1.0.0") == 2


def test_retry_clears_the_rolled_back_versions_and_rolls_out_again() -> None:
    world = serving_v1()
    at_analysis(world)
    world.reconcile(50, BAD)

    world.act("retry", "t-1")
    retried = world.reconcile(60)

    assert retried.status.rolled_back_versions == []
    assert retried.status.candidate_version == "1.1.0"
    assert reasons.RETRY_REQUESTED in [e.reason for e in retried.events]


# -- a changing spec ----------------------------------------------------------------------------


def test_a_new_version_mid_rollout_supersedes_the_candidate() -> None:
    world = serving_v1()
    roll_out(world)
    world.ready("1.1.0", 1)
    world.reconcile(20)

    replaced = roll_out(world, "1.2.0", seconds=30)

    assert replaced.status.candidate_version == "1.2.0"
    assert replaced.status.current_step_index == 0
    assert weights(replaced) == (100, 0)
    assert outcomes(replaced)[-2:] == [("1.1.0", Outcome.SUPERSEDED), ("1.2.0", None)]
    assert replaced.status.rolled_back_versions == []
    assert fx.replicas_of(replaced, "1.2.0") == 1
    assert [e.reason for e in replaced.events] == [reasons.SUPERSEDED, reasons.ROLLOUT_STARTED]


def test_going_back_to_the_stable_version_stops_the_rollout_without_a_rollback() -> None:
    world = serving_v1()
    roll_out(world)
    world.ready("1.1.0", 1)
    world.reconcile(20)

    world.spec["version"] = "1.0.0"
    stopped = world.reconcile(30)

    assert (stopped.status.stable_version, stopped.status.candidate_version) == ("1.0.0", None)
    assert stopped.status.phase is Phase.HEALTHY
    assert weights(stopped) == (100, 0)
    assert stopped.status.rolled_back_versions == []
    assert outcomes(stopped)[-1] == ("1.1.0", Outcome.SUPERSEDED)
    assert fx.replicas_of(stopped, "1.1.0") is None
    assert fx.deleted(stopped) == ("iris-v1-1-0",)


def test_fault_injection_reaches_only_that_versions_pods() -> None:
    world = serving_v1()
    fault = '{"errorRate": 0.5}'

    result = roll_out(world, annotations={"kiln.dev/fault-injection": fault})

    server = fx.objects(result, "Deployment")
    assert fx.env_of(server["iris-v1-1-0"])["KILN_FAULT_INJECTION"] == fault
    assert "KILN_FAULT_INJECTION" not in fx.env_of(server["iris-v1-0-0"])


# -- replay -------------------------------------------------------------------------------------


def waiting(world: fx.Cluster) -> float:
    roll_out(world)
    return 15


def pausing(world: fx.Cluster) -> float:
    roll_out(world)
    world.ready("1.1.0", 1)
    world.reconcile(20)
    return 25


def analysing(world: fx.Cluster) -> float:
    at_analysis(world)
    world.reconcile(50, GOOD)
    return 60


def promoting(world: fx.Cluster) -> float:
    analysing(world)
    world.reconcile(80, GOOD)
    world.ready("1.1.0", 2)
    return 90


@pytest.mark.parametrize("moment", [waiting, pausing, analysing, promoting])
def test_a_restarted_operator_plans_the_same_objects_and_weights(moment: Any) -> None:
    world = serving_v1()
    seconds = moment(world)

    restarted = fx.Cluster(copy.deepcopy(world.body), copy.deepcopy(world.versions), dict(world.deployments))
    first = world.plan(seconds)
    assert restarted.plan(seconds) == first

    world.reconcile(seconds)
    replayed = world.plan(seconds)
    assert replayed.apply == first.apply
    assert replayed.status.weights == first.status.weights
    assert fx.deleted(replayed) == fx.deleted(first)


def test_step_hands_the_plans_status_to_the_next_reconcile() -> None:
    world = serving_v1()
    world.versions.append(V("1.1.0"))
    world.spec["version"] = "1.1.0"

    first, observed = fx.step(world.observed(), fx.at(10))

    assert observed.status == first.status
    assert observed.status.candidate_version == "1.1.0"
    second, _ = fx.step(observed, fx.at(20))
    assert second.status.candidate_version == "1.1.0"
    assert second.status.history == first.status.history


# -- what is not there yet ----------------------------------------------------------------------


def test_with_provider_replicas_the_pod_counts_are_the_split_and_no_router_runs() -> None:
    world = serving_v1(
        replicas=3, traffic={"provider": "replicas"}, **fx.canary_spec(steps=[{"setWeight": 10}, {"pause": {}}])
    )
    first = roll_out(world)
    assert (fx.replicas_of(first, "1.0.0"), fx.replicas_of(first, "1.1.0")) == (3, 1)

    world.ready("1.1.0", 1)
    second = world.reconcile(20)
    assert weights(second) == (67, 33)
    assert "1 of 3 serving pods are the candidate's, so it gets 33% of traffic where 10% was asked" in (
        second.status.message or ""
    )
    assert (fx.replicas_of(second, "1.0.0"), fx.replicas_of(second, "1.1.0")) == (2, 1)
    front = fx.objects(second, "Service")["iris"]
    assert front["spec"]["selector"] == {serving.DEPLOYMENT_LABEL: "iris", serving.COMPONENT_LABEL: serving.SERVER}
    assert set(fx.objects(second, "Deployment")) == {"iris-v1-0-0", "iris-v1-1-0"}
    assert fx.objects(second, "ConfigMap") == {}
    assert fx.objects(second, "Role") == {}


def test_with_provider_gateway_api_no_router_runs_and_the_url_is_the_routes_hostname() -> None:
    traffic = {"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": "shop", "hostnames": ["iris.example.com"]}}
    world = fx.cluster(V("1.0.0"), version="1.0.0", traffic=traffic)
    world.router_ready = 0
    world.settle(world.reconcile(0))
    result = world.reconcile(1)

    assert result.status.phase is Phase.HEALTHY
    assert result.status.url == "http://iris.example.com"
    assert "iris" not in fx.objects(result, "Service")
    assert set(fx.objects(result, "Deployment")) == {"iris-v1-0-0"}


def test_with_provider_replicas_promote_full_brings_the_candidate_to_full_size_and_finishes() -> None:
    world = serving_v1(
        replicas=4, traffic={"provider": "replicas"}, **fx.canary_spec(steps=[{"setWeight": 25}, {"pause": {}}])
    )
    roll_out(world)
    world.ready("1.1.0", 1)
    assert world.reconcile(20).status.current_step_index == 1

    world.act("promote-full", "p-1")
    promoting = world.reconcile(30)
    assert fx.replicas_of(promoting, "1.1.0") == 4
    world.ready("1.1.0", 4)
    done = world.reconcile(40)
    assert done.status.stable_version == "1.1.0"
    assert done.status.candidate_version is None


# -- autoscaling -----------------------------------------------------------------------------------

AUTOSCALING = {"minReplicas": 4, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70}


def autoscalers(result: plan.Plan) -> dict[str, tuple[int, int]]:
    return {
        name: (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
        for name, hpa in fx.objects(result, "HorizontalPodAutoscaler").items()
    }


def test_an_autoscaled_version_gets_an_autoscaler_at_min_replicas_that_scales_its_deployment() -> None:
    world = serving_v1(autoscaling=AUTOSCALING)

    steady = world.plan(2)

    stable = serving.deployment_name(fx.NAME, "1.0.0")
    assert autoscalers(steady) == {stable: (4, 10)}  # minReplicas is the full size, not spec.replicas
    hpa = fx.objects(steady, "HorizontalPodAutoscaler")[stable]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": stable}
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]
    assert fx.replicas_of(steady, "1.0.0") == 4
    world.ready("1.0.0", 7)  # the autoscaler scaled it up under load
    assert fx.replicas_of(world.plan(3), "1.0.0") == 7, "the operator does not undo the autoscaler"


def test_a_canary_under_autoscaling_gets_its_share_of_min_replicas_as_its_floor() -> None:
    world = serving_v1(autoscaling=AUTOSCALING | {"targetRequestsPerSecond": 25.0})
    world.settle(world.plan(2))

    first = roll_out(world)

    candidate = serving.deployment_name(fx.NAME, "1.1.0")
    assert autoscalers(first)[candidate] == (1, 10)  # 20% of 4 pods, rounded up
    metrics = fx.objects(first, "HorizontalPodAutoscaler")[candidate]["spec"]["metrics"]
    assert metrics[1] == {
        "type": "Pods",
        "pods": {
            "metric": {"name": serving.REQUESTS_PER_SECOND_METRIC},
            "target": {"type": "AverageValue", "averageValue": "25"},
        },
    }
    stable = serving.deployment_name(fx.NAME, "1.0.0")
    assert autoscalers(first)[stable] == (4, 10)  # stable keeps its full floor beside the canary


def test_a_rolled_back_candidate_loses_its_autoscaler_so_nothing_scales_it_up_again() -> None:
    world = serving_v1(autoscaling=AUTOSCALING)
    world.settle(world.plan(2))
    world.settle(roll_out(world))
    candidate = serving.deployment_name(fx.NAME, "1.1.0")
    assert candidate in world.autoscalers

    world.act("abort", "a-1")
    aborted = world.reconcile(15)

    assert candidate in aborted.unscale
    assert fx.replicas_of(aborted, "1.1.0") == 0
    assert candidate not in autoscalers(aborted)


def test_without_autoscaling_every_autoscaler_left_is_deleted_and_spec_replicas_rules() -> None:
    world = serving_v1(autoscaling=AUTOSCALING)
    world.settle(world.plan(2))
    del world.spec["autoscaling"]

    fixed = world.plan(3)

    assert fixed.unscale == (serving.deployment_name(fx.NAME, "1.0.0"),)
    assert autoscalers(fixed) == {}
    assert fx.replicas_of(fixed, "1.0.0") == 2
