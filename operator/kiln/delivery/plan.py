"""A ModelDeployment's plan: from what was observed and the time, the status and the serving objects.

In order: handle a person's request (the rollout-action annotation, once per id), choose the
version the policy wants, start, move or end a rollout (`kiln.delivery.canary`), retire former
stable versions whose delay has run out, conclude the phase and conditions, and derive the
objects from the resulting status (`kiln.delivery.serving`). A plan that wants measurements
(`Plan.measure`) is not acted on: the controller takes them and plans again with the answers.
"""

from __future__ import annotations

import dataclasses
import datetime

from kiln.api import base, events, modeldeployment
from kiln.delivery import analysis, bluegreen, canary, moves, reasons, rollout, serving, shadow, traffic, versions

Phase = modeldeployment.ModelDeploymentPhase
Outcome = modeldeployment.RolloutOutcome
Action = modeldeployment.RolloutActionName
Object = serving.Object
Status = modeldeployment.ModelDeploymentStatus
TRUE, FALSE = base.ConditionStatus.TRUE, base.ConditionStatus.FALSE
_ROUTER_PROVIDER = modeldeployment.TrafficProviderName.ROUTER
_REPLICAS_PROVIDER = modeldeployment.TrafficProviderName.REPLICAS
_GATEWAY_API_PROVIDER = modeldeployment.TrafficProviderName.GATEWAY_API


@dataclasses.dataclass(frozen=True)
class Plan:
    status: modeldeployment.ModelDeploymentStatus
    traffic: traffic.Split | None = None
    """The split to put in force through the traffic provider, before anything else is applied."""
    apply: tuple[Object, ...] = ()
    """Objects to create or merge into the existing ones."""
    retire: tuple[str, ...] = ()
    """The Deployments, and the Services of the same names, of versions no longer live."""
    unscale: tuple[str, ...] = ()
    """HorizontalPodAutoscalers to delete: of versions retired or at zero pods, or every one once
    spec.autoscaling is gone."""
    events: tuple[events.Event, ...] = ()
    measure: tuple[analysis.MeasurementRequest, ...] = ()
    """Take these measurements and plan again with the answers before acting."""


def _unsupported_traffic(spec: modeldeployment.ModelDeploymentSpec) -> str | None:
    if spec.traffic.provider not in traffic.CAPABILITIES:
        return f"traffic provider {spec.traffic.provider.value} is not available; use provider router"
    return None


def _promoting(spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus) -> bool:
    """Whether the candidate is being brought to full size: past its last step, or sent straight there."""
    return status.candidate_version is not None and (status.direct_promotion or canary.promoting(spec, status))


def _replica_counts(
    spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus, observed: rollout.Observed
) -> tuple[int, int]:
    """With provider replicas, (stable, candidate) pods: the split of spec.replicas for the weight in
    force; the candidate scaled ahead for the next setWeight, as with the router; at promotion the
    candidate at full size beside stable's pods as they were."""
    asked = status.weights.canary
    stable, _ = serving.replica_split(spec.full_size, asked)
    if status.candidate_version is None:
        return spec.full_size, 0
    if _promoting(spec, status):
        found = observed.deployments.get(serving.version_label(status.stable_version or ""))
        return (found.replicas if found is not None else stable), spec.full_size
    steps = canary.steps_of(spec)
    index = status.current_step_index or 0
    upcoming = steps[index].set_weight if index < len(steps) else None
    return stable, serving.replica_split(spec.full_size, max(asked, upcoming or 0))[1]


def _achieved_weights(draft: rollout.Draft) -> None:
    """With provider replicas, status.weights is the share the pods really get, and the message says so."""
    status, spec = draft.status, draft.spec
    if spec.traffic.provider is not _REPLICAS_PROVIDER or status.candidate_version is None:
        return
    asked = status.weights.canary
    if _promoting(spec, status):
        stable, candidate = _replica_counts(spec, status, draft.observed)
    else:
        stable, candidate = serving.replica_split(spec.full_size, asked)
    achieved = serving.achieved_weight(stable, candidate)
    status.weights = modeldeployment.Weights(stable=100 - achieved, canary=achieved, mirror=0)
    if achieved != asked:
        note = (
            f"traffic provider replicas: {candidate} of {stable + candidate} serving pods are the candidate's, "
            f"so it gets {achieved}% of traffic where {asked}% was asked"
        )
        status.message = f"{status.message}; {note}" if status.message else note


