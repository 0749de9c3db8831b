"""The rollout's commands, as kubectl-argo-rollouts users expect them: `kiln promote`, `abort`,
`resume`, `pause`, `rollback`, `retry`, `status` and `history`, on a ModelDeployment; and
`kiln retrain`, which asks for a retraining (the kiln.dev/retrain-request annotation, handled once
per id like a rollout action and recorded in status.retraining.handledRequest).

The requests are the kiln.dev/rollout-action annotation (a RolloutAction with a fresh id, the user
the API server authenticates and the time), written with a merge patch; the operator handles each
id once and records it in status.handledAction, which `--wait` polls for. `pause` is spec.paused.
The rendering of a ModelDeployment's status (rows and rich renderables) is pure, apart from the
commands that read and write through `kiln.kube.client`.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import click
import pydantic
import rich.console
import rich.live
import rich.markup
import rich.table
import rich.text

from kiln import cli_access, training_cli
from kiln.api import modeldeployment, resources
from kiln.api.modeldeployment import (
    AnalysisPhase,
    CanaryStep,
    ModelDeployment,
    ModelDeploymentPhase,
    ModelDeploymentStatus,
    RolloutActionName,
)
from kiln.kube import client

MODEL_DEPLOYMENTS = client.kiln_resource(resources.MODEL_DEPLOYMENT)
_MODEL_DEPLOYMENT_NAMES = frozenset(
    {"md", "modeldeployment", "modeldeployments", "modeldeployment.kiln.dev", "modeldeployments.kiln.dev"}
)
POLL_SECONDS = 0.5
"""How often `--wait` reads the ModelDeployment again."""
WATCH_SECONDS = 1.0
"""How often `status --watch` redraws."""
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_PIPED_WIDTH = 200
_PHASE_STYLES = {
    ModelDeploymentPhase.HEALTHY: "green",
    ModelDeploymentPhase.PROGRESSING: "cyan",
    ModelDeploymentPhase.PAUSED: "yellow",
    ModelDeploymentPhase.DEGRADED: "red",
    ModelDeploymentPhase.ROLLED_BACK: "red",
}
_ANALYSIS_STYLES = {
    AnalysisPhase.SUCCESSFUL: "green",
    AnalysisPhase.FAILED: "red",
    AnalysisPhase.INCONCLUSIVE: "yellow",
}


def model_deployment_name(reference: str) -> str:
    """NAME from `md/NAME`, `modeldeployment/NAME` (any kubectl spelling) or a bare NAME."""
    kind, separator, name = reference.rpartition("/")
    if separator and kind.lower() not in _MODEL_DEPLOYMENT_NAMES:
        raise click.BadParameter(f"{reference!r} is not a ModelDeployment; name one as md/NAME")
    if not name:
        raise click.BadParameter(f"{reference!r} names no ModelDeployment; name one as md/NAME")
    return name


class StepState(StrEnum):
    DONE = "done"
    CURRENT = "current"
    PENDING = "pending"


@dataclasses.dataclass(frozen=True)
class StepRow:
    """One canary step as `kiln status` lists it; `number` counts from 1."""

    number: int
    text: str
    state: StepState


_STEP_MARKS = {StepState.DONE: "[green]✔[/]", StepState.CURRENT: "[bold cyan]▶[/]", StepState.PENDING: "[dim]○[/]"}


def _status_of(deployment: ModelDeployment) -> ModelDeploymentStatus:
    return deployment.status or ModelDeploymentStatus()


def _steps_of(deployment: ModelDeployment) -> list[CanaryStep]:
    canary = deployment.spec.strategy.canary
    return list(canary.steps) if canary else []


def step_text(step: CanaryStep, defined_metrics: list[str]) -> str:
    """`setWeight 20`, `pause 30s`, `pause (until resumed)` or `analysis [error-rate]`."""
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.pause is not None:
        return f"pause {step.pause.duration}" if step.pause.duration else "pause (until resumed)"
    metrics = (step.analysis.metrics if step.analysis else None) or defined_metrics
    return f"analysis [{', '.join(metrics)}]"


def step_rows(deployment: ModelDeployment) -> list[StepRow]:
    """The canary steps, marked done, current or pending; all pending when no rollout runs."""
    index = _status_of(deployment).current_step_index
    defined = [metric.name for metric in deployment.spec.analysis.metrics]
    rows = []
    for position, step in enumerate(_steps_of(deployment)):
        if index is None or position > index:
            state = StepState.PENDING
        else:
            state = StepState.DONE if position < index else StepState.CURRENT
        rows.append(StepRow(position + 1, step_text(step, defined), state))
    return rows


def step_summary(deployment: ModelDeployment) -> str:
    """Where the rollout is among its steps: `step 2 of 5`."""
    status = _status_of(deployment)
    steps = len(_steps_of(deployment))
    if status.candidate_version is None:
        return "no rollout in progress"
    if not steps:
        return "no canary steps"
    index = status.current_step_index or 0
    if index >= steps:
        return f"all {steps} steps done, promoting"
    return f"step {index + 1} of {steps}"


def request_context(deployment: ModelDeployment) -> str:
    """What a request acts on, for the line a command prints: `step 2 of 5, candidate 1.1.0`."""
    status = _status_of(deployment)
    if status.candidate_version is None:
        stable = f", stable {status.stable_version}" if status.stable_version else ""
        return f"no rollout in progress{stable}"
    if not _steps_of(deployment):
        return f"candidate {status.candidate_version}"
    return f"{step_summary(deployment)}, candidate {status.candidate_version}"


def weights_text(status: ModelDeploymentStatus) -> str:
    mirror = f", mirror {status.weights.mirror}%" if status.weights.mirror else ""
    return f"stable {status.weights.stable}%, canary {status.weights.canary}%{mirror}"


def analysis_rows(status: ModelDeploymentStatus) -> list[tuple[str, ...]]:
    """METRIC, STEP (its number, or background), PHASE, the four counts, and the last measurement."""
    rows: list[tuple[str, ...]] = []
    for result in status.analysis:
        where = "background" if result.step is None else f"step {result.step + 1}"
        last = result.measurements[-1] if result.measurements else None
        if last is None:
            measured = ""
        elif last.error:
            measured = f"error: {last.error}"
        else:
            measured = last.value or ""
        counts = (result.successful, result.failed, result.inconclusive, result.errors)
        rows.append((result.metric, where, str(result.phase), *(str(count) for count in counts), measured))
    return rows


def format_duration(length: datetime.timedelta) -> str:
    """`45s`, `3m05s`, `2h04m`: coarse, as kubectl prints ages."""
    seconds = max(0, int(length.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def history_rows(status: ModelDeploymentStatus, now: datetime.datetime) -> list[tuple[str, ...]]:
    """VERSION, PREVIOUS, STARTED, ENDED, DURATION, OUTCOME, REASON, newest last; a running rollout's
    duration is up to `now`."""
    rows: list[tuple[str, ...]] = []
    for record in status.history:
        ended = f"{record.end_time:{_TIME_FORMAT}}" if record.end_time else "running"
        duration = format_duration((record.end_time or now) - record.start_time)
        outcome = str(record.outcome) if record.outcome else "Running"
        started = f"{record.start_time:{_TIME_FORMAT}}"
        rows.append(
            (record.version, record.previous_version or "-", started, ended, duration, outcome, record.reason or "")
        )
    return rows


def condition_rows(status: ModelDeploymentStatus) -> list[tuple[str, ...]]:
    return [(c.type, str(c.status), c.reason, c.message) for c in status.conditions]


def _strategy_name(deployment: ModelDeployment) -> str:
    strategy = deployment.spec.strategy
    if strategy.canary:
        return "canary"
    if strategy.blue_green:
        return "blueGreen"
    return "shadow" if strategy.shadow else "all at once"


def _phase_text(status: ModelDeploymentStatus) -> str:
    style = _PHASE_STYLES.get(status.phase, "dim")
    message = f" — {rich.markup.escape(status.message)}" if status.message else ""
    return f"[{style}]{status.phase}[/]{message}"


def _table(title: str | None, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> rich.table.Table:
    table = rich.table.Table(title=title, title_justify="left", title_style="bold", box=None, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(rich.markup.escape(cell) for cell in row))
    return table


def _summary(deployment: ModelDeployment) -> rich.table.Table:
    status = _status_of(deployment)
    grid = rich.table.Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    fields = [
        ("Name", rich.markup.escape(deployment.metadata.name or "")),
        ("Namespace", rich.markup.escape(deployment.metadata.namespace or "")),
        ("Model", rich.markup.escape(deployment.spec.model)),
        ("Phase", _phase_text(status)),
        ("Strategy", _strategy_name(deployment) + (" (spec.paused)" if deployment.spec.paused else "")),
        ("Stable", status.stable_version or "-"),
        ("Candidate", status.candidate_version or "-"),
        ("Weights", weights_text(status)),
    ]
    if _steps_of(deployment):
        fields.append(("Progress", step_summary(deployment)))
    fields.append(("URL", status.url or "-"))
    for label, value in fields:
        grid.add_row(label, value)
    return grid


def _steps_table(rows: list[StepRow]) -> rich.table.Table:
    table = rich.table.Table(title="Steps", title_justify="left", title_style="bold", box=None, show_header=False)
    for _ in range(3):
        table.add_column()
    for row in rows:
        style = {StepState.CURRENT: "bold", StepState.PENDING: "dim"}.get(row.state, "")
        table.add_row(_STEP_MARKS[row.state], str(row.number), rich.text.Text(row.text, style=style))
    return table


def _analysis_table(status: ModelDeploymentStatus) -> rich.table.Table:
    columns = ("METRIC", "STEP", "PHASE", "SUCCESSFUL", "FAILED", "INCONCLUSIVE", "ERRORS", "LAST")
    table = _table("Analysis", columns, [])
    for result, row in zip(status.analysis, analysis_rows(status), strict=True):
        style = _ANALYSIS_STYLES.get(result.phase, "cyan")
        cells = [rich.markup.escape(cell) for cell in row]
        cells[2] = f"[{style}]{cells[2]}[/]"
        table.add_row(*cells)
    return table


def status_view(deployment: ModelDeployment) -> rich.console.Group:
    """Everything `kiln status` shows of a ModelDeployment."""
    status = _status_of(deployment)
    parts: list[rich.console.RenderableType] = [_summary(deployment)]
    steps = step_rows(deployment)
    if steps:
        parts += ["", _steps_table(steps)]
    if status.analysis:
        parts += ["", _analysis_table(status)]
    if status.conditions:
        parts += ["", _table("Conditions", ("TYPE", "STATUS", "REASON", "MESSAGE"), condition_rows(status))]
    return rich.console.Group(*parts)


def history_table(status: ModelDeploymentStatus, now: datetime.datetime) -> rich.table.Table:
    columns = ("VERSION", "PREVIOUS", "STARTED", "ENDED", "DURATION", "OUTCOME", "REASON")
    return _table(None, columns, history_rows(status, now))


def _console() -> rich.console.Console:
    """A console for the commands; piped output is not cut to 80 columns, so rows stay whole for grep."""
    console = rich.console.Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPED_WIDTH
    return console


def _not_found(name: str, namespace: str) -> click.ClickException:
    return click.ClickException(f'modeldeployment "{name}" not found in namespace "{namespace}"')


def _read(kube: client.Api, namespace: str, name: str) -> ModelDeployment:
    try:
        body = kube.get(MODEL_DEPLOYMENTS, namespace, name)
    except client.ApiError as error:
        raise click.ClickException(f"could not read md/{name}: {error.message}") from None
    if body is None:
        raise _not_found(name, namespace)
    return _parse(body, name)


def _parse(body: dict[str, Any], name: str) -> ModelDeployment:
    try:
        return ModelDeployment.model_validate(body)
    except pydantic.ValidationError as error:
        raise click.ClickException(f"md/{name} does not parse: {error}") from None


def _patch(kube: client.Api, namespace: str, name: str, patch: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        return kube.patch(MODEL_DEPLOYMENTS, namespace, name, patch)
    except client.NotFoundError:
        raise _not_found(name, namespace) from None
    except client.ApiError as error:
        raise click.ClickException(f"could not request {what} of md/{name}: {error.message}") from None


def _wait_for(
    kube: client.Api, namespace: str, name: str, done: Callable[[ModelDeployment], bool], timeout: float
) -> ModelDeployment | None:
    """The ModelDeployment once `done` holds of it, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        deployment = _read(kube, namespace, name)
        if done(deployment):
            return deployment
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)


