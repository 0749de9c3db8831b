"""Rank 0's training progress, reported as the annotation `kiln.dev/progress` on its own pod, which
the operator folds into the TrainingJob's status.progress (percent, rate, ETA).

    reporter = progress.Reporter()
    for epoch in range(start, epochs):
        ...
        reporter.report(step=epoch + 1, total_steps=epochs, epoch=epoch, metrics={"loss": loss})
    reporter.close()

A report is sent at once when none was sent for `interval` seconds; one made sooner waits, the
newest winning, and `close` (or a `final` report) sends what is waiting, so the last step is never
lost to the throttle. Only rank 0 reports (`RANK`, unset meaning a single worker), and only inside a
Kiln worker pod (`KILN_POD_NAME` and `KILN_NAMESPACE`, set through the downward API); anywhere
else the reporter does nothing. Reporting never raises into training: a report that cannot be sent
is logged, once, and training goes on.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import pydantic
from kubernetes import client

from kiln.api import trainingjob
from kiln.runtime import incluster

INTERVAL_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 5.0
POD_NAME_VARIABLE = "KILN_POD_NAME"
NAMESPACE_VARIABLE = "KILN_NAMESPACE"

Send = Callable[[str], None]
"""Put one report (the annotation's JSON) where the operator reads it."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def annotate_own_pod(namespace: str, name: str) -> Send:
    """Patch the report onto pod `namespace/name` with the pod's service account; the client is
    made at the first report, so a pod without one fails there, as any report may."""
    api: Any = None

    def send(report: str) -> None:
        nonlocal api
        if api is None:
            api = client.CoreV1Api(incluster.api_client())
        body = {"metadata": {"annotations": {trainingjob.PROGRESS_ANNOTATION: report}}}
        api.patch_namespaced_pod(name, namespace, body, _request_timeout=REQUEST_TIMEOUT_SECONDS)

    return send


def from_environment(environ: Mapping[str, str]) -> Send | None:
    """How this process reports: rank 0 of a Kiln worker pod patches its pod; anyone else, not at all."""
    name, namespace = environ.get(POD_NAME_VARIABLE), environ.get(NAMESPACE_VARIABLE)
    if environ.get("RANK", "0") != "0" or not name or not namespace:
        return None
    return annotate_own_pod(namespace, name)


class Reporter:
    """Throttled progress reports of one training run (see the module docstring)."""

    def __init__(
        self,
        send: Send | None = None,
        *,
        interval: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = _stderr,
    ) -> None:
        self._send = send if send is not None else from_environment(os.environ)
        self._interval = interval
        self._clock = clock
        self._log = log
        self._sent_at: float | None = None
        self._waiting: str | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._send is not None

    def report(
        self,
        step: int,
        total_steps: int | None = None,
        epoch: int | None = None,
        metrics: Mapping[str, float] | None = None,
        *,
        final: bool = False,
    ) -> None:
        """Steps done in the whole run (resumed ones included), of `total_steps`; the epoch under way;
        the latest metrics (values that are not finite numbers are left out). `final` sends it now."""
        if self._send is None:
            return
        finite = {name: float(value) for name, value in (metrics or {}).items() if math.isfinite(value)}
        try:
            wire = trainingjob.ProgressReport(step=step, total_steps=total_steps, epoch=epoch, metrics=finite)
        except pydantic.ValidationError as error:
            self._failure(f"a progress report is not valid ({error.errors()[0]['msg']})")
            return
        self._waiting = json.dumps(wire.to_wire(), sort_keys=True)
        now = self._clock()
        if final or self._sent_at is None or now - self._sent_at >= self._interval:
            self.flush()

    def flush(self) -> None:
        """Send the report that waits, if one does."""
        if self._send is None or self._waiting is None:
            return
        report, self._waiting = self._waiting, None
        self._sent_at = self._clock()
        try:
            self._send(report)
        except Exception as error:  # whatever the API or the network does, training goes on
            self._failure(f"progress not reported ({type(error).__name__}: {_reason(error)})")

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _failure(self, message: str) -> None:
        if not self._failed:
            self._failed = True
            self._log(f"kiln: {message}; training goes on, further failures are not logged")


def _reason(error: Exception) -> str:
    status, reason = getattr(error, "status", None), getattr(error, "reason", None)
    if status is not None:
        return f"the API server answered {status} {reason}"
    return str(error) or "no reason given"
