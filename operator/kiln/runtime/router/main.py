"""`kiln-router`: the command, start-up and graceful shutdown.

On SIGTERM (or SIGINT) readiness turns 503 first; the router keeps proxying for `--drain-delay`
seconds so Endpoints and load balancers stop sending it traffic, then stops accepting, lets the
requests in flight finish (none can outlast the upstream timeout), and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import pathlib
import socket
import sys
from dataclasses import dataclass
from typing import Final

import aiohttp
import click
from aiohttp.abc import ResolveResult

from kiln.runtime import process
from kiln.runtime.router import app, mirroring, sources
from kiln.runtime.router import metrics as router_metrics

log = logging.getLogger("kiln.runtime.router")

MAX_UPSTREAM_CONNECTIONS: Final = 1024
"""Upstream connections the pool may open at once; more requests wait for one to come free."""
KEEPALIVE_SECONDS: Final = 15.0
"""How long an idle upstream connection is kept; well below aiohttp servers' 75 s, so kiln-server
never closes one the router is about to reuse."""


@dataclass(frozen=True)
class RouterSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    config_file: pathlib.Path | None = None
    configmap: tuple[str, str] | None = None
    """(namespace, name) of the ConfigMap whose `router.json` key holds the configuration."""
    upstream_timeout: float = 30.0
    drain_delay: float = 2.0


class SocketResolver(aiohttp.ThreadedResolver):
    """Names resolved by `socket.getaddrinfo` on a thread, as the standard event loop does.

    uvloop resolves in libuv, past Python's socket module, so whatever configures resolution
    there (the dev cluster's pod shim, which maps cluster DNS names) would not apply.
    """

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        infos = await loop.run_in_executor(
            None, functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, family=family)
        )
        return [
            ResolveResult(
                hostname=host, host=str(address[0]), port=int(address[1]), family=family_, proto=proto, flags=0
            )
            for family_, _, proto, _, address in infos
        ]


def _session(upstream_timeout: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=MAX_UPSTREAM_CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS, resolver=SocketResolver()
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=upstream_timeout),
        # Bodies pass through as the upstream sent them, and the upstream sees only the client's headers.
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def serve(settings: RouterSettings) -> int:
    loop = asyncio.get_running_loop()
    stop = process.stop_on_signals()
    async with _session(settings.upstream_timeout) as session:
        copies = mirroring.Mirroring(session)
        router = app.Router(session, router_metrics.RouterMetrics(), copies)
        # No request can outlast the upstream timeout, so that (and a second) bounds the wait for them.
        runner = await process.listen(
            router.handle, app.request_factory(), settings.host, settings.port, settings.upstream_timeout + 1
        )
        log.info("kiln-router listening on %s:%d", settings.host, settings.port)
        poller, watch = None, None
        if settings.config_file is not None:
            poller = asyncio.create_task(sources.poll_file(settings.config_file, router.offer, router.reject))
        if settings.configmap is not None:
            watch = sources.ConfigMapWatch(*settings.configmap, loop, router.offer, router.reject)
            watch.start()
        await stop.wait()
        router.draining = True
        await process.drain(runner, settings.drain_delay, log)
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if watch is not None:
            watch.stop()
        await copies.close()
        log.info("stopped")
    return 0


def _configmap(_: click.Context, __: click.Parameter, value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    namespace, slash, name = value.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise click.BadParameter(f"must be NAMESPACE/NAME, not {value!r}")
    return namespace, name


DEFAULTS = RouterSettings()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@process.host_option(DEFAULTS.host, "KILN_ROUTER_HOST")
@process.port_option(DEFAULTS.port, "KILN_ROUTER_PORT")
@click.option(
    "--config-file",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    envvar="KILN_ROUTER_CONFIG_FILE",
    help="A JSON configuration file, re-read when it changes (tests, benchmarks, a mounted ConfigMap).",
)
@click.option(
    "--configmap",
    callback=_configmap,
    envvar="KILN_ROUTER_CONFIGMAP",
    metavar="NAMESPACE/NAME",
    help="A ConfigMap whose router.json key holds the configuration, watched through the Kubernetes API.",
)
@click.option(
    "--upstream-timeout",
    default=DEFAULTS.upstream_timeout,
    type=click.FloatRange(min=0, min_open=True),
    envvar="KILN_ROUTER_UPSTREAM_TIMEOUT",
    show_default=True,
    help="Seconds an upstream has to answer before the client gets 504.",
)
@process.drain_delay_option(
    DEFAULTS.drain_delay, "KILN_ROUTER_DRAIN_DELAY", "Seconds to keep proxying after SIGTERM with readiness off."
)
@process.log_level_option()
def main(
    *,
    host: str,
    port: int,
    config_file: pathlib.Path | None,
    configmap: tuple[str, str] | None,
    upstream_timeout: float,
    drain_delay: float,
    log_level: str,
) -> None:
    """Proxy requests to a ModelDeployment's variants by weight or by the x-kiln-variant header.

    Its own endpoints: /healthz, /readyz, /metrics, /router/config (the configuration in force) and
    /router/shadow (the shadow comparison, with mirror.compare).
    """
    process.configure_logging(log_level)
    if (config_file is None) == (configmap is None):
        raise click.UsageError("give exactly one of --config-file and --configmap")
    settings = RouterSettings(host, port, config_file, configmap, upstream_timeout, drain_delay)
    sys.exit(process.run(serve(settings)))