def _report(deployment: ModelDeployment | None, what: str, name: str, wait_seconds: float) -> None:
    if deployment is None:
        raise click.ClickException(
            f"the operator did not handle the {what} request on md/{name} within {wait_seconds:g}s; is it running?"
        )
    status = _status_of(deployment)
    click.echo(f"md/{name} {status.phase}: {status.message or ''}".rstrip())


def _request_action(
    access: cli_access.Access, reference: str, action: RolloutActionName, wait_seconds: float, **spec: Any
) -> None:
    """Write the rollout-action annotation (and any `spec` fields), say so, and wait if asked."""
    name = model_deployment_name(reference)
    kube, namespace = access.connect()
    request = modeldeployment.RolloutAction(
        action=action, id=str(uuid.uuid4()), user=cli_access.whoami(kube), time=cli_access.now()
    )
    annotation = request.model_dump_json(by_alias=True, exclude_none=True)
    patch: dict[str, Any] = {"metadata": {"annotations": {modeldeployment.ROLLOUT_ACTION_ANNOTATION: annotation}}}
    if spec:
        patch["spec"] = spec
    updated = _parse(_patch(kube, namespace, name, patch, str(action)), name)
    click.echo(f"{action} requested for md/{name} ({request_context(updated)})")
    if wait_seconds > 0:
        handled = _wait_for(kube, namespace, name, lambda d: _status_of(d).handled_action == request.id, wait_seconds)
        _report(handled, str(action), name, wait_seconds)


