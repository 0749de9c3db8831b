"""The running comparison of a shadow variant with the live one, for `mirror.compare`.

A `Window` holds the outcomes since the configuration that set its target (the mirrored variant
and version, the variant compared against and its version, the tolerance): a reload that keeps the
target (weights, the mirrored percent) keeps the window; one that changes it starts a new one, so
`/router/shadow` always describes one pair of models. Copies still in flight from an old window
settle into that old one, never the new.

Latencies are those of the two upstreams for the same request, each from its send to the last byte
of its answer; a shadow that timed out counts with the time it was given, one that failed at once
(refused, disconnected) is not a latency. The p99s come from the most recent RESERVOIR pairs, so
memory stays bounded however long the window runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from kiln.runtime.router import comparison, mirroring
from kiln.runtime.router import config as router_config
from kiln.runtime.router import metrics as router_metrics

log = logging.getLogger(__name__)

RESERVOIR: Final = 2048
"""Recent latency pairs kept for the p99s."""


@dataclass(frozen=True)
class Target:
    variant: str
    version: str
    against: str
    against_version: str
    tolerance: float

    @classmethod
    def of(cls, config: router_config.RouterConfig) -> Target | None:
        mirror = config.mirror
        if mirror.variant is None or mirror.compare is None:
            return None
        against = mirror.compare.against
        return cls(
            mirror.variant,
            config.variants[mirror.variant].version,
            against,
            config.variants[against].version,
            mirror.compare.tolerance,
        )


class Latencies:
    """The most recent latencies, at most `size` of them."""

    def __init__(self, size: int = RESERVOIR) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def p99(self) -> float | None:
        """The nearest-rank 99th percentile, None with no values."""
        if not self._values:
            return None
        ordered = sorted(self._values)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class Window:
    """The outcomes and latencies for one target since `generation`."""

    def __init__(self, target: Target, generation: int, recorder: router_metrics.ShadowRecorder) -> None:
        self.target = target
        self.generation = generation
        self._recorder = recorder
        self._counts = dict.fromkeys(router_metrics.SHADOW_OUTCOMES, 0)
        self._live = Latencies()
        self._shadow = Latencies()

    def dropped(self) -> None:
        self._count("dropped")

    def settle_when_done(
        self, copy: asyncio.Task[mirroring.Reply], live_status: int, live_body: bytes, live_seconds: float
    ) -> None:
        """Compare the copy's reply with the live answer once the copy is done (now, if it is)."""

        def done(task: asyncio.Task[mirroring.Reply]) -> None:
            if task.cancelled():
                return
            failed = task.exception()
            reply = mirroring.Reply(None, b"", 0.0, repr(failed)) if failed is not None else task.result()
            try:
                self.settle(live_status, live_body, live_seconds, reply)
            except Exception:
                log.exception("comparing the %s answer failed", self.target.variant)

        copy.add_done_callback(done)

    def settle(self, live_status: int, live_body: bytes, live_seconds: float, reply: mirroring.Reply) -> None:
        verdict = comparison.compare(live_status, live_body, reply.status, reply.body, self.target.tolerance)
        if verdict is None:
            return
        if reply.status is not None or reply.failure == "timeout":
            self._live.add(live_seconds)
            self._shadow.add(reply.seconds)
            self._recorder.latency["live"].observe(live_seconds)
            self._recorder.latency["shadow"].observe(reply.seconds)
        if verdict.outcome is not comparison.Outcome.AGREE:
            reason = reply.failure if reply.failure is not None else verdict.reason
            log.debug("shadow %s %s: %s", self.target.variant, verdict.outcome, reason)
        self._count(verdict.outcome.value)

    def _count(self, outcome: str) -> None:
        self._counts[outcome] += 1
        self._recorder.outcomes[outcome].inc()

    def document(self) -> dict[str, Any]:
        agree, disagree = self._counts["agree"], self._counts["disagree"]
        compared = agree + disagree
        live, shadow = self._live.p99(), self._shadow.p99()
        return {
            "generation": self.generation,
            "variant": self.target.variant,
            "version": self.target.version,
            "against": self.target.against,
            "againstVersion": self.target.against_version,
            "tolerance": self.target.tolerance,
            "compared": compared,
            "agree": agree,
            "disagree": disagree,
            "errors": self._counts["error"],
            "dropped": self._counts["dropped"],
            "agreement": agree / compared if compared else None,
            "latencyRatio": shadow / live if live and shadow is not None else None,
            "liveP99": live,
            "shadowP99": shadow,
        }


def window_for(
    config: router_config.RouterConfig,
    generation: int,
    previous: Window | None,
    metrics: router_metrics.RouterMetrics,
) -> Window | None:
    """The window of `config`: `previous` if its target is the same, a new one if not, None without compare."""
    target = Target.of(config)
    if target is None:
        return None
    if previous is not None and previous.target == target:
        return previous
    return Window(target, generation, metrics.shadow_recorder(target.variant, target.version))


def empty_document(generation: int, mirrored: str | None) -> dict[str, Any]:
    """/router/shadow's answer when the configuration compares nothing."""
    return {
        "generation": generation,
        "variant": mirrored,
        "against": None,
        "compared": 0,
        "agree": 0,
        "disagree": 0,
        "errors": 0,
        "dropped": 0,
        "agreement": None,
        "latencyRatio": None,
        "liveP99": None,
        "shadowP99": None,
    }
