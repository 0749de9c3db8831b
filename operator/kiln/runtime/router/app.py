"""The HTTP shell of kiln-router: pick a variant, proxy the request to it, answer with its reply.

Like kiln-server it runs one handler on aiohttp's low-level server: a proxy's own work per request
is small, and `web.Application`'s router and middleware would be most of it. The router's own
endpoints (`/healthz`, `/readyz`, `/metrics`, `/router/config`, `/router/shadow`) are answered here
and never proxied; every other method and path goes to an upstream.

The configuration in force is one immutable `Routing`, replaced whole on a reload: a request reads
it once, so it keeps the upstream it picked while a reload swaps the next requests' choice, and
nothing in flight is dropped. A request names its variant with the `x-kiln-variant` header; a name
the configuration does not have falls back to the weighted pick, as a header route that does not
match falls back to the default route in a mesh. Without the header, a path that names a model
version (`/v2/models/{name}/versions/{v}/...`) goes to the variant serving that version, so
ground truth posted to `.../versions/{v}/feedback` reaches the variant that made the prediction;
an unversioned `/feedback` is refused (400) while more than one variant is configured, since the
router cannot tell which one served it. Upstreams that give no answer become 502 (or 504
on a timeout) with a JSON `{"error": ...}`, counted against the variant.

With `mirror.compare`, a request whose live variant is the one compared against has its copy's
answer compared with the live answer once both are done (see `shadow`); the client has the live
answer as soon as it arrives, whatever the copy does. `GET /router/shadow` reports the comparison:

    {"generation": 3, "variant": "candidate", "version": "1.1.0", "against": "stable",
     "againstVersion": "1.0.0", "tolerance": 1e-06, "compared": 200, "agree": 194,
     "disagree": 6, "errors": 0, "dropped": 0, "agreement": 0.97, "latencyRatio": 1.08,
     "liveP99": 0.0021, "shadowP99": 0.0023}

`generation` is the configuration that started these counts (the last one that changed the
mirrored variant or version, or what it is compared with); `compared` is agree + disagree, and
`agreement` agree / compared, null before the first; `errors` are shadows that gave no 200
inference answer, `dropped` copies never sent (too many in flight); the p99s are in seconds, over
recent compared requests, and `latencyRatio` is shadowP99 / liveP99. Without a comparison the
counts are 0 and `against`, `agreement`, the ratio and the p99s null.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CONTENT_TYPE_LATEST
from yarl import URL

from kiln.runtime.router import config as router_config
from kiln.runtime.router import metrics as router_metrics
from kiln.runtime.router import mirroring, shadow

log = logging.getLogger(__name__)

VARIANT_HEADER: Final = "x-kiln-variant"
MAX_BODY_BYTES: Final = 8 << 20
"""kiln-server's default limit; a larger body would be refused upstream anyway."""

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    }
)
"""Headers about one connection (RFC 9110 §7.6.1), never forwarded."""

_SET_BY_CLIENT: Final = HOP_BY_HOP | {"host", "content-length"}
"""Request headers the router's client sets afresh for the upstream connection and body."""
_SET_BY_SERVER: Final = HOP_BY_HOP | {"content-length"}
"""Response headers the router's server sets afresh for the client connection and body."""
_JSON_HEADERS: Final = {"Content-Type": "application/json"}
_VERSIONS: Final = "/versions/"
_FEEDBACK: Final = "/feedback"
_UNADDRESSED_FEEDBACK: Final = (
    "more than one variant serves this model, so the router cannot tell which one made the prediction: "
    "post the truth to /v2/models/{name}/versions/{model_version}/feedback with the model_version the "
    f"inference answer gave, or send back its {VARIANT_HEADER} header"
)


def _version_in(path: str) -> str:
    """The version a `/v2/models/{name}/versions/{v}/...` path names; empty for any other path."""
    parts = path.split("/")
    if len(parts) > 5 and parts[1:3] == ["v2", "models"] and parts[4] == "versions":
        return parts[5]
    return ""


def _json(status: int, document: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), headers=_JSON_HEADERS)


class Route:
    """A variant as requests reach it: its upstream origin and its metric children."""

    __slots__ = ("name", "origin", "recorder", "version")

    def __init__(self, variant: router_config.Variant, metrics: router_metrics.RouterMetrics) -> None:
        self.name = variant.name
        self.version = variant.version
        self.origin = variant.url
        self.recorder = metrics.recorder(variant.name, variant.version)