_WAIT = click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for the operator to handle the request; 0 returns at once.",
)


def _action_command(action: RolloutActionName, summary: str, **spec: Any) -> click.Command:
    @click.argument("reference", metavar="md/NAME")
    @_WAIT
    @cli_access.cluster_options
    def command(reference: str, wait_seconds: float, access: cli_access.Access) -> None:
        _request_action(access, reference, action, wait_seconds, **spec)

    return click.command(str(action), help=summary)(command)


@click.command()
@click.argument("reference", metavar="md/NAME")
@click.option("--full", is_flag=True, help="Skip every remaining step (promote-full), not just the current one.")
@_WAIT
@cli_access.cluster_options
def promote(reference: str, full: bool, wait_seconds: float, access: cli_access.Access) -> None:
    """Promote the rollout past its current step, or with --full past all of them."""
    action = RolloutActionName.PROMOTE_FULL if full else RolloutActionName.PROMOTE
    _request_action(access, reference, action, wait_seconds)


abort = _action_command(
    RolloutActionName.ABORT, "Abort the rollout: all traffic back to the stable version, the candidate skipped."
)
resume = _action_command(
    RolloutActionName.RESUME,
    "Resume a paused rollout: sets spec.paused false and releases a pause step without a duration.",
    paused=False,
)
rollback = _action_command(
    RolloutActionName.ROLLBACK,
    "Roll back: abort the rollout in progress, or with none switch back to the previous stable version.",
)
retry = _action_command(
    RolloutActionName.RETRY, "Let rolled-back versions be chosen again, so the version policy can retry them."
)


