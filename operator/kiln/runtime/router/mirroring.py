"""Copies of live requests sent to the mirror variant, beside the live request.

A copy never slows the live request: it is a task of its own, started with the live request (so
both upstreams see the same input at the same time) and never awaited by it. At most MAX_IN_FLIGHT
copies are outstanding; beyond that a copy is dropped and counted, so a slow mirror upstream costs
memory bounded by that number, never latency. Each copy has the upstream timeout. Its answer is
read and, unless the configuration compares it with the live one (see `shadow`), thrown away (the
mirror's own kiln-server metrics are what analysis reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import aiohttp
from multidict import CIMultiDict
from yarl import URL

if TYPE_CHECKING:
    from kiln.runtime.router import app

MAX_IN_FLIGHT: Final = 256


@dataclass(frozen=True)
class Reply:
    """What the mirror upstream answered, or `failure` when it gave no answer."""

    status: int | None
    body: bytes
    seconds: float
    """From sending the copy to the last byte of its answer (or to giving up)."""
    failure: str | None = None
    """`timeout` or `error` (refused, disconnected, malformed) when there is no answer."""


class Mirroring:
    """Sends copies through the router's session; `close` cancels the ones still outstanding."""

    def __init__(self, session: aiohttp.ClientSession, limit: int = MAX_IN_FLIGHT) -> None:
        self._session = session
        self._limit = limit
        self._in_flight: set[asyncio.Task[Reply]] = set()

    def send(
        self, route: app.Route, method: str, url: URL, headers: CIMultiDict[str], body: bytes
    ) -> asyncio.Task[Reply] | None:
        """The copy's task, whose result is the mirror's Reply, or None when the copy was dropped."""
        if len(self._in_flight) >= self._limit:
            route.recorder.mirrored["dropped"].inc()
            return None
        task = asyncio.create_task(self._copy(route, method, url, headers, body))
        # The loop holds tasks weakly; the set keeps each alive until it is done.
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    async def _copy(self, route: app.Route, method: str, url: URL, headers: CIMultiDict[str], body: bytes) -> Reply:
        started = time.perf_counter()
        try:
            async with self._session.request(
                method, url, headers=headers, data=body or None, allow_redirects=False
            ) as answer:
                payload = await answer.read()
        # aiohttp's ServerTimeoutError is also a ClientError, so the timeout is caught first.
        except TimeoutError:
            route.recorder.mirrored["failed"].inc()
            return Reply(None, b"", time.perf_counter() - started, "timeout")
        except aiohttp.ClientError:
            route.recorder.mirrored["failed"].inc()
            return Reply(None, b"", time.perf_counter() - started, "error")
        route.recorder.mirrored["answered"].inc()
        return Reply(answer.status, payload, time.perf_counter() - started)

    async def close(self) -> None:
        for task in self._in_flight:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._in_flight, return_exceptions=True)
