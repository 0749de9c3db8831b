"""What every plan's status draft shares: conditions set at the plan's instant, for the generation it saw."""

from __future__ import annotations

import datetime
from typing import Protocol

from kiln.api import base, conditions


class _Status(Protocol):
    conditions: list[base.Condition]


class _Observed(Protocol):
    @property
    def generation(self) -> int | None: ...


class StatusDraft:
    """A mixin for a plan's draft, which supplies `observed` (with its generation), `now` and `status`."""

    observed: _Observed
    now: datetime.datetime
    status: _Status

    def condition(self, condition_type: str, status: base.ConditionStatus, reason: str, message: str) -> None:
        self.status.conditions = conditions.set_condition(
            self.status.conditions,
            condition_type,
            status=status,
            reason=reason,
            message=message,
            now=self.now,
            observed_generation=self.observed.generation,
        )