@click.command()
@click.argument("reference", metavar="md/NAME")
@_WAIT
@cli_access.cluster_options
def pause(reference: str, wait_seconds: float, access: cli_access.Access) -> None:
    """Hold the rollout where it is (spec.paused); `kiln resume` releases it."""
    name = model_deployment_name(reference)
    kube, namespace = access.connect()
    updated = _patch(kube, namespace, name, {"spec": {"paused": True}}, "pause")
    click.echo(f"pause requested for md/{name} ({request_context(_parse(updated, name))})")
    if wait_seconds > 0:
        # A pause has no id to be handled; the operator has seen it once status reflects the new generation.
        seen = int(updated["metadata"].get("generation") or 0)
        observed = _wait_for(
            kube, namespace, name, lambda d: (_status_of(d).observed_generation or 0) >= seen, wait_seconds
        )
        _report(observed, "pause", name, wait_seconds)


@click.command()
@click.argument("reference", metavar="md/NAME|tj/NAME")
@click.option(
    "--watch", "-w", is_flag=True, help="Redraw every second until Ctrl-C (or --timeout; a TrainingJob: until it ends)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Stop watching after this long [default: until Ctrl-C].",
)
@cli_access.cluster_options
def status(reference: str, watch: bool, timeout: float | None, access: cli_access.Access) -> None:
    """Show a ModelDeployment's rollout: phase, versions, weights, steps, analysis and conditions; or
    a TrainingJob's progress (tj/NAME), with --watch as a live bar that exits 0 once it Succeeded,
    1 if it Failed."""
    if training_cli.training_job_name(reference) is not None:
        training_cli.status(reference, watch, timeout, access, _console())
        return
    name = model_deployment_name(reference)
    kube, namespace = access.connect()
    console = _console()
    if not watch:
        console.print(status_view(_read(kube, namespace, name)))
        return
    _watch(console, lambda: status_view(_read(kube, namespace, name)), math.inf if timeout is None else timeout)