def _front(owner: serving.Owner, spec: modeldeployment.ModelDeploymentSpec, settings: serving.Settings) -> list[Object]:
    """What clients reach the versions through, besides the traffic provider's own object."""
    if spec.traffic.provider is _REPLICAS_PROVIDER:
        return [serving.front_service(owner, spec)]
    if spec.traffic.provider is _ROUTER_PROVIDER:
        return serving.router_objects(owner, spec, settings)
    return []  # gatewayAPI: the HTTPRoute sends to the version Services


def _available(
    spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus, observed: rollout.Observed
) -> bool:
    """Whether stable answers: all the pods it should have are ready, and the router when there is one."""
    needed = spec.full_size
    if spec.traffic.provider is _REPLICAS_PROVIDER:
        needed = _replica_counts(spec, status, observed)[0]
    available = status.stable_version is not None and observed.ready(status.stable_version) >= needed
    return available and (observed.router_ready > 0 or spec.traffic.provider is not _ROUTER_PROVIDER)


def _url(owner: serving.Owner, spec: modeldeployment.ModelDeploymentSpec) -> str | None:
    if spec.traffic.provider is _GATEWAY_API_PROVIDER:
        hostnames = spec.traffic.gateway_api.hostnames if spec.traffic.gateway_api else []
        return f"http://{hostnames[0]}" if hostnames else None
    return serving.url(owner)


def _previous_stable(status: modeldeployment.ModelDeploymentStatus) -> str | None:
    promoted = [
        entry
        for entry in status.history
        if entry.outcome is Outcome.PROMOTED and entry.version == status.stable_version
    ]
    return promoted[-1].previous_version if promoted else None


def _roll_back_to_previous(draft: rollout.Draft, who: str) -> None:
    status = draft.status
    previous, current = _previous_stable(status), status.stable_version
    if previous is None or current is None:
        draft.event(reasons.ACTION_IGNORED, f"`kiln rollback` by {who}: there is no previous stable version")
        return
    message = f"`kiln rollback` by {who}: version {current} rolled back to {previous}"
    status.rolled_back_versions = [*[v for v in status.rolled_back_versions if v != current], current]
    status.rolled_back_for = versions.selection(draft.spec)
    draft.record(
        modeldeployment.RolloutRecord(
            version=current,
            previous_version=previous,
            start_time=draft.now,
            end_time=draft.now,
            outcome=Outcome.ROLLED_BACK,
            reason=message,
        )
    )
    draft.event(reasons.ROLLED_BACK, message, warning=True)
    running = draft.observed.ready(previous) >= draft.spec.full_size
    if running:  # still up within its scale-down delay: switch at once
        status.stable_version = previous
        status.retiring = [r for r in status.retiring if r.version != previous]
        draft.set_weights(100, 0)
        draft.set_phase(Phase.ROLLED_BACK, message)
        draft.condition(reasons.PROGRESSING, FALSE, reasons.ROLLED_BACK, message)
        return
    draft.begin(previous, message, direct=True)


def _reset_held_analysis(draft: rollout.Draft) -> None:
    """Resume after an inconclusive analysis: that analysis starts again from scratch."""
    draft.status.analysis = [
        result for result in draft.status.analysis if result.phase is not modeldeployment.AnalysisPhase.INCONCLUSIVE
    ]


def _handle_action(draft: rollout.Draft) -> None:
    action = draft.observed.action
    if action is None or action.id == draft.status.handled_action:
        return
    draft.status.handled_action = action.id
    who = action.user or "someone"
    status = draft.status
    steps = canary.steps_of(draft.spec, status)
    if action.action is Action.RETRY:
        status.rolled_back_versions = []
        draft.event(reasons.RETRY_REQUESTED, f"`kiln retry` by {who}: rolled-back versions may be chosen again")
        return
    if action.action is Action.ROLLBACK and status.candidate_version is None:
        _roll_back_to_previous(draft, who)
        return
    if status.candidate_version is None:
        draft.event(reasons.ACTION_IGNORED, f"`kiln {action.action.value}` by {who}: no rollout is in progress")
        return
    if action.action in (Action.ABORT, Action.ROLLBACK):
        draft.roll_back(Outcome.ABORTED, reasons.ABORTED, f"`kiln {action.action.value}` by {who}")
    elif action.action is Action.PROMOTE_FULL:
        status.direct_promotion = True
        status.step_start_time = draft.now
        draft.event(reasons.PROMOTE_REQUESTED, f"`kiln promote --full` by {who}: the remaining steps are skipped")
    elif (
        action.action is Action.PROMOTE and draft.spec.strategy.shadow and canary.canary_of(draft.spec, status) is None
    ):
        shadow.go_live(draft)
        draft.event(reasons.PROMOTE_REQUESTED, f"`kiln promote` by {who}: the shadow period is cut short")
    elif action.action is Action.PROMOTE:
        _reset_held_analysis(draft)
        draft.next_step()
        draft.event(
            reasons.PROMOTE_REQUESTED, f"`kiln promote` by {who}: step {(status.current_step_index or 1) - 1} skipped"
        )
    elif action.action is Action.RESUME:
        index = status.current_step_index or 0
        step = steps[index] if index < len(steps) else None
        if step is not None and step.pause is not None and step.pause.duration is None:
            draft.next_step()
        _reset_held_analysis(draft)
        draft.event(reasons.RESUMED, f"`kiln resume` by {who}")


