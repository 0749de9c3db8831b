"""What monitoring asks a metric provider, and what comes back; the controller does the asking."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Query:
    """One PromQL instant query; `key` says which check the answer belongs to."""

    key: str
    expression: str
    address: str | None
    """Prometheus's base URL; None for the operator's default."""
    error: str | None = None
    """Set when the query could not be built: the answer is then this error without asking."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """A value (one number, or one per series), nothing (empty), or an error."""

    value: float | list[float] | None = None
    error: str | None = None
