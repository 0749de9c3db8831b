"""kiln-router's shadow window: what it counts, when a reload keeps or restarts it, its p99s."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kiln.runtime.router import app, config, mirroring, shadow
from kiln.runtime.router import metrics as router_metrics

AGREEING = json.dumps({"outputs": [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [2]}]}).encode()
DISAGREEING = json.dumps({"outputs": [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [1]}]}).encode()


def configuration(
    candidate: str = "1.1.0", stable: str = "1.0.0", weights: tuple[int, int] = (100, 0), **compare: Any
) -> config.RouterConfig:
    return config.parse(
        json.dumps(
            {
                "variants": {
                    "stable": {"url": "http://stable", "version": stable},
                    "candidate": {"url": "http://candidate", "version": candidate},
                },
                "weights": {"stable": weights[0], "candidate": weights[1]},
                "mirror": {"variant": "candidate", "percent": 100, "compare": {"against": "stable", **compare}},
            }
        )
    )


def sample(metrics: router_metrics.RouterMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


def test_outcomes_are_counted_in_the_window_and_the_metrics() -> None:
    metrics = router_metrics.RouterMetrics()
    window = shadow.window_for(configuration(), 1, None, metrics)
    assert window is not None
    labels = {"variant": "candidate", "version": "1.1.0"}
    for outcome in router_metrics.SHADOW_OUTCOMES:
        assert sample(metrics, "kiln_router_shadow_comparisons_total", **labels, outcome=outcome) == 0

    window.settle(200, AGREEING, 0.010, mirroring.Reply(200, AGREEING, 0.020))
    window.settle(200, AGREEING, 0.010, mirroring.Reply(200, DISAGREEING, 0.020))
    window.settle(200, AGREEING, 0.010, mirroring.Reply(500, b'{"error": "x"}', 0.001))
    window.settle(200, AGREEING, 0.010, mirroring.Reply(None, b"", 0.5, "timeout"))
    window.settle(200, AGREEING, 0.010, mirroring.Reply(None, b"", 0.0, "error"))
    window.settle(503, b'{"error": "not ready"}', 0.010, mirroring.Reply(200, AGREEING, 0.020))
    window.dropped()

    shown = window.document()
    assert {key: shown[key] for key in ("compared", "agree", "disagree", "errors", "dropped", "agreement")} == {
        "compared": 2,
        "agree": 1,
        "disagree": 1,
        "errors": 3,
        "dropped": 1,
        "agreement": 0.5,
    }
    expected = {"agree": 1, "disagree": 1, "error": 3, "dropped": 1}
    for outcome, count in expected.items():
        assert sample(metrics, "kiln_router_shadow_comparisons_total", **labels, outcome=outcome) == count
    # Latencies of the answered and the timed-out shadows; the one refused at once has none.
    assert sample(metrics, "kiln_router_shadow_latency_seconds_count", **labels, role="shadow") == 4
    assert sample(metrics, "kiln_router_shadow_latency_seconds_count", **labels, role="live") == 4
    assert shown["shadowP99"] == 0.5
    assert shown["liveP99"] == 0.010
    assert shown["latencyRatio"] == pytest.approx(50)


def test_an_empty_window_reports_nulls() -> None:
    window = shadow.window_for(configuration(), 4, None, router_metrics.RouterMetrics())
    assert window is not None

    assert window.document() == {
        "generation": 4,
        "variant": "candidate",
        "version": "1.1.0",
        "against": "stable",
        "againstVersion": "1.0.0",
        "tolerance": 1e-6,
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


@pytest.mark.parametrize(
    ("changed", "kept"),
    [
        (configuration(weights=(50, 50)), True),
        (configuration(candidate="1.2.0"), False),
        (configuration(stable="0.9.0"), False),
        (configuration(tolerance=0.1), False),
    ],
    ids=["weights-only", "shadow-version", "against-version", "tolerance"],
)
def test_a_reload_keeps_the_window_unless_it_changes_what_is_compared(changed: config.RouterConfig, kept: bool) -> None:
    metrics = router_metrics.RouterMetrics()
    first = shadow.window_for(configuration(), 1, None, metrics)
    assert first is not None
    first.dropped()

    second = shadow.window_for(changed, 2, first, metrics)

    assert second is not None
    assert (second is first) is kept
    assert second.document()["generation"] == (1 if kept else 2)
    assert second.document()["dropped"] == (1 if kept else 0)


def test_no_compare_no_window() -> None:
    plain = config.parse(
        json.dumps(
            {
                "variants": {
                    "stable": {"url": "http://s", "version": "1"},
                    "candidate": {"url": "http://c", "version": "2"},
                },
                "weights": {"stable": 100, "candidate": 0},
                "mirror": {"variant": "candidate", "percent": 100},
            }
        )
    )

    assert shadow.window_for(plain, 1, None, router_metrics.RouterMetrics()) is None


def test_the_p99_is_the_nearest_rank_over_a_bounded_reservoir() -> None:
    latencies = shadow.Latencies(size=100)
    assert latencies.p99() is None
    for value in range(1000):
        latencies.add(value)

    assert latencies.p99() == 998  # the last 100 values, 900..999; rank 99 of them


async def test_a_copy_settles_when_it_is_done_and_a_cancelled_one_not_at_all() -> None:
    window = shadow.window_for(configuration(), 1, None, router_metrics.RouterMetrics())
    assert window is not None
    gate = asyncio.Event()

    async def reply() -> mirroring.Reply:
        await gate.wait()
        return mirroring.Reply(200, AGREEING, 0.02)

    answered, cancelled = asyncio.create_task(reply()), asyncio.create_task(reply())
    window.settle_when_done(answered, 200, AGREEING, 0.01)
    window.settle_when_done(cancelled, 200, AGREEING, 0.01)
    assert window.document()["compared"] == 0
    cancelled.cancel()
    gate.set()
    await asyncio.gather(answered, cancelled, return_exceptions=True)
    await asyncio.sleep(0)

    assert window.document()["agree"] == 1
    assert window.document()["compared"] == 1


async def test_copies_beyond_the_in_flight_limit_are_dropped_and_the_live_answers_never_wait() -> None:
    """In-process: a Router with room for one copy in front of two aiohttp upstreams on loopback, the
    shadow holding every answer until released."""
    release = asyncio.Event()

    async def live(_: web.Request) -> web.Response:
        return web.Response(body=AGREEING, content_type="application/json")

    async def held(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=AGREEING, content_type="application/json")

    upstreams = []
    for handler in (live, held):
        application = web.Application()
        application.router.add_post("/v2/models/iris/infer", handler)
        runner = web.AppRunner(application)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        upstreams.append((runner, f"http://127.0.0.1:{runner.addresses[0][1]}"))
    document = {
        "variants": {
            "stable": {"url": upstreams[0][1], "version": "1.0.0"},
            "candidate": {"url": upstreams[1][1], "version": "1.1.0"},
        },
        "weights": {"stable": 100, "candidate": 0},
        "mirror": {"variant": "candidate", "percent": 100, "compare": {"against": "stable"}},
    }
    metrics = router_metrics.RouterMetrics()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        copies = mirroring.Mirroring(session, limit=1)
        router = app.Router(session, metrics, copies)
        router.offer(json.dumps(document), "test")
        front = web.ServerRunner(web.Server(router.handle))
        await front.setup()
        site = web.TCPSite(front, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{front.addresses[0][1]}/v2/models/iris/infer"
        try:
            async with aiohttp.ClientSession() as client:
                for _ in range(3):
                    async with asyncio.timeout(2), client.post(url, data=b"{}") as answer:
                        assert answer.status == 200
                        assert answer.headers["x-kiln-variant"] == "stable"
                shown = await (await client.get(url.replace("/v2/models/iris/infer", "/router/shadow"))).json()
                assert (shown["compared"], shown["dropped"]) == (0, 2)

                release.set()
                assert router.routing is not None
                window = router.routing.shadow
                assert window is not None
                async with asyncio.timeout(5):
                    while window.document()["agree"] < 1:
                        await asyncio.sleep(0.01)
        finally:
            await front.cleanup()
            await copies.close()
            for runner, _ in upstreams:
                await runner.cleanup()

    labels = {"variant": "candidate", "version": "1.1.0"}
    assert sample(metrics, "kiln_router_shadow_comparisons_total", **labels, outcome="agree") == 1
    assert sample(metrics, "kiln_router_shadow_comparisons_total", **labels, outcome="dropped") == 2
    assert sample(metrics, "kiln_router_mirrored_requests_total", **labels, outcome="dropped") == 2
