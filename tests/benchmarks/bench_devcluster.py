"""Benchmark the dev cluster's HTTP API: create throughput, list latency, watch fan-out.

Run with `python tests/benchmarks/bench_devcluster.py` (or `make bench`). It starts
the dev cluster as `kiln cluster start` does (a separate process persisting to
SQLite in a temporary directory), then:

1. creates 5,000 ConfigMaps through the REST API from a few concurrent clients;
2. lists them (one full list, then in pages of 500);
3. opens 20 watches and times how long the events of N more writes take to reach
   every watcher.

Not collected by pytest (the file name does not match test_*.py).
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import tempfile
import time
from dataclasses import dataclass

import httpx

from kiln.devcluster import cluster

TARGET_WRITES_PER_SECOND = 1000.0
NAMESPACE = "default"
CONFIGMAPS = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


@dataclass
class Results:
    created: int
    create_seconds: float
    listed: int
    list_seconds: float
    paged_list_seconds: float
    watchers: int
    events_per_watcher: int
    fanout_seconds: float
    write_seconds: float

    @property
    def writes_per_second(self) -> float:
        return self.created / self.create_seconds

    @property
    def events_per_second(self) -> float:
        return self.watchers * self.events_per_watcher / self.fanout_seconds


def configmap(name: str, group: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"bench": group}},
        "data": {"payload": "x" * 64, "name": name},
    }


async def create_all(url: str, names: list[str], group: str, clients: int) -> float:
    """Create one ConfigMap per name from `clients` concurrent HTTP clients; returns the seconds taken."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        queue.put_nowait(name)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while True:
                try:
                    name = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                response = await http.post(CONFIGMAPS, json=configmap(name, group))
                if response.status_code != 201:
                    raise RuntimeError(f"creating {name}: {response.status_code} {response.text}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started


async def list_all(url: str, group: str, expected: int) -> tuple[float, float]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        started = time.perf_counter()
        response = await http.get(CONFIGMAPS, params={"labelSelector": f"bench={group}"})
        items = response.json()["items"]
        full = time.perf_counter() - started
        if len(items) != expected:
            raise RuntimeError(f"listed {len(items)} ConfigMaps, expected {expected}")

        started = time.perf_counter()
        seen, token = 0, ""
        while True:
            params = {"labelSelector": f"bench={group}", "limit": "500"}
            if token:
                params["continue"] = token
            page = (await http.get(CONFIGMAPS, params=params)).json()
            seen += len(page["items"])
            token = page["metadata"].get("continue", "")
            if not token:
                break
        paged = time.perf_counter() - started
        if seen != expected:
            raise RuntimeError(f"paged through {seen} ConfigMaps, expected {expected}")
    return full, paged


async def fan_out(url: str, watchers: int, events: int, clients: int) -> tuple[float, float]:
    """Open `watchers` watches, write `events` objects; seconds until every watcher saw them all, and to write."""
    group = "fanout"
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        since = (await http.get(CONFIGMAPS, params={"limit": "1"})).json()["metadata"]["resourceVersion"]

    params = {
        "watch": "true",
        "labelSelector": f"bench={group}",
        "resourceVersion": since,
        "timeoutSeconds": "600",
    }
    limits = httpx.Limits(max_connections=watchers + 1)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60, read=None), limits=limits) as http:
        opened = asyncio.Event()
        ready = 0

        async def watch() -> None:
            nonlocal ready
            async with http.stream("GET", CONFIGMAPS, params=params) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"watch: {response.status_code}")
                ready += 1
                if ready == watchers:
                    opened.set()
                seen = 0
                async for line in response.aiter_lines():
                    if '"ADDED"' in line:
                        seen += 1
                        if seen == events:
                            return
            raise RuntimeError(f"a watch ended after {seen} of {events} events")

        tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
        await asyncio.wait_for(opened.wait(), 60)
        started = time.perf_counter()
        names = [f"fan-{i:05d}" for i in range(events)]
        write_seconds = await create_all(url, names, group, clients)
        await asyncio.wait_for(asyncio.gather(*tasks), 600)
        return time.perf_counter() - started, write_seconds


async def run(url: str, objects: int, clients: int, watchers: int, events: int) -> Results:
    names = [f"bench-{i:05d}" for i in range(objects)]
    create_seconds = await create_all(url, names, "create", clients)
    list_seconds, paged_seconds = await list_all(url, "create", objects)
    fanout_seconds, write_seconds = await fan_out(url, watchers, events, clients)
    return Results(
        created=objects,
        create_seconds=create_seconds,
        listed=objects,
        list_seconds=list_seconds,
        paged_list_seconds=paged_seconds,
        watchers=watchers,
        events_per_watcher=events,
        fanout_seconds=fanout_seconds,
        write_seconds=write_seconds,
    )


def report(results: Results, clients: int) -> bool:
    fast_enough = results.writes_per_second >= TARGET_WRITES_PER_SECOND
    print(
        f"create: {results.created} ConfigMaps from {clients} clients in {results.create_seconds:.2f}s"
        f" = {results.writes_per_second:,.0f} objects/s"
    )
    print(f"list:   {results.listed} ConfigMaps in one list: {results.list_seconds * 1000:.0f} ms")
    print(f"list:   {results.listed} ConfigMaps in pages of 500: {results.paged_list_seconds * 1000:.0f} ms")
    print(
        f"watch:  {results.events_per_watcher} events to each of {results.watchers} watchers in"
        f" {results.fanout_seconds:.2f}s (writes took {results.write_seconds:.2f}s)"
        f" = {results.events_per_second:,.0f} events/s delivered"
    )
    verdict = "yes" if fast_enough else "NO"
    print(f"sustains {TARGET_WRITES_PER_SECOND:,.0f} writes/s: {verdict} ({results.writes_per_second:,.0f} writes/s)")
    return fast_enough


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5000, help="ConfigMaps to create and list")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients creating them")
    parser.add_argument("--watchers", type=int, default=20, help="concurrent watches for the fan-out")
    parser.add_argument("--events", type=int, default=1000, help="writes each watcher must see")
    parser.add_argument("--in-memory", action="store_true", help="run the dev cluster without SQLite")
    parser.add_argument("--strict", action="store_true", help="exit 1 when below the write target")
    arguments = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as scratch:
        data_dir = pathlib.Path(scratch) / "devcluster"
        url = cluster.start_background(data_dir, 0, persist=not arguments.in_memory)
        try:
            print(f"dev cluster at {url} ({'in memory' if arguments.in_memory else 'SQLite'}), data in {data_dir}")
            results = asyncio.run(run(url, arguments.objects, arguments.clients, arguments.watchers, arguments.events))
        finally:
            cluster.stop_background(data_dir)
    fast_enough = report(results, arguments.clients)
    return 1 if arguments.strict and not fast_enough else 0


if __name__ == "__main__":
    sys.exit(main())