def _supersede(draft: rollout.Draft, reason: str) -> None:
    candidate = draft.status.candidate_version or ""
    draft.set_weights(100, 0)
    draft.finish_record(candidate, Outcome.SUPERSEDED, reason)
    draft.end_rollout()
    draft.event(reasons.SUPERSEDED, f"the rollout of version {candidate} stopped: {reason}")


def _start(draft: rollout.Draft, choice: versions.Choice) -> None:
    """Begin rolling the chosen version out over stable, unless it cannot take stable's requests."""
    chosen = choice.chosen
    if chosen is None:
        return
    refusal = versions.incompatibility(draft.observed.find(draft.status.stable_version), chosen)
    if refusal is None:
        draft.begin(chosen.version, choice.reason)
        return
    status = draft.status
    status.rolled_back_versions = [*status.rolled_back_versions, chosen.version]
    status.rolled_back_for = versions.selection(draft.spec)
    draft.record(
        modeldeployment.RolloutRecord(
            version=chosen.version,
            previous_version=status.stable_version,
            start_time=draft.now,
            end_time=draft.now,
            outcome=Outcome.REFUSED,
            reason=refusal,
        )
    )
    message = f"version {chosen.version} refused before any traffic moved: {refusal}"
    draft.set_phase(Phase.DEGRADED, message)
    draft.condition(reasons.PROGRESSING, FALSE, reasons.INCOMPATIBLE_SIGNATURE, message)
    draft.event(reasons.INCOMPATIBLE_SIGNATURE, message, warning=True)


def _first_deployment(draft: rollout.Draft, choice: versions.Choice) -> None:
    if choice.chosen is None:
        draft.set_phase(Phase.PENDING, choice.reason)
        draft.condition(reasons.PROGRESSING, FALSE, reasons.NO_SERVABLE_VERSION, choice.reason)
        return
    version = choice.chosen.version
    draft.status.stable_version = version
    draft.set_weights(100, 0)
    draft.record(modeldeployment.RolloutRecord(version=version, start_time=draft.now))
    draft.event(reasons.DEPLOYED, f"serving version {version}: {choice.reason}")


def _steer(draft: rollout.Draft) -> None:
    """Start, continue, replace or end the rollout the chosen version calls for."""
    status = draft.status
    if status.rolled_back_for is not None and status.rolled_back_for != versions.selection(draft.spec):
        status.rolled_back_versions, status.rolled_back_for = [], None
    _handle_action(draft)
    choice = versions.choose(draft.spec, draft.observed.model_versions, status.rolled_back_versions)
    if status.stable_version is None:
        _first_deployment(draft, choice)
        return
    chosen = choice.chosen.version if choice.chosen else None
    candidate = status.candidate_version
    if candidate is not None and chosen != candidate:
        if (
            chosen is None
            and draft.observed.find(candidate) is not None
            and candidate not in status.rolled_back_versions
        ):
            pass  # the policy lost sight of it (a stage moved, say) but it is still servable: carry on
        else:
            _supersede(draft, choice.reason if chosen is None else f"{choice.reason}, not {candidate}")
            candidate = None
    if candidate is None and chosen is not None and chosen != status.stable_version:
        _start(draft, choice)
    if status.candidate_version is not None:
        _progress(draft)


def _progress(draft: rollout.Draft) -> None:
    """Move the rollout by the strategy's own machine."""
    spec, status = draft.spec, draft.status
    if status.direct_promotion:
        moves.promote(draft)
    elif spec.strategy.blue_green is not None:
        bluegreen.progress(draft)
    elif spec.strategy.shadow is not None and canary.canary_of(spec, status) is None:
        shadow.progress(draft)
    else:
        canary.progress(draft)


