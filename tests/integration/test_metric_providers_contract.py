"""The metric providers' contract: the real ones against a real Prometheus and a real HTTP endpoint,
and FakeMetricProvider, answer the same cases the same way.

Given a loopback aiohttp server that serves a fixed exposition (`/metrics`) and JSON endpoints,
and the Debian `prometheus` binary scraping it every second (started by the dev cluster's
`Prometheus`), when each case's query runs, then its Answer is the case's outcome: a value,
empty, or an error naming the server and the reason. The fake is scripted with each case's
outcome, the way a controller test would script it; the real side keeps those outcomes honest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from aiohttp import web as aiohttp_web
from polling import eventually

from kiln.devcluster import prometheus as devcluster_prometheus
from kiln.providers import metrics
from kiln.providers.metrics import fake

T = TypeVar("T")
HOST = "127.0.0.1"
SCRAPE_WAIT = 40.0  # Prometheus waits some seconds before its first scrape of a new target
EXPOSITION = """\
# TYPE kiln_contract_error_ratio gauge
kiln_contract_error_ratio 0.25
# TYPE kiln_contract_latency_seconds gauge
kiln_contract_latency_seconds{pod="a"} 0.1
kiln_contract_latency_seconds{pod="b"} 0.2
# TYPE kiln_contract_idle_ratio gauge
kiln_contract_idle_ratio NaN
"""
ERRORS = {"data": {"errorRate": 0.25, "latencies": [0.1, 0.2], "idle": None}}


@dataclasses.dataclass(frozen=True)
class Servers:
    prometheus: str
    web: str
    unreachable: str
    """A loopback address nothing listens on."""

    def render(self, template: str) -> str:
        """`{web}/api` with the web endpoint's URL; replaced by name, since PromQL has braces too."""
        for name, url in dataclasses.asdict(self).items():
            template = template.replace("{" + name + "}", url)
        return template


@dataclasses.dataclass(frozen=True)
class Case:
    """A query (its address, URL and error fragments are templates over Servers) and its outcome."""

    name: str
    provider: str
    expression: str
    value: metrics.base.Value | None = None
    error_mentions: tuple[str, ...] = ()
    """Empty when the outcome is a value or empty; otherwise what the error must say."""
    address: str = "{prometheus}"
    json_path: str = "$"
    headers: tuple[tuple[str, str], ...] = ()

    def query(self, servers: Servers) -> metrics.Query:
        return metrics.Query(
            self.provider,
            servers.render(self.expression),
            address=servers.render(self.address),
            json_path=self.json_path,
            headers=dict(self.headers),
            timeout=5,
        )

    def scripted(self, servers: Servers) -> metrics.Answer:
        if self.error_mentions:
            return metrics.Answer.failure(": ".join(servers.render(part) for part in self.error_mentions))
        return metrics.Answer.empty() if self.value is None else metrics.Answer.of(self.value)

    def check(self, answer: metrics.Answer, servers: Servers) -> None:
        if not self.error_mentions:
            assert answer == self.scripted(servers)
            return
        assert answer.value is None
        assert answer.error is not None
        for part in self.error_mentions:
            assert servers.render(part) in answer.error


CASES = [
    Case("one-series-is-a-float", "prometheus", "kiln_contract_error_ratio", value=0.25),
    Case("several-series-are-a-list", "prometheus", "sort(kiln_contract_latency_seconds)", value=[0.1, 0.2]),
    Case("no-series-is-empty", "prometheus", 'kiln_contract_error_ratio{pod="gone"}'),
    Case("nan-is-empty", "prometheus", "kiln_contract_idle_ratio"),
    Case("a-scalar-is-a-float", "prometheus", "scalar(kiln_contract_error_ratio) * 2", value=0.5),
    Case(
        "a-syntax-error-is-an-error-naming-it",
        "prometheus",
        "sum(kiln_contract_error_ratio",
        error_mentions=("prometheus at {prometheus}", "bad_data", "parse error"),
    ),
    Case(
        "a-range-vector-asks-for-an-instant-query",
        "prometheus",
        "kiln_contract_error_ratio[5m]",
        error_mentions=("prometheus at {prometheus}", "use an instant query"),
    ),
    Case(
        "an-unreachable-prometheus-is-an-error",
        "prometheus",
        "up",
        address="{unreachable}",
        error_mentions=("prometheus at {unreachable} did not answer", "connection refused"),
    ),
    Case("web-number", "web", "{web}/api/errors", json_path="$.data.errorRate", value=0.25),
    Case("web-list", "web", "{web}/api/errors", json_path="$.data.latencies", value=[0.1, 0.2]),
    Case("web-null-is-empty", "web", "{web}/api/errors", json_path="$.data.idle"),
    Case("web-headers-are-sent", "web", "{web}/api/team", headers=(("X-Team", "ml"),), value=1.0),
    Case(
        "web-http-error",
        "web",
        "{web}/api/team",
        error_mentions=("web endpoint {web}/api/team answered HTTP 403 Forbidden",),
    ),
    Case(
        "an-unreachable-endpoint-is-an-error",
        "web",
        "{unreachable}/api/errors",
        error_mentions=("web endpoint {unreachable}/api/errors did not answer", "connection refused"),
    ),
]


