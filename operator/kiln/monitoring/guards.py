"""Guards against retraining storms: one retraining in flight per deployment, a cooldown between
retrainings triggers start, and a cap on how many start in any 24 hours.

A person's `kiln retrain` passes the cooldown and the cap (they hold back automation, not a
decision someone made) but never starts a second retraining beside one in flight.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

from kiln.api import base, modeldeployment
from kiln.monitoring import reasons

DAY = datetime.timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class Hold:
    """Why a trigger that fired starts nothing."""

    reason: str
    message: str


def hold(
    retraining: modeldeployment.Retraining,
    runs: Sequence[modeldeployment.RetrainingRun],
    in_flight: Sequence[str],
    now: datetime.datetime,
    *,
    manual: bool = False,
) -> Hold | None:
    """The guard that holds a retraining back now, or None when it may start. `in_flight` names the
    deployment's retraining TrainingJobs that have not finished."""
    if in_flight:
        return Hold(reasons.IN_FLIGHT, f"TrainingJob {in_flight[0]} is still running; one retraining at a time")
    if manual or not runs:
        return None
    last = runs[-1]
    cooldown = base.duration_of(retraining.cooldown)
    if now < last.time + cooldown:
        until = (last.time + cooldown).strftime("%Y-%m-%dT%H:%M:%SZ")
        return Hold(
            reasons.COOLDOWN,
            f"the cooldown of {retraining.cooldown} after TrainingJob {last.training_job} lasts until {until}",
        )
    today = sorted(run.time for run in runs if run.time > now - DAY)
    if len(today) >= retraining.max_per_day:
        reopens = (today[-retraining.max_per_day] + DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
        return Hold(
            reasons.DAILY_CAP,
            f"{len(today)} retrainings started in the last 24 hours, the most maxPerDay "
            f"({retraining.max_per_day}) allows; the next may start at {reopens}",
        )
    return None
