"""What the kiln-server and kiln-router processes share: the command's common options, listening,
stopping on SIGTERM or SIGINT, draining, and running on uvloop where it is installed.

The shutdown both follow: readiness turns 503 first (the caller's `draining` flag), the process
keeps answering for the drain delay so Endpoints and load balancers stop sending it traffic, then
it stops accepting and lets the requests in flight finish. Imports no numpy, as the router needs none.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from aiohttp import web

Command = TypeVar("Command", bound=Callable[..., Any])


def host_option(default: str, envvar: str) -> Callable[[Command], Command]:
    return click.option("--host", default=default, envvar=envvar, show_default=True, help="Address to bind.")


def port_option(default: int, envvar: str) -> Callable[[Command], Command]:
    return click.option("--port", default=default, type=int, envvar=envvar, show_default=True, help="Port to bind.")


def drain_delay_option(default: float, envvar: str, help: str) -> Callable[[Command], Command]:
    return click.option(
        "--drain-delay",
        default=default,
        type=click.FloatRange(min=0),
        envvar=envvar,
        show_default=True,
        help=help,
    )


def log_level_option() -> Callable[[Command], Command]:
    return click.option("--log-level", default="INFO", envvar="KILN_LOG_LEVEL", show_default=True)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, in place of the default handlers."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def listen(
    handler: Callable[[web.BaseRequest], Coroutine[Any, Any, web.StreamResponse]],
    request_factory: Callable[..., web.BaseRequest],
    host: str,
    port: int,
    shutdown_timeout: float,
) -> web.ServerRunner:
    """Accept connections at once on the low-level server, with no access log and no signal handling."""
    low_level = web.Server(handler, request_factory=request_factory, access_log=None)
    runner = web.ServerRunner(low_level, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


async def drain(runner: web.ServerRunner, delay: float, log: logging.Logger) -> None:
    """With readiness already off, keep answering for `delay` seconds, then stop and finish what is in flight."""
    log.info("shutting down: readiness is off; draining for %.1fs", delay)
    await asyncio.sleep(delay)
    await runner.cleanup()


def run(coroutine: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS only
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
