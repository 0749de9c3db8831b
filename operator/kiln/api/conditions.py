"""Setting status conditions the way the Kubernetes API conventions ask, for every controller.

A condition's lastTransitionTime moves only when its status flips, so `kubectl wait` and people
reading `kubectl describe` see when something actually changed, not when it was last looked at.
"""

from __future__ import annotations

import datetime

from kiln.api import base


def find(conditions: list[base.Condition], condition_type: str) -> base.Condition | None:
    """The condition of that type, if there is one."""
    return next((condition for condition in conditions if condition.type == condition_type), None)


def set_condition(
    conditions: list[base.Condition],
    condition_type: str,
    *,
    status: base.ConditionStatus,
    reason: str,
    message: str,
    now: datetime.datetime,
    observed_generation: int | None,
) -> list[base.Condition]:
    """The conditions with one of them set; the others keep their place and values."""
    previous = find(conditions, condition_type)
    changed = previous is None or previous.status != status
    updated = base.Condition(
        type=condition_type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed or previous is None else previous.last_transition_time,
        observed_generation=observed_generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if condition.type == condition_type else condition for condition in conditions]
