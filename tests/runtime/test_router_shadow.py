"""The shadow strategy over real HTTP: kiln-router compares a mirrored variant's answers with the live ones.

Stable is kiln-server serving the iris LogisticRegression at 1.0.0. The shadows, each a kiln-server
of its own on loopback: `twin` serves the same model, `stump` a DecisionTree of depth 1 (so it
disagrees on a share of inputs this test computes itself), `slow` the same model with every answer
held back SLOW_SECONDS, `failing` the same model answering 500 to everything. Every router is a
`kiln-router` process (the helpers of test_router_http), stable takes all the traffic, and the
shadow gets a copy of every request, compared against stable.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from polling import eventually
from server_process import RunningServer, free_port, kiln_server, model_version, write_skops
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from test_router_http import INFER, RunningRouter, kiln_router

SLOW_SECONDS = 0.5
REQUESTS = 200
VERSIONS = {"stable": "1.0.0", "twin": "1.1.0", "stump": "2.0.0", "slow": "3.0.0", "failing": "4.0.0"}


@dataclass
class Shadows:
    servers: dict[str, RunningServer]

    def configuration(self, shadow: str, **changes: Any) -> dict[str, Any]:
        """Stable takes all the traffic; `shadow` gets a copy of every request, compared against stable.
        `other` is stable's server under another name, to serve requests that are not compared."""
        variants = {name: {"url": self.servers[name].url, "version": VERSIONS[name]} for name in ("stable", shadow)}
        variants["other"] = {"url": self.servers["stable"].url, "version": "0.1.0"}
        document: dict[str, Any] = {
            "variants": variants,
            "weights": {"stable": 100, shadow: 0, "other": 0},
            "mirror": {"variant": shadow, "percent": 100, "compare": {"against": "stable", "tolerance": 1e-6}},
        }
        document.update(changes)
        return document


@pytest.fixture(scope="module")
def stump(iris: Any) -> DecisionTreeClassifier:
    return DecisionTreeClassifier(max_depth=1, random_state=0).fit(iris.features, iris.labels)


@pytest.fixture(scope="module")
def shadows(
    tmp_path_factory: pytest.TempPathFactory, iris_model: LogisticRegression, stump: DecisionTreeClassifier
) -> Iterator[Shadows]:
    directory = tmp_path_factory.mktemp("shadows")
    logistic = write_skops(iris_model, directory / "logistic.skops")
    tree = write_skops(stump, directory / "stump.skops")
    slow = json.dumps({"delayRate": 1.0, "delaySeconds": SLOW_SECONDS})
    plans = {
        "stable": ("logistic", logistic, {}),
        "twin": ("logistic", logistic, {}),
        "stump": ("stump", tree, {}),
        "slow": ("logistic", logistic, {"KILN_FAULT_INJECTION": slow}),
        "failing": ("logistic", logistic, {"KILN_FAULT_INJECTION": json.dumps({"errorRate": 1.0})}),
    }
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, (model, digest, env) in plans.items():
            served = model_version(directory / f"{model}.skops", digest, version=VERSIONS[name])
            place = directory / name
            place.mkdir()
            servers[name] = stack.enter_context(kiln_server(place, [served], env=env))
        for server in servers.values():
            server.wait_ready()
        yield Shadows(servers)


