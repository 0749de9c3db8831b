"""Which version of a model was in Production when, from the audit trails of its versions."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from kiln.api.modelversion import ModelVersion, Stage


@dataclass(frozen=True)
class ProductionPeriod:
    """One stretch of a version in Production; `until` is None while it still is."""

    name: str
    version: str
    since: datetime.datetime
    until: datetime.datetime | None
    promoted_by: str


def production_periods(versions: Iterable[ModelVersion]) -> list[ProductionPeriod]:
    """Every stretch in Production of the given versions (one model's), oldest first."""
    periods: list[ProductionPeriod] = []
    for version in versions:
        history = version.status.history if version.status else []
        entered: tuple[datetime.datetime, str] | None = None
        for entry in history:
            if entry.action != "StageChanged":
                continue
            if entry.to_stage == Stage.PRODUCTION:
                entered = (entry.time, entry.user)
            elif entry.from_stage == Stage.PRODUCTION and entered is not None:
                periods.append(_period(version, entered, entry.time))
                entered = None
        if entered is not None:
            periods.append(_period(version, entered, None))
    return sorted(periods, key=lambda period: period.since)


def _period(
    version: ModelVersion, entered: tuple[datetime.datetime, str], until: datetime.datetime | None
) -> ProductionPeriod:
    since, user = entered
    return ProductionPeriod(version.metadata.name or "", version.spec.version, since, until, user)
