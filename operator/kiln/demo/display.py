"""How the demo shows itself: a live rich view in a terminal (stages, resources, the canary's
weights and measurements, drift, requests and errors per version), or plain lines of what changed
(`KILN_DEMO_PLAIN=1`, or when the output is no terminal). Every step prints its kubectl command."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kiln.demo import observe


@dataclasses.dataclass
class Stage:
    title: str
    started: float
    ended: float | None = None
    outcome: str = ""

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started


def _weights(status: dict[str, Any]) -> str:
    weights = status.get("weights") or {}
    return f"stable {weights.get('stable', 0)}% / canary {weights.get('canary', 0)}%"


def _step(snapshot: observe.Snapshot) -> str:
    status, deployment = snapshot.status, snapshot.deployment or {}
    steps = deployment.get("spec", {}).get("strategy", {}).get("canary", {}).get("steps", [])
    index = status.get("currentStepIndex")
    return f"step {index + 1} of {len(steps)}" if index is not None and status.get("candidateVersion") else ""


def _measurements(result: dict[str, Any]) -> str:
    values = [m.get("value") or m.get("error") or "?" for m in result.get("measurements", [])[-4:]]
    return f"{result['metric']} (step {(result.get('step') or 0) + 1}) {result.get('phase')}: " + ", ".join(
        f"{value[:8]}" for value in values
    )


def _drift(status: dict[str, Any], detected: str | None) -> str:
    drift = status.get("drift") or {}
    if not drift:
        return ""
    score = drift.get("score")
    shown = f"{score:.2f}" if isinstance(score, float) else "-"
    line = f"drift {shown} (threshold {drift.get('threshold', '-')}, {drift.get('samples', 0)} samples), "
    return line + f"DriftDetected {detected}"


class LiveDisplay:
    """A rich Live view redrawn twice a second; commands and notes scroll above it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.stages: list[Stage] = []
        self.snapshot = observe.Snapshot()
        self.live = Live(get_renderable=self._render, console=console, refresh_per_second=2, transient=False)
        self.live.start()

    def stage(self, stage: Stage, about: str) -> None:
        self.stages.append(stage)
        self.live.refresh()  # a print redraws the last frame: it must show the stage just ended as such
        self.console.print(Text(f"\n▶ {stage.title}", style="bold cyan"), Text(about, style="dim"))

    def command(self, line: str) -> None:
        self.console.print(Text(f"  $ {line}", style="green"))

    def hint(self, line: str) -> None:
        self.console.print(Text(f"  # by hand: {line}", style="dim green"))

    def note(self, text: str) -> None:
        self.console.print(f"    {text}", markup=False)

    def show(self, snapshot: observe.Snapshot) -> None:
        self.snapshot = snapshot

    def close(self) -> None:
        self.live.stop()

    def _render(self) -> RenderableType:
        snapshot = self.snapshot
        stages = Table.grid(padding=(0, 2))
        for stage in self.stages:
            mark = "✔" if stage.ended else "…"
            stages.add_row(mark, stage.title, f"{stage.seconds:5.1f}s", stage.outcome)
        resources = Table("kind", "name", "phase", "detail", box=None, header_style="bold")
        for job in snapshot.jobs:
            accuracy = (job.get("status") or {}).get("metrics", {}).get("accuracy")
            detail = f"accuracy {accuracy:.3f}" if accuracy is not None else ""
            resources.add_row("TrainingJob", job["metadata"]["name"], observe.phase(job), detail)
        for version in snapshot.versions:
            resources.add_row("ModelVersion", version["metadata"]["name"], observe.phase(version), "")
        status = snapshot.status
        if snapshot.deployment is not None:
            serving = f"stable {status.get('stableVersion', '-')}"
            if status.get("candidateVersion"):
                serving += f", canary {status['candidateVersion']} {_step(snapshot)}, {_weights(status)}"
            resources.add_row("ModelDeployment", "iris", str(status.get("phase", "-")), serving)
        traffic = Table("version", "req/s", "errors", box=None, header_style="bold")
        for served, rates in sorted(snapshot.rates.items()):
            traffic.add_row(served, f"{rates.requests:.1f}", f"{rates.error_share:.0%}")
        parts: list[RenderableType] = [Text("─" * 40, style="dim"), stages, resources]
        parts += [Text(_measurements(result), style="yellow") for result in status.get("analysis", [])]
        if drift := _drift(status, snapshot.condition("DriftDetected")):
            parts.append(Text(drift, style="magenta"))
        if status.get("message"):
            parts.append(Text(str(status["message"])[:200], style="dim"))
        parts.append(traffic)
        return Group(*parts)


class PlainDisplay:
    """Plain lines, each change once: for logs and tests."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.began = time.monotonic()
        self.shown: dict[str, str] = {}
        self.rates_shown = 0.0

    def _print(self, text: str) -> None:
        self.console.print(f"[{time.monotonic() - self.began:6.1f}s] {text}", markup=False, highlight=False)

    def stage(self, stage: Stage, about: str) -> None:
        self._print(f"== {stage.title}: {about}")

    def command(self, line: str) -> None:
        self._print(f"$ {line}")

    def hint(self, line: str) -> None:
        self._print(f"# by hand: {line}")

    def note(self, text: str) -> None:
        self._print(f"  {text}")

    def _changed(self, key: str, text: str) -> None:
        if text and self.shown.get(key) != text:
            self.shown[key] = text
            self._print(f"  {text}")

    def show(self, snapshot: observe.Snapshot) -> None:
        for job in snapshot.jobs:
            self._changed(f"tj/{job['metadata']['name']}", f"tj/{job['metadata']['name']} {observe.phase(job)}")
        for version in snapshot.versions:
            name = version["metadata"]["name"]
            self._changed(f"mv/{name}", f"mv/{name} {observe.phase(version)}")
        status = snapshot.status
        if snapshot.deployment is not None:
            line = f"md/iris {status.get('phase', '-')} stable {status.get('stableVersion', '-')}"
            if status.get("candidateVersion"):
                line += f" canary {status['candidateVersion']} {_step(snapshot)} {_weights(status)}"
            self._changed("md", line)
        for result in status.get("analysis", []):
            self._changed(f"analysis/{result['metric']}/{result.get('step')}", "analysis " + _measurements(result))
        self._changed("drift", _drift(status, snapshot.condition("DriftDetected")))
        if snapshot.rates and time.monotonic() - self.rates_shown >= 10:
            self.rates_shown = time.monotonic()
            rates = ", ".join(
                f"{version} {r.requests:.1f} req/s {r.error_share:.0%} errors"
                for version, r in sorted(snapshot.rates.items())
            )
            self._print(f"  traffic: {rates}")

    def close(self) -> None:
        pass


Display = LiveDisplay | PlainDisplay
