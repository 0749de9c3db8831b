"""Benchmark kiln-router's cost: the same requests sent to kiln-server directly and through the router.

Run with `.venv/bin/python tests/benchmarks/bench_router.py` (or `make bench`). It trains the iris
LogisticRegression of bench_server.py, starts one kiln-server and one kiln-router in front of it
(all traffic to that one variant, as a rollout's stable phase is), both on 127.0.0.1, and measures,
in the same run:

- paced: RATE requests/s spread over PACED_CONNECTIONS keep-alive connections, each request sent
  at its scheduled time (the connection waits for it, never runs ahead), for SECONDS; latency is
  from the send to the last byte of the answer. The router's added p50/p99 is its latency minus
  the direct one. Lag is how far sends fell behind schedule, which shows the rate was held.
- max: bench_server.py's closed loop, CONCURRENCY connections each sending as soon as its answer
  arrives, for the most requests/s each path can take.

With `--shadow`, a second kiln-server (the same model) is the shadow of a second kiln-router that
mirrors every request to it and compares the answers (`mirror.compare`); the paced run through that
router shows what the comparison adds to the live latency, and its /router/shadow is printed.

Honest limits: the client, the router and kiln-server share this machine's cores (two here), so at
full load the router's CPU is taken from the server it fronts; the max-throughput ratio therefore
overstates what a router in its own pod costs. Every process is stopped at the end. Not collected
by pytest (the file name does not match test_*.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import sys
import time
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import bench_server
import numpy as np

RATE = 500
PACED_CONNECTIONS = 8
WARMUP_SECONDS = 1.0
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 3.0


@dataclass(frozen=True)
class Paced:
    path: str
    p50_ms: float
    p99_ms: float
    lag_p99_ms: float
    sent: int
    errors: int


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


async def paced_connection(port: int, request: bytes, schedule: list[float], found: dict[str, list[float]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for scheduled in schedule:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:"), 0
            )
            await reader.readexactly(length)
            if scheduled >= found["record_after"][0]:
                found["latency"].append(time.perf_counter() - sent)
                found["lag"].append(max(0.0, sent - scheduled))
                if head[9:12] != b"200":
                    found["errors"].append(1.0)
    finally:
        writer.close()


async def paced(port: int, path: str, body: bytes, seconds: float) -> dict[str, list[float]]:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    start = time.perf_counter() + 0.1
    total = int(RATE * (WARMUP_SECONDS + seconds))
    times = [start + position / RATE for position in range(total)]
    found: dict[str, list[float]] = {"record_after": [start + WARMUP_SECONDS], "latency": [], "lag": [], "errors": []}
    schedules = [times[offset::PACED_CONNECTIONS] for offset in range(PACED_CONNECTIONS)]
    await asyncio.gather(*(paced_connection(port, request, schedule, found) for schedule in schedules))
    return found


def measure_paced(name: str, port: int, path: str, body: bytes, seconds: float) -> Paced:
    found = run(paced(port, path, body, seconds))
    latency, lag = np.asarray(found["latency"]), np.asarray(found["lag"])
    result = Paced(
        path=name,
        p50_ms=float(np.percentile(latency, 50)) * 1e3,
        p99_ms=float(np.percentile(latency, 99)) * 1e3,
        lag_p99_ms=float(np.percentile(lag, 99)) * 1e3,
        sent=len(latency),
        errors=len(found["errors"]),
    )
    bench_server.log(
        f"  {name:<8} paced {RATE} req/s: p50 {result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms"
        f"  lag p99 {result.lag_p99_ms:6.3f} ms  sent {result.sent}  errors {result.errors}"
    )
    return result


def router_command(workdir: pathlib.Path, port: int, upstream_port: int, shadow_port: int | None = None) -> list[str]:
    """kiln-router sending everything to the upstream; with `shadow_port`, a copy of every request to
    that kiln-server too, compared with the live answer."""
    document: dict[str, Any] = {
        "variants": {"stable": {"url": f"http://127.0.0.1:{upstream_port}", "version": "1.0.0"}},
        "weights": {"stable": 100},
    }
    if shadow_port is not None:
        document["variants"]["shadow"] = {"url": f"http://127.0.0.1:{shadow_port}", "version": "1.0.0"}
        document["weights"]["shadow"] = 0
        document["mirror"] = {"variant": "shadow", "percent": 100, "compare": {"against": "stable"}}
    config = f"router-{port}.json"
    (workdir / config).write_text(json.dumps(document))
    router = pathlib.Path(sys.executable).with_name("kiln-router")
    flags = ["--config-file", config, "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    return [str(router), *flags]


def measure_shadow(workdir: pathlib.Path, server_port: int, infer: str, body: bytes, seconds: float) -> Paced:
    """Paced requests through a router that mirrors and compares every one with a second kiln-server."""
    shadow_port, router_port = bench_server.free_port(), bench_server.free_port()
    with (
        bench_server.started(
            "kiln-server-shadow", bench_server.kiln_command(workdir, shadow_port), shadow_port, infer, workdir
        ),
        bench_server.started(
            "kiln-router-shadow",
            router_command(workdir, router_port, server_port, shadow_port),
            router_port,
            infer,
            workdir,
        ),
    ):
        result = measure_paced("shadowed", router_port, infer, body, seconds)
        with urllib.request.urlopen(f"http://127.0.0.1:{router_port}/router/shadow", timeout=5) as answer:
            shown = json.loads(answer.read())
    bench_server.log(
        f"  shadow: compared {shown['compared']}, agreement {shown['agreement']}, errors {shown['errors']},"
        f" dropped {shown['dropped']}, latency ratio {shown['latencyRatio']}"
    )
    return result


def report(paced_results: dict[str, Paced], maxed: dict[str, bench_server.Result]) -> None:
    log = bench_server.log
    log("")
    log(
        f"{'path':<8} {'paced p50 ms':>13} {'paced p99 ms':>13} {'max req/s':>10} {'max p50 ms':>11} {'max p99 ms':>11}"
    )
    for name in ("direct", "router"):
        p, m = paced_results[name], maxed[name]
        log(
            f"{name:<8} {p.p50_ms:>13.3f} {p.p99_ms:>13.3f} {m.requests_per_second:>10,.0f}"
            f" {m.p50_ms:>11.2f} {m.p99_ms:>11.2f}"
        )
    direct, router = paced_results["direct"], paced_results["router"]
    added_p50, added_p99 = router.p50_ms - direct.p50_ms, router.p99_ms - direct.p99_ms
    log("")
    log(
        f"added by the router at {RATE} req/s: p50 {added_p50:.3f} ms (target <= {TARGET_ADDED_P50_MS}),"
        f" p99 {added_p99:.3f} ms (target <= {TARGET_ADDED_P99_MS});"
        f" {'within' if added_p50 <= TARGET_ADDED_P50_MS and added_p99 <= TARGET_ADDED_P99_MS else 'OVER'} target"
    )
    ratio = maxed["router"].requests_per_second / maxed["direct"].requests_per_second
    log(
        f"max throughput through the router: {ratio:.2f}x calling kiln-server directly (sharing {os.cpu_count()} cores)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per path and phase")
    parser.add_argument("--shadow", action="store_true", help="also measure a router comparing with a shadow")
    options = parser.parse_args()
    bench_server.CACHE.mkdir(exist_ok=True)
    workdir = bench_server.CACHE / "router-run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    estimator, features = bench_server.write_model(workdir)
    body = bench_server.request_body(features[:1])
    infer = f"/v2/models/{bench_server.MODEL}/infer"
    log = bench_server.log
    log(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start; one-row iris requests")
    server_port, router_port = bench_server.free_port(), bench_server.free_port()
    server_command = bench_server.kiln_command(workdir, server_port)
    with (
        bench_server.started("kiln-server", server_command, server_port, infer, workdir) as server,
        bench_server.started(
            "kiln-router", router_command(workdir, router_port, server_port), router_port, infer, workdir
        ) as router,
    ):
        expected = estimator.predict(features[:1]).tolist()
        bench_server.check_answer(server, body, expected)
        bench_server.check_answer(router, body, expected)
        ports = {"direct": server.port, "router": router.port}
        paced_results = {name: measure_paced(name, port, infer, body, options.seconds) for name, port in ports.items()}
        maxed = {}
        for name, target in (("direct", server), ("router", router)):
            maxed[name] = bench_server.measure(
                bench_server.Server(name, target.process, target.port, infer), "1 row", body, options.seconds
            )
        shadowed = measure_shadow(workdir, server.port, infer, body, options.seconds) if options.shadow else None
    report(paced_results, maxed)
    if shadowed is not None:
        plain = paced_results["router"]
        log(
            f"added by comparing every request with a shadow at {RATE} req/s: p50"
            f" {shadowed.p50_ms - plain.p50_ms:.3f} ms, p99 {shadowed.p99_ms - plain.p99_ms:.3f} ms"
            f" (the shadow kiln-server shares the cores too)"
        )
    log(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
