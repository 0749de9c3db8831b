"""`kiln status tj/NAME [--watch]`: a TrainingJob's progress as a bar (percent, step of total,
epoch, rate, ETA, phase, the latest metrics), from the status.progress the operator folds from rank
0's reports. `--watch` redraws it live until the job finishes (exit 0 when it Succeeded, 1 when it
Failed), `--timeout` passes (exit 1) or Ctrl-C (exit 130). The rendering is pure; the reads go
through `kiln.kube.client`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import click
import pydantic
import rich.console
import rich.live
import rich.markup
import rich.progress_bar
import rich.table

from kiln import cli_access
from kiln.api import resources, trainingjob
from kiln.api.trainingjob import TrainingJobPhase
from kiln.kube import client

TRAINING_JOBS = client.kiln_resource(resources.TRAINING_JOB)
_TRAINING_JOB_NAMES = frozenset({"tj", "trainingjob", "trainingjobs", "trainingjob.kiln.dev", "trainingjobs.kiln.dev"})
WATCH_SECONDS = 1.0
"""How often `--watch` reads the job again."""
BAR_WIDTH = 30
INTERRUPTED_EXIT_CODE = 130
_PHASE_STYLES = {
    TrainingJobPhase.SUCCEEDED: "green",
    TrainingJobPhase.FAILED: "red",
    TrainingJobPhase.RUNNING: "cyan",
    TrainingJobPhase.QUEUED: "yellow",
    TrainingJobPhase.SUSPENDED: "yellow",
}
FINISHED = frozenset({TrainingJobPhase.SUCCEEDED, TrainingJobPhase.FAILED})


def training_job_name(reference: str) -> str | None:
    """NAME from `tj/NAME` (any kubectl spelling of the kind); None when the reference names no
    TrainingJob."""
    kind, separator, name = reference.rpartition("/")
    if not separator or kind.lower() not in _TRAINING_JOB_NAMES:
        return None
    if not name:
        raise click.BadParameter(f"{reference!r} names no TrainingJob; name one as tj/NAME")
    return name


def _parse(body: dict[str, Any], name: str) -> trainingjob.TrainingJobStatus:
    try:
        return trainingjob.TrainingJobStatus.model_validate(body.get("status") or {})
    except pydantic.ValidationError as error:
        raise click.ClickException(f"tj/{name} has a status that does not parse: {error}") from None


def _number(value: float) -> str:
    return f"{value:.4g}"


def progress_view(name: str, status: trainingjob.TrainingJobStatus) -> rich.table.Table:
    """One line: the bar and percent, step of total, epoch, rate, ETA, phase and metrics; and the
    job's message below it."""
    progress = status.progress
    percent = progress.percent if progress is not None else None
    grid = rich.table.Table.grid(padding=(0, 1))
    cells: list[rich.console.RenderableType] = [f"tj/{rich.markup.escape(name)}"]
    cells.append(rich.progress_bar.ProgressBar(total=100.0, completed=percent or 0.0, width=BAR_WIDTH))
    cells.append(f"{percent:5.1f}%" if percent is not None else "    -%")
    if progress is not None:
        total = f"/{progress.total_steps}" if progress.total_steps else ""
        cells.append(f"step {progress.step}{total}")
        if progress.epoch is not None:
            cells.append(f"epoch {progress.epoch}")
        if progress.steps_per_second is not None:
            cells.append(f"{_number(progress.steps_per_second)} steps/s")
        if progress.eta is not None:
            cells.append(f"ETA {progress.eta}")
    else:
        cells.append("no progress reported yet")
    cells.append(f"[{_PHASE_STYLES.get(status.phase, 'bold')}]{status.phase}[/]")
    if progress is not None and progress.metrics:
        metrics = " ".join(f"{key}={_number(value)}" for key, value in sorted(progress.metrics.items()))
        cells.append(rich.markup.escape(metrics))
    grid.add_row(*cells)
    view = rich.table.Table.grid()
    view.add_row(grid)
    if status.message:
        view.add_row(rich.markup.escape(status.message))
    return view


def _read(kube: client.Api, namespace: str, name: str) -> trainingjob.TrainingJobStatus:
    try:
        body = kube.get(TRAINING_JOBS, namespace, name)
    except client.ApiError as error:
        raise click.ClickException(f"could not read tj/{name}: {error.message}") from None
    if body is None:
        raise click.ClickException(f'trainingjob "{name}" not found in namespace "{namespace}"')
    return _parse(body, name)


def status(
    reference: str, watch: bool, timeout: float | None, access: cli_access.Access, console: rich.console.Console
) -> None:
    """Show the job's progress once, or with `watch` live until it finishes."""
    name = training_job_name(reference)
    assert name is not None
    kube, namespace = access.connect()
    current = _read(kube, namespace, name)
    if not watch:
        console.print(progress_view(name, current))
        return
    deadline = time.monotonic() + (math.inf if timeout is None else timeout)
    try:
        with rich.live.Live(progress_view(name, current), console=console, auto_refresh=False) as live:
            while current.phase not in FINISHED:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(WATCH_SECONDS, left))
                current = _read(kube, namespace, name)
                live.update(progress_view(name, current), refresh=True)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(INTERRUPTED_EXIT_CODE) from None
    if current.phase is TrainingJobPhase.SUCCEEDED:
        return
    if current.phase is TrainingJobPhase.FAILED:
        raise click.ClickException(f"tj/{name} failed: {current.message or 'no reason given'}")
    raise click.ClickException(f"tj/{name} is still {current.phase} after {timeout:g}s")
