"""Copies of live requests sent to the mirror variant, fire-and-forget.

A copy never slows the live request: it is a task of its own, started after the live request is
read and never awaited by it. At most MAX_IN_FLIGHT copies are outstanding; beyond that a copy is
dropped and counted, so a slow mirror upstream costs memory bounded by that number, never latency.
Each copy has the upstream timeout; its answer is read and thrown away (the mirror's own kiln-server
metrics are what analysis reads).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final

import aiohttp
from multidict import CIMultiDict
from yarl import URL

if TYPE_CHECKING:
    from kiln.runtime.router import app

MAX_IN_FLIGHT: Final = 256


class Mirroring:
    """Sends copies through the router's session; `close` cancels the ones still outstanding."""

    def __init__(self, session: aiohttp.ClientSession, limit: int = MAX_IN_FLIGHT) -> None:
        self._session = session
        self._limit = limit
        self._in_flight: set[asyncio.Task[None]] = set()

    def send(self, route: app.Route, method: str, url: URL, headers: CIMultiDict[str], body: bytes) -> None:
        if len(self._in_flight) >= self._limit:
            route.recorder.mirrored["dropped"].inc()
            return
        task = asyncio.create_task(self._copy(route, method, url, headers, body))
        # The loop holds tasks weakly; the set keeps each alive until it is done.
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _copy(self, route: app.Route, method: str, url: URL, headers: CIMultiDict[str], body: bytes) -> None:
        try:
            async with self._session.request(
                method, url, headers=headers, data=body or None, allow_redirects=False
            ) as answer:
                await answer.read()
        except (TimeoutError, aiohttp.ClientError):
            route.recorder.mirrored["failed"].inc()
        else:
            route.recorder.mirrored["answered"].inc()

    async def close(self) -> None:
        for task in self._in_flight:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._in_flight, return_exceptions=True)
