"""The MetricProvider protocol and the two values it trades: a rendered Query in, an Answer out."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Protocol

DEFAULT_TIMEOUT_SECONDS = 10.0

Value = float | list[float]


@dataclasses.dataclass(frozen=True)
class Query:
    """One measurement to take, with every template already rendered."""

    provider: str
    """`prometheus` or `web` (`kiln.api.modeldeployment.MetricProviderName`)."""
    expression: str
    """The PromQL for prometheus; the URL for web."""
    address: str | None = None
    """Prometheus's base URL; None when neither the metric nor the operator names one."""
    json_path: str = "$"
    """For web: where the value is in the JSON answer."""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """For web: request headers."""
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    """Seconds the provider may spend on this query."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """What came back, in one of three shapes, told apart by the caller:

    - a value (`value` set): one number, or several (one per series or matched node);
    - empty (neither set): the system answered but has nothing to measure (no series, a NaN, a
      null), so the measurement is Inconclusive, not a failure of the provider;
    - an error (`error` set): the system could not answer; the text says why and names the
      address or URL, for a user reading the measurement in `kubectl describe`.
    """

    value: Value | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.value is not None and self.error is not None:
            raise ValueError("an Answer has a value or an error, not both")

    @classmethod
    def of(cls, value: Value) -> Answer:
        return cls(value=value)

    @classmethod
    def empty(cls) -> Answer:
        return cls()

    @classmethod
    def failure(cls, error: str) -> Answer:
        return cls(error=error)

    @classmethod
    def of_numbers(cls, numbers: list[float]) -> Answer:
        """None is empty, one is that number, several are a list.

        A NaN counts as no number: Prometheus answers NaN for 0/0, an error ratio while no
        requests arrive, and no traffic is nothing to judge (Inconclusive), neither good nor bad.
        An infinity is kept: histogram_quantile says +Inf for latencies past the last bucket,
        which is a real, bad answer.
        """
        numbers = [number for number in numbers if not math.isnan(number)]
        if not numbers:
            return cls.empty()
        return cls.of(numbers[0] if len(numbers) == 1 else numbers)

    @property
    def is_empty(self) -> bool:
        return self.value is None and self.error is None


class MetricProvider(Protocol):
    def query(self, query: Query) -> Answer:
        """Run the query; never raises for network, HTTP or parse problems, and returns within
        about `query.timeout` seconds. Safe to call from several threads at once."""
        ...
