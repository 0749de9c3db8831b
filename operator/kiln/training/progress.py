"""Training progress: rank 0's reports folded into percent, a smoothed rate and an ETA. Pure: the
previous progress, the new report and the time in; the new progress out."""

from __future__ import annotations

import datetime

from kiln.api import trainingjob

SMOOTHING = 0.5
"""Weight of the newest rate against the one before (an exponential moving average)."""


def fold(
    previous: trainingjob.TrainingProgress | None, report: trainingjob.ProgressReport, now: datetime.datetime
) -> trainingjob.TrainingProgress:
    """The progress after `report`, seen at `now`. A report seen again changes nothing; a step that
    went back (a gang restarted from an older checkpoint) starts the rate afresh."""
    if previous is not None and _same(previous, report):
        return previous
    rate = None
    if previous is not None and previous.update_time is not None and report.step >= previous.step:
        seconds = (now - previous.update_time).total_seconds()
        rate = previous.steps_per_second
        if seconds > 0 and report.step > previous.step:
            instant = (report.step - previous.step) / seconds
            rate = instant if rate is None else SMOOTHING * instant + (1 - SMOOTHING) * rate
    total = report.total_steps
    remaining = max(total - report.step, 0) if total else None
    return trainingjob.TrainingProgress(
        step=report.step,
        total_steps=total,
        epoch=report.epoch,
        metrics=dict(report.metrics),
        percent=round(min(100 * report.step / total, 100.0), 1) if total else None,
        steps_per_second=round(rate, 3) if rate is not None else None,
        eta=duration(remaining / rate) if remaining is not None and rate else None,
        update_time=now,
    )


def finished(progress: trainingjob.TrainingProgress) -> trainingjob.TrainingProgress:
    """A job that succeeded is done, whatever rank 0 last said."""
    return progress.model_copy(update={"percent": 100.0, "eta": duration(0)})


def _same(previous: trainingjob.TrainingProgress, report: trainingjob.ProgressReport) -> bool:
    return (previous.step, previous.total_steps, previous.epoch, previous.metrics) == (
        report.step,
        report.total_steps,
        report.epoch,
        dict(report.metrics),
    )


def duration(seconds: float) -> str:
    """`1h2m`, `12m30s`, `45s`: as kubectl words an age."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