@dataclass(frozen=True)
class Routing:
    """One configuration ready for requests; never changed, only replaced."""

    config: router_config.RouterConfig
    generation: int
    origin: str
    """Where the configuration came from (a file, a ConfigMap), for /router/config and the log."""
    routes: Mapping[str, Route]
    slots: tuple[Route, ...]
    """The configuration's weighted slots as routes, so a pick is one index."""
    by_version: Mapping[str, Route]
    """The variant serving each version, for paths that name one (the first in the configuration)."""
    mirror: Route | None
    mirror_share: float
    """The mirrored fraction of requests, 0..1."""
    against: Route | None
    """The variant whose live answers the mirror's are compared with, if any."""
    shadow: shadow.Window | None
    """The running comparison; kept from the previous Routing while its target is the same."""

    @classmethod
    def build(
        cls,
        config: router_config.RouterConfig,
        generation: int,
        origin: str,
        metrics: router_metrics.RouterMetrics,
        previous: Routing | None = None,
    ) -> Routing:
        routes = {name: Route(variant, metrics) for name, variant in config.variants.items()}
        by_version: dict[str, Route] = {}
        for route in routes.values():
            by_version.setdefault(route.version, route)
        mirror = routes[config.mirror.variant] if config.mirror.active and config.mirror.variant else None
        compare = config.mirror.compare
        window = shadow.window_for(config, generation, previous.shadow if previous is not None else None, metrics)
        return cls(
            config=config,
            generation=generation,
            origin=origin,
            routes=routes,
            slots=tuple(routes[name] for name in config.slots),
            by_version=by_version,
            mirror=mirror,
            mirror_share=config.mirror.percent / router_config.TOTAL_WEIGHT,
            against=routes[compare.against] if compare is not None else None,
            shadow=window,
        )