@pytest.fixture
def directory(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path


def rows(iris: Any, count: int = REQUESTS) -> np.ndarray[Any, Any]:
    """`count` iris rows drawn with replacement, so every species and both sides of the stump's split occur."""
    return iris.features[np.random.default_rng(7).integers(0, len(iris.features), size=count)]


def body(row: np.ndarray[Any, Any], outputs: tuple[str, ...] = ()) -> dict[str, Any]:
    document: dict[str, Any] = {
        "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [float(x) for x in row]}]
    }
    if outputs:
        document["outputs"] = [{"name": name} for name in outputs]
    return document


def infer_all(
    router: RunningRouter, features: np.ndarray[Any, Any], outputs: tuple[str, ...] = (), **headers: str
) -> tuple[Counter[tuple[str, str, int]], list[float]]:
    """(x-kiln-variant, model_version, status) of one request per row, and each one's latency."""
    seen: Counter[tuple[str, str, int]] = Counter()
    latencies = []
    with httpx.Client(base_url=router.url, timeout=10, headers=headers) as client:
        for row in features:
            started = time.perf_counter()
            answer = client.post(INFER, json=body(row, outputs))
            latencies.append(time.perf_counter() - started)
            version = answer.json().get("model_version", "") if answer.status_code == 200 else ""
            seen[answer.headers.get("x-kiln-variant", ""), version, answer.status_code] += 1
    return seen, latencies


def shadow_report(router: RunningRouter) -> dict[str, Any]:
    answer = httpx.get(router.url + "/router/shadow", timeout=5)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def settled(router: RunningRouter, count: int) -> dict[str, Any]:
    """/router/shadow once `count` comparisons have an outcome (agree, disagree or error)."""
    eventually(
        lambda: sum(shadow_report(router)[key] for key in ("compared", "errors", "dropped")) >= count,
        f"{count} comparisons",
        timeout=15,
    )
    return shadow_report(router)


def test_a_shadow_serving_the_same_model_agrees_on_every_request(
    shadows: Shadows, iris: Any, directory: pathlib.Path
) -> None:
    features = rows(iris, 100)
    with kiln_router(directory, shadows.configuration("twin")) as router:
        assert shadow_report(router)["compared"] == 0
        assert shadow_report(router)["agreement"] is None

        seen, _ = infer_all(router, features)

        assert seen == {("stable", "1.0.0", 200): 100}
        report = settled(router, 100)
        assert {key: report[key] for key in ("generation", "variant", "against", "compared", "agree")} == {
            "generation": 1,
            "variant": "twin",
            "against": "stable",
            "compared": 100,
            "agree": 100,
        }
        assert (report["disagree"], report["errors"], report["dropped"]) == (0, 0, 0)
        assert report["agreement"] == 1.0
        assert report["liveP99"] > 0
        assert report["shadowP99"] > 0
        assert report["latencyRatio"] == pytest.approx(report["shadowP99"] / report["liveP99"])
        labels = {"variant": "twin", "version": "1.1.0"}
        assert router.metric("kiln_router_shadow_comparisons_total", **labels, outcome="agree") == 100
        for outcome in ("disagree", "error", "dropped"):
            assert router.metric("kiln_router_shadow_comparisons_total", **labels, outcome=outcome) == 0
        assert router.metric("kiln_router_shadow_latency_seconds_count", **labels, role="live") == 100
        assert router.metric("kiln_router_shadow_latency_seconds_count", **labels, role="shadow") == 100
        assert router.metric("kiln_router_mirrored_requests_total", **labels, outcome="answered") == 100

        # Served by another variant: mirrored, not compared.
        other, _ = infer_all(router, features[:10], **{"x-kiln-variant": "other"})
        assert other == {("other", "1.0.0", 200): 10}
        eventually(lambda: router.metric("kiln_router_mirrored_requests_total", **labels, outcome="answered") == 110)
        assert shadow_report(router)["compared"] == 100

        # A reload that moves weights keeps the counts; one that changes the shadow's version resets them.
        router.reload(shadows.configuration("twin", weights={"stable": 90, "twin": 0, "other": 10}))
        assert shadow_report(router)["compared"] == 100
        assert shadow_report(router)["generation"] == 1
        moved = shadows.configuration("twin")
        moved["variants"]["twin"]["version"] = "1.1.1"
        router.write(moved)
        eventually(lambda: router.shown()["generation"] == 3, "the version reload")
        reset = shadow_report(router)
        assert (reset["generation"], reset["compared"], reset["agreement"]) == (3, 0, None)


def test_a_differently_trained_shadow_agrees_as_often_as_the_two_models_do(
    shadows: Shadows,
    iris: Any,
    iris_model: LogisticRegression,
    stump: DecisionTreeClassifier,
    directory: pathlib.Path,
) -> None:
    features = rows(iris)
    # The router sees exactly the inputs sent here, so it must find exactly this many agreements.
    expected = int((iris_model.predict(features) == stump.predict(features)).sum())
    assert 0 < expected < REQUESTS, expected
    with kiln_router(directory, shadows.configuration("stump")) as router:
        seen, _ = infer_all(router, features, outputs=("predict",))

        assert seen == {("stable", "1.0.0", 200): REQUESTS}
        report = settled(router, REQUESTS)
        assert (report["compared"], report["agree"], report["disagree"]) == (REQUESTS, expected, REQUESTS - expected)
        assert (report["errors"], report["dropped"]) == (0, 0)
        assert report["agreement"] == pytest.approx(expected / REQUESTS, abs=1e-12)
        labels = {"variant": "stump", "version": "2.0.0"}
        assert router.metric("kiln_router_shadow_comparisons_total", **labels, outcome="agree") == expected
        assert (
            router.metric("kiln_router_shadow_comparisons_total", **labels, outcome="disagree") == REQUESTS - expected
        )


def test_a_slow_shadow_does_not_slow_the_live_requests_and_its_latency_is_reported(
    shadows: Shadows, iris: Any, directory: pathlib.Path
) -> None:
    count = 20
    with kiln_router(directory, shadows.configuration("slow")) as router:
        started = time.perf_counter()
        seen, latencies = infer_all(router, rows(iris, count))
        elapsed = time.perf_counter() - started

        assert seen == {("stable", "1.0.0", 200): count}
        # Each live answer came far sooner than the shadow's delay, and all of them in less than two delays.
        assert max(latencies) < SLOW_SECONDS / 2, latencies
        assert elapsed < 2 * SLOW_SECONDS, elapsed
        report = settled(router, count)
        assert (report["compared"], report["agree"]) == (count, count)
        assert report["shadowP99"] >= SLOW_SECONDS
        assert report["liveP99"] < SLOW_SECONDS / 2
        assert report["latencyRatio"] > 2
        labels = {"variant": "slow", "version": "3.0.0", "role": "shadow"}
        assert router.metric("kiln_router_shadow_latency_seconds_bucket", **labels, le="0.25") == 0
        assert router.metric("kiln_router_shadow_latency_seconds_bucket", **labels, le="+Inf") == count


def test_a_shadow_slower_than_the_upstream_timeout_counts_errors_and_the_client_never_waits(
    shadows: Shadows, iris: Any, directory: pathlib.Path
) -> None:
    count = 10
    timeout = SLOW_SECONDS / 2
    with kiln_router(directory, shadows.configuration("slow"), "--upstream-timeout", str(timeout)) as router:
        seen, latencies = infer_all(router, rows(iris, count))

        assert seen == {("stable", "1.0.0", 200): count}
        assert max(latencies) < timeout, latencies
        report = settled(router, count)
        assert (report["errors"], report["compared"], report["agreement"]) == (count, 0, None)
        # A timed-out shadow's latency is at least the time it was given.
        assert report["shadowP99"] >= timeout
        labels = {"variant": "slow", "version": "3.0.0"}
        assert router.metric("kiln_router_shadow_comparisons_total", **labels, outcome="error") == count
        assert router.metric("kiln_router_mirrored_requests_total", **labels, outcome="failed") == count


def test_a_failing_shadow_counts_errors_and_the_client_sees_only_200s(
    shadows: Shadows, iris: Any, directory: pathlib.Path
) -> None:
    count = 30
    with kiln_router(directory, shadows.configuration("failing")) as router:
        seen, _ = infer_all(router, rows(iris, count))

        assert seen == {("stable", "1.0.0", 200): count}
        report = settled(router, count)
        assert (report["errors"], report["compared"], report["disagree"]) == (count, 0, 0)
        assert report["agreement"] is None
        labels = {"variant": "failing", "version": "4.0.0"}
        assert router.metric("kiln_router_shadow_comparisons_total", **labels, outcome="error") == count
        # kiln-server answered (500), so the copy itself counts as answered.
        assert router.metric("kiln_router_mirrored_requests_total", **labels, outcome="answered") == count


def test_without_compare_the_shadow_report_is_empty(shadows: Shadows, directory: pathlib.Path) -> None:
    document = shadows.configuration("twin")
    del document["mirror"]["compare"]
    with kiln_router(directory, document) as router:
        report = shadow_report(router)

        assert report["variant"] == "twin"
        assert (report["against"], report["compared"], report["agreement"]) == (None, 0, None)


def test_a_shadow_that_is_down_never_fails_the_client(shadows: Shadows, iris: Any, directory: pathlib.Path) -> None:
    document = shadows.configuration("twin")
    document["variants"]["twin"]["url"] = f"http://127.0.0.1:{free_port()}"
    with kiln_router(directory, document) as router:
        seen, _ = infer_all(router, rows(iris, 10))

        assert seen == {("stable", "1.0.0", 200): 10}
        assert settled(router, 10)["errors"] == 10
