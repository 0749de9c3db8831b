"""The request metrics kiln-server and kiln-router both keep: requests by status code and latency.

Rollout analysis queries the two alike, so they share buckets and the way a request is recorded.
This module must not import numpy: the router, which needs none, imports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS: Final = (
    0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075,
    0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Fine below a millisecond, where a fast model's p50 and p99 lie, and up to a slow one's 10s."""


class RequestMetrics:
    """A registry holding `<prefix>_requests_total{<subject>,version,code}` and
    `<prefix>_request_duration_seconds{<subject>,version}`, first, and its exposition."""

    def __init__(self, prefix: str, subject: str, requests_help: str, duration_help: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"{prefix}_requests", requests_help, [subject, "version", "code"], registry=self.registry
        )
        self.duration = Histogram(
            f"{prefix}_request_duration_seconds",
            duration_help,
            [subject, "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestRecorder:
    """The pre-bound children of one (subject, version), so a request does no label lookups.

    The `codes` are there from the start, so an error-rate query reads 0 rather than nothing.
    """

    __slots__ = ("_codes", "_duration", "_labels", "_requests")

    def __init__(self, metrics: RequestMetrics, subject: str, version: str, codes: Iterable[int]) -> None:
        self._requests = metrics.requests
        self._labels = (subject, version)
        self._duration = metrics.duration.labels(subject, version)
        self._codes = {code: metrics.requests.labels(subject, version, str(code)) for code in codes}

    def record(self, status: int, seconds: float) -> None:
        child = self._codes.get(status)
        if child is None:
            child = self._codes[status] = self._requests.labels(*self._labels, str(status))
        child.inc()
        self._duration.observe(seconds)