def candidate_replicas(spec: modeldeployment.ModelDeploymentSpec, status: modeldeployment.ModelDeploymentStatus) -> int:
    """The candidate's pods, as its strategy wants them now."""
    if status.direct_promotion:
        return spec.full_size
    if spec.strategy.blue_green is not None:
        return bluegreen.candidate_replicas(spec, status)
    if spec.strategy.shadow is not None and canary.canary_of(spec, status) is None:
        return shadow.candidate_replicas(spec, status)
    return canary.candidate_replicas(spec, status)


def _retire(draft: rollout.Draft) -> None:
    delay = canary.scale_down_delay(draft.spec)
    keep = []
    for retiring in draft.status.retiring:
        if draft.now - retiring.since >= delay or retiring.version == draft.status.stable_version:
            draft.event(reasons.RETIRED, f"version {retiring.version} scaled down after the scale-down delay")
        else:
            keep.append(retiring)
    draft.status.retiring = keep


def _conclude(draft: rollout.Draft) -> None:
    """Phase and conditions once the rollout has moved."""
    status, spec, observed = draft.status, draft.spec, draft.observed
    available = _available(spec, status, observed)
    status.ready_replicas = sum(pods.ready for pods in observed.deployments.values())
    status.url = _url(serving.Owner(observed.name, observed.namespace, observed.uid), spec)
    if available:
        draft.condition(reasons.AVAILABLE, TRUE, reasons.SERVING, f"version {status.stable_version} answers")
    else:
        draft.condition(reasons.AVAILABLE, FALSE, reasons.NOT_SERVING, "no ready router or stable pods yet")
    first = status.history[-1] if status.history else None
    if status.candidate_version is None and status.stable_version is not None:
        if first is not None and first.outcome is None and first.previous_version is None:
            if available:
                message = f"version {status.stable_version} serves all traffic"
                draft.finish_record(status.stable_version, Outcome.DEPLOYED, message)
                draft.set_phase(Phase.HEALTHY, message)
                draft.condition(reasons.PROGRESSING, FALSE, reasons.HEALTHY, message)
            elif draft.elapsed(first.start_time) > datetime.timedelta(seconds=spec.progress_deadline_seconds):
                message = (
                    f"version {status.stable_version} has no ready pods after the progressDeadlineSeconds "
                    f"of {spec.progress_deadline_seconds}"
                )
                draft.set_phase(Phase.DEGRADED, message)
                draft.condition(reasons.PROGRESSING, FALSE, reasons.PROGRESS_DEADLINE_EXCEEDED, message)
            else:
                draft.set_phase(Phase.PROGRESSING, f"starting version {status.stable_version}")
                draft.condition(reasons.PROGRESSING, TRUE, reasons.WAITING_FOR_PODS, status.message or "")
        elif draft.phase_decided or status.phase is Phase.ROLLED_BACK:
            pass  # this plan's own verdict, or a rollback's message, stands until another rollout starts
        elif status.phase is Phase.DEGRADED and status.rolled_back_versions:
            pass  # a refusal's message stands likewise
        elif available:
            draft.set_phase(Phase.HEALTHY, f"version {status.stable_version} serves all traffic")
            draft.condition(reasons.PROGRESSING, FALSE, reasons.HEALTHY, status.message or "")
        else:
            draft.set_phase(Phase.DEGRADED, f"version {status.stable_version} has no ready pods")
    if status.phase is not Phase.PAUSED:
        draft.condition(reasons.PAUSED, FALSE, reasons.NOT_PAUSED, "")
    ready = status.phase is Phase.HEALTHY and available
    draft.condition(
        reasons.READY,
        TRUE if ready else FALSE,
        reasons.HEALTHY
        if ready
        else (status.phase.value if status.phase is not Phase.HEALTHY else reasons.NOT_SERVING),
        status.message or "",
    )
    order = {condition: index for index, condition in enumerate(reasons.CONDITION_ORDER)}
    status.conditions.sort(key=lambda condition: order.get(condition.type, len(order)))
    status.observed_generation = observed.generation


def candidate_variant(spec: modeldeployment.ModelDeploymentSpec) -> str:
    """The candidate's name in the traffic split: `preview` in blue-green, `candidate` otherwise."""
    return serving.PREVIEW if spec.strategy.blue_green is not None else serving.CANDIDATE