def endpoints() -> aiohttp_web.Application:
    """The exporter Prometheus scrapes, and the JSON endpoints the web provider reads."""

    async def exposition(request: aiohttp_web.Request) -> aiohttp_web.Response:
        return aiohttp_web.Response(text=EXPOSITION, content_type="text/plain")

    async def errors(request: aiohttp_web.Request) -> aiohttp_web.Response:
        return aiohttp_web.json_response(ERRORS)

    async def team(request: aiohttp_web.Request) -> aiohttp_web.Response:
        if request.headers.get("X-Team") != "ml":
            return aiohttp_web.json_response({"error": "who are you?"}, status=403)
        return aiohttp_web.json_response(1)

    app = aiohttp_web.Application()
    app.router.add_get("/metrics", exposition)
    app.router.add_get("/api/errors", errors)
    app.router.add_get("/api/team", team)
    return app


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop in a thread of its own, so the servers answer while the tests block on queries
    (as the controller's worker threads do)."""
    background = asyncio.new_event_loop()
    thread = threading.Thread(target=background.run_forever, name="metric-contract-servers", daemon=True)
    thread.start()
    try:
        yield background
    finally:
        background.call_soon_threadsafe(background.stop)
        thread.join(10)
        background.close()


def run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(devcluster_prometheus.READY_TIMEOUT_SECONDS + 10)


async def serve(runner: aiohttp_web.AppRunner) -> int:
    await runner.setup()
    site = aiohttp_web.TCPSite(runner, HOST, 0)
    await site.start()
    return int(runner.addresses[0][1])


@pytest.fixture(scope="module")
def servers(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """The endpoints and a Prometheus that has scraped them; both always stopped."""
    state = tmp_path_factory.mktemp("metric-providers")
    runner = aiohttp_web.AppRunner(endpoints(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    port = run(loop, serve(runner))
    targets_file = state / "targets.json"
    targets_file.write_text(json.dumps([{"targets": [f"{HOST}:{port}"], "labels": {}}]))
    server = devcluster_prometheus.Prometheus(state, targets_file, host=HOST)
    try:
        run(loop, server.start())
        found = Servers(
            prometheus=server.url,
            web=f"http://{HOST}:{port}",
            unreachable=f"http://{HOST}:{devcluster_prometheus.free_port(HOST)}",
        )
        wait_until_scraped(found)
        yield found
    finally:
        run(loop, server.stop())
        run(loop, runner.cleanup())


def wait_until_scraped(servers: Servers) -> None:
    first = metrics.Query("prometheus", "kiln_contract_error_ratio", address=servers.prometheus)
    eventually(
        lambda: not metrics.provider_for("prometheus").query(first).is_empty,
        "Prometheus to scrape the exporter",
        SCRAPE_WAIT,
    )


Run = Callable[[metrics.Query, Case, Servers], metrics.Answer]


def real(query: metrics.Query, case: Case, servers: Servers) -> metrics.Answer:
    return metrics.provider_for(query.provider).query(query)


def scripted_fake(query: metrics.Query, case: Case, servers: Servers) -> metrics.Answer:
    provider = fake.FakeMetricProvider([(query.expression, case.scripted(servers))])
    answer = provider.query(query)
    assert provider.queries == [query]
    return answer


@pytest.mark.parametrize("implementation", [real, scripted_fake], ids=["real", "fake"])
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_provider_answers_the_case_as_the_contract_says(servers: Servers, implementation: Run, case: Case) -> None:
    query = case.query(servers)
    case.check(implementation(query, case, servers), servers)