def _watch(console: rich.console.Console, view: Callable[[], rich.console.Group], timeout: float) -> None:
    """Redraw `view` every WATCH_SECONDS until Ctrl-C or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    try:
        with rich.live.Live(view(), console=console, auto_refresh=False) as live:
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(WATCH_SECONDS, left))
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        pass


@click.command()
@click.argument("reference", metavar="md/NAME")
@cli_access.cluster_options
def history(reference: str, access: cli_access.Access) -> None:
    """List a ModelDeployment's rollouts, newest last: versions, times, outcome and why."""
    name = model_deployment_name(reference)
    kube, namespace = access.connect()
    records = _status_of(_read(kube, namespace, name))
    console = _console()
    if not records.history:
        console.print(f"md/{name} has no rollouts yet")
        return
    console.print(history_table(records, cli_access.now()))


def _retrain_outcome(deployment: ModelDeployment, request: modeldeployment.RetrainRequest) -> str:
    held = _status_of(deployment).retraining or modeldeployment.RetrainingStatus()
    skipped = held.skipped
    if skipped is not None and request.id in skipped.message:
        return f"not started: {skipped.reason}: {skipped.message}"
    run = held.runs[-1] if held.runs else None
    if run is None or run.trigger != modeldeployment.MANUAL_TRIGGER:
        return "not started: the operator refused the request (see `kubectl describe`)"
    return f"started TrainingJob {run.training_job}, which registers {deployment.spec.model} {run.version}"


@click.command()
@click.argument("reference", metavar="md/NAME")
@click.option("--reason", default="", help="Why, recorded on the TrainingJob and in status.")
@_WAIT
@cli_access.cluster_options
def retrain(reference: str, reason: str, wait_seconds: float, access: cli_access.Access) -> None:
    """Retrain now from spec.monitoring.retraining.template, unless a retraining is running; the
    cooldown and maxPerDay hold back triggers, not people. The operator handles it once the
    deployment is steady (Healthy, no rollout)."""
    name = model_deployment_name(reference)
    kube, namespace = access.connect()
    if (monitoring := _read(kube, namespace, name).spec.monitoring) is None or monitoring.retraining is None:
        raise click.ClickException(f"md/{name} has no spec.monitoring.retraining to retrain from")
    request = modeldeployment.RetrainRequest(
        id=str(uuid.uuid4()), user=cli_access.whoami(kube), time=cli_access.now(), reason=reason
    )
    annotation = request.model_dump_json(by_alias=True, exclude_none=True)
    patch = {"metadata": {"annotations": {modeldeployment.RETRAIN_REQUEST_ANNOTATION: annotation}}}
    _patch(kube, namespace, name, patch, "a retraining")
    click.echo(f"retraining requested for md/{name}")
    if wait_seconds > 0:

        def handled(deployment: ModelDeployment) -> bool:
            held = _status_of(deployment).retraining
            return held is not None and held.handled_request == request.id

        deployment = _wait_for(kube, namespace, name, handled, wait_seconds)
        if deployment is None:
            raise click.ClickException(
                f"the operator did not handle the retraining request on md/{name} within {wait_seconds:g}s; "
                "is it running, and is the deployment Healthy with no rollout?"
            )
        click.echo(f"md/{name}: {_retrain_outcome(deployment, request)}")


COMMANDS = (promote, abort, resume, pause, rollback, retry, status, history, retrain)
