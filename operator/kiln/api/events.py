"""The core/v1 Event a plan asks a controller to post: one shape for every kind Kiln reconciles."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class Event:
    """A core/v1 Event to post about the object a plan is for."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