def _split(owner: serving.Owner, spec: modeldeployment.ModelDeploymentSpec, status: Status) -> traffic.Split:
    stable = status.stable_version or ""
    stable_backend = traffic.Backend(serving.STABLE, serving.deployment_name(owner.name, stable), stable, 100)
    candidate = status.candidate_version
    if candidate is None:
        return traffic.Split((stable_backend,))
    service = serving.deployment_name(owner.name, candidate)
    if shadow.mirroring(status):
        tolerance = spec.strategy.shadow.comparison.tolerance if spec.strategy.shadow else None
        mirror = traffic.Mirror(serving.CANDIDATE, service, candidate, status.weights.mirror, serving.STABLE, tolerance)
        return traffic.Split((stable_backend,), mirror)
    return traffic.Split(
        (
            dataclasses.replace(stable_backend, weight=status.weights.stable),
            traffic.Backend(candidate_variant(spec), service, candidate, status.weights.canary),
        )
    )


def _objects(draft: rollout.Draft, settings: serving.Settings) -> tuple[list[Object], list[str]]:
    """The serving objects for the status, and the serving Deployments to delete."""
    status, spec, observed = draft.status, draft.spec, draft.observed
    owner = serving.Owner(observed.name, observed.namespace, observed.uid)
    if status.stable_version is None:
        return [], []
    replicas: dict[str, int] = {r.version: spec.full_size for r in status.retiring}
    replicas.update({version: 0 for version in status.rolled_back_versions})
    replicas[status.stable_version] = spec.full_size
    if status.candidate_version is not None:
        replicas[status.candidate_version] = candidate_replicas(spec, status)
    if spec.traffic.provider is _REPLICAS_PROVIDER:  # no router keeps idle pods out of traffic
        replicas.update({retiring.version: 0 for retiring in status.retiring})
        stable_count, candidate_count = _replica_counts(spec, status, observed)
        replicas[status.stable_version] = stable_count
        if status.candidate_version is not None:
            replicas[status.candidate_version] = candidate_count
    deployments = []
    kept = set()
    for version, floor in replicas.items():
        found = observed.find(version)
        kept.add(serving.version_label(version))
        if found is None:
            continue
        count = floor
        if spec.autoscaling is not None and floor > 0:
            # The rollout sets the floor; above it the autoscaler's count stands.
            deployments.append(serving.autoscaler(owner, spec.autoscaling, version, floor))
            pods = observed.deployments.get(serving.version_label(version))
            count = max(floor, pods.replicas if pods else 0)
        deployments.append(serving.server_deployment(owner, spec, serving.Live(found, count), settings))
    services = [
        *(serving.version_service(owner, spec, version) for version in replicas if observed.find(version)),
        serving.variant_service(owner, spec, serving.stable_service(owner.name), status.stable_version),
        serving.variant_service(
            owner, spec, serving.canary_service(owner.name), status.candidate_version or status.stable_version
        ),
    ]
    if spec.strategy.blue_green is not None:
        preview = status.candidate_version or status.stable_version
        services.append(serving.variant_service(owner, spec, serving.preview_service(owner.name), preview))
    applied = [*deployments, *services, *_front(owner, spec, settings)]
    stale = [pods.name for label, pods in observed.deployments.items() if label not in kept]
    return applied, stale


def plan(observed: rollout.Observed, now: datetime.datetime, settings: serving.Settings | None = None) -> Plan:
    draft = rollout.Draft(observed, now, observed.status.model_copy(deep=True))
    unsupported = _unsupported_traffic(observed.spec)
    if unsupported:
        draft.set_phase(Phase.DEGRADED, unsupported)
        draft.condition(reasons.PROGRESSING, FALSE, reasons.UNSUPPORTED, unsupported)
        _conclude(draft)
        return Plan(status=draft.status)
    _steer(draft)
    _retire(draft)
    _achieved_weights(draft)
    _conclude(draft)
    if draft.measure:
        return Plan(status=observed.status, measure=tuple(draft.measure))
    applied, stale = _objects(draft, settings or serving.Settings())
    owner = serving.Owner(observed.name, observed.namespace, observed.uid)
    autoscaled = {obj["metadata"]["name"] for obj in applied if obj["kind"] == "HorizontalPodAutoscaler"}
    return Plan(
        status=draft.status,
        traffic=_split(owner, observed.spec, draft.status) if draft.status.stable_version else None,
        apply=tuple(applied),
        retire=tuple(stale),
        unscale=tuple(sorted(observed.autoscalers - autoscaled)),
        events=tuple(draft.events),
    )