class Router:
    """Proxies requests by the current Routing; `offer` reloads it, `draining` turns readiness off."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        metrics: router_metrics.RouterMetrics,
        mirror: mirroring.Mirroring,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.session = session
        self.metrics = metrics
        self.mirroring = mirror
        self.routing: Routing | None = None
        self.draining = False
        self._draw = draw
        self._own: dict[str, Callable[[], web.Response]] = {
            "/healthz": lambda: _json(200, {"live": True}),
            "/readyz": self._ready,
            "/metrics": self._metrics,
            "/router/config": self._config,
            "/router/shadow": self._shadow,
        }

    def offer(self, text: str | bytes, origin: str) -> None:
        """Apply the configuration in `text` unless it is invalid (logged, the last good one stays)
        or the one already in force."""
        try:
            config = router_config.parse(text)
        except router_config.ConfigError as error:
            self.reject(str(error), origin)
            return
        current = self.routing
        if current is not None and current.config.digest == config.digest:
            return
        generation = current.generation + 1 if current is not None else 1
        self.routing = Routing.build(config, generation, origin, self.metrics, current)
        self.metrics.set_weights(config.weights)
        self.metrics.reloads.labels("applied").inc()
        weights = ", ".join(f"{name} {weight}%" for name, weight in config.weights.items())
        log.info("configuration %d from %s applied: %s", generation, origin, weights)

    def reject(self, reason: str, origin: str) -> None:
        self.metrics.reloads.labels("rejected").inc()
        kept = "no configuration yet" if self.routing is None else f"keeping configuration {self.routing.generation}"
        log.error("configuration from %s rejected (%s): %s", origin, kept, reason)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        own = self._own.get(request.path)
        if own is not None:
            if request.method not in ("GET", "HEAD"):
                return _json(405, {"error": f"{request.path} takes GET, not {request.method}"})
            return own()
        routing = self.routing
        if routing is None:
            return _json(503, {"error": "the router has no configuration yet"})
        try:
            return await self._proxy(request, routing)
        except Exception:
            log.exception("unexpected error proxying %s %s", request.method, request.path)
            return _json(500, {"error": "internal error; the router's log has the details"})

    async def _proxy(self, request: web.BaseRequest, routing: Routing) -> web.StreamResponse:
        started = time.perf_counter()
        named = request.headers.get(VARIANT_HEADER)
        route = routing.routes.get(named) if named is not None else None
        if route is None and _VERSIONS in request.path:
            route = routing.by_version.get(_version_in(request.path))
        if route is None:
            if len(routing.routes) > 1 and request.path.endswith(_FEEDBACK):
                return _json(400, {"error": _UNADDRESSED_FEEDBACK})
            route = routing.slots[int(self._draw() * router_config.TOTAL_WEIGHT)]
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json(413, {"error": f"the body is larger than the router takes ({MAX_BODY_BYTES} bytes)"})
        headers = _forwarded(request.headers, request.remote)
        url = URL(route.origin + request.raw_path, encoded=True)
        mirror = routing.mirror
        copy, window = None, None
        if mirror is not None and mirror is not route and self._draw() < routing.mirror_share:
            # Sent first, so the copy starts with the live request and both see the input at once.
            copy = self.mirroring.send(
                mirror, request.method, URL(mirror.origin + request.raw_path, encoded=True), headers, body
            )
            window = routing.shadow if route is routing.against else None
            if window is not None and copy is None:
                window.dropped()
        sent = time.perf_counter()
        status, response, payload = await self._forward(route, request.method, url, headers, body)
        if copy is not None and window is not None:
            window.settle_when_done(copy, status, payload, time.perf_counter() - sent)
        response.headers[VARIANT_HEADER] = route.name
        route.recorder.record(status, time.perf_counter() - started)
        return response

    async def _forward(
        self, route: Route, method: str, url: URL, headers: CIMultiDict[str], body: bytes
    ) -> tuple[int, web.Response, bytes]:
        """The upstream's status, the response for the client, and the upstream's body (empty if none)."""
        try:
            async with self.session.request(
                method, url, headers=headers, data=body or None, allow_redirects=False
            ) as upstream:
                payload = await upstream.read()
                response = web.Response(status=upstream.status, body=payload, headers=_returned(upstream.headers))
                return upstream.status, response, payload
        # aiohttp's ServerTimeoutError is also a ClientError, so the timeout is caught first.
        except TimeoutError:
            return self._failed(route, "timeout", 504, f"the {route.name} upstream did not answer in time")
        except aiohttp.ClientConnectorError as error:
            return self._failed(route, "connect", 502, f"the {route.name} upstream is unreachable: {error}")
        except aiohttp.ClientError as error:
            message = f"the {route.name} upstream gave no valid answer: {type(error).__name__}: {error}"
            return self._failed(route, "protocol", 502, message)

    @staticmethod
    def _failed(route: Route, kind: str, status: int, message: str) -> tuple[int, web.Response, bytes]:
        route.recorder.errors[kind].inc()
        # Debug, not warning: a down upstream fails every request, and the metric already counts them.
        log.debug("%s", message)
        return status, _json(status, {"error": message}), b""

    def _ready(self) -> web.Response:
        if self.draining:
            return _json(503, {"ready": False, "reason": "shutting down"})
        if self.routing is None:
            return _json(503, {"ready": False, "reason": "no configuration loaded yet"})
        return _json(200, {"ready": True, "generation": self.routing.generation})

    def _config(self) -> web.Response:
        routing = self.routing
        if routing is None:
            return _json(503, {"error": "no configuration loaded yet"})
        document = {
            "generation": routing.generation,
            "digest": routing.config.digest,
            "origin": routing.origin,
            "config": routing.config.document(),
        }
        return _json(200, document)

    def _shadow(self) -> web.Response:
        routing = self.routing
        if routing is None:
            return _json(503, {"error": "no configuration loaded yet"})
        if routing.shadow is None:
            return _json(200, shadow.empty_document(routing.generation, routing.config.mirror.variant))
        return _json(200, routing.shadow.document())

    def _metrics(self) -> web.Response:
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


def _forwarded(incoming: CIMultiDictProxy[str], client: str | None) -> CIMultiDict[str]:
    """The request's end-to-end headers for the upstream, with the client appended to X-Forwarded-For."""
    headers = _end_to_end(incoming, _SET_BY_CLIENT)
    if client is not None:
        earlier = headers.popall("X-Forwarded-For", [])
        headers["X-Forwarded-For"] = ", ".join([*earlier, client])
    return headers


def _returned(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream's end-to-end response headers for the client."""
    return _end_to_end(incoming, _SET_BY_SERVER)


def _end_to_end(incoming: CIMultiDictProxy[str], dropped: frozenset[str]) -> CIMultiDict[str]:
    """`incoming` without `dropped` and the headers its Connection header names as hop-by-hop."""
    connection = incoming.get("Connection")
    named = {token.strip().lower() for token in connection.split(",")} if connection else set()
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lowered = name.lower()
        if lowered not in dropped and lowered not in named:
            headers.add(name, value)
    return headers


def request_factory() -> Callable[..., web.BaseRequest]:
    """Requests that refuse to read a body beyond MAX_BODY_BYTES, chunked ones included."""

    def make(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return web.BaseRequest(
            message, payload, protocol, writer, task, asyncio.get_running_loop(), client_max_size=MAX_BODY_BYTES
        )

    return make
