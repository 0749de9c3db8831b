"""Metric providers turn what Prometheus or a web endpoint says into an Answer, never an exception.

The real providers run over `httpx.MockTransport`, so canned API responses go through the same
client code as a real server's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from kiln.api import modeldeployment
from kiln.providers import metrics
from kiln.providers.metrics import fake, jsonpath, prometheus, web

PROMETHEUS = "http://prometheus.test:9090"
ENDPOINT = "http://metrics.test/api/errors"
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def answering(status: int, body: Any = None, text: str | None = None) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body) if text is None else httpx.Response(status, text=text)

    return handle


def answering_stream(chunks: Iterator[bytes]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks)

    return handle


def raising(error: Exception) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        raise error

    return handle


def vector(*values: str) -> dict[str, Any]:
    samples = [{"metric": {"pod": f"p{i}"}, "value": [1700000000.5, value]} for i, value in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": samples}}


def prometheus_query(handler: Handler, address: str | None = PROMETHEUS) -> metrics.Answer:
    provider = prometheus.Prometheus(client(handler))
    return provider.query(metrics.Query("prometheus", "sum(rate(errors[1m]))", address=address, timeout=2))


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        pytest.param(answering(200, vector("0.25")), metrics.Answer.of(0.25), id="one-sample-is-a-float"),
        pytest.param(answering(200, vector("1", "2")), metrics.Answer.of([1.0, 2.0]), id="several-are-a-list"),
        pytest.param(answering(200, vector()), metrics.Answer.empty(), id="no-series-is-empty"),
        pytest.param(answering(200, vector("NaN")), metrics.Answer.empty(), id="nan-is-empty"),
        pytest.param(answering(200, vector("NaN", "3")), metrics.Answer.of(3.0), id="nan-series-are-left-out"),
        pytest.param(answering(200, vector("+Inf")), metrics.Answer.of(math.inf), id="infinity-is-a-value"),
        pytest.param(
            answering(200, {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "4"]}}),
            metrics.Answer.of(4.0),
            id="scalar",
        ),
        pytest.param(
            answering(200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
            metrics.Answer.failure(
                f"prometheus at {PROMETHEUS} answered with a range vector: use an instant query, "
                "e.g. wrap the range selector in rate() or avg_over_time()"
            ),
            id="matrix-asks-for-an-instant-query",
        ),
        pytest.param(
            answering(200, {"status": "success", "data": {"resultType": "string", "result": [1.0, "x"]}}),
            metrics.Answer.failure(f"prometheus at {PROMETHEUS} answered with a string, not a number"),
            id="string",
        ),
        pytest.param(
            answering(400, {"status": "error", "errorType": "bad_data", "error": "1:5: parse error"}),
            metrics.Answer.failure(f"prometheus at {PROMETHEUS} could not run the query: bad_data: 1:5: parse error"),
            id="api-error-is-quoted",
        ),
        pytest.param(
            answering(502, text="<html>Bad Gateway</html>"),
            metrics.Answer.failure(
                f"prometheus at {PROMETHEUS} answered HTTP 502 Bad Gateway, not with a Prometheus API response"
            ),
            id="http-error-without-json",
        ),
        pytest.param(
            answering(200, {"status": "success", "data": {"resultType": "vector", "result": [{"value": 1}]}}),
            metrics.Answer.failure(f"prometheus at {PROMETHEUS} answered with a result Kiln does not understand"),
            id="malformed-result",
        ),
        pytest.param(
            raising(httpx.ConnectError("[Errno 111] Connection refused")),
            metrics.Answer.failure(f"prometheus at {PROMETHEUS} did not answer: connection refused"),
            id="unreachable",
        ),
        pytest.param(
            raising(httpx.ReadTimeout("timed out")),
            metrics.Answer.failure(f"prometheus at {PROMETHEUS} did not answer within 2s"),
            id="timeout",
        ),
    ],
)
def test_prometheus_responses_become_answers(handler: Handler, expected: metrics.Answer) -> None:
    assert prometheus_query(handler) == expected


def test_prometheus_without_an_address_says_both_ways_to_give_one() -> None:
    answer = prometheus_query(answering(200, vector("1")), address=None)
    assert answer == metrics.Answer.failure(prometheus.NO_ADDRESS)
    assert "prometheus.address" in prometheus.NO_ADDRESS
    assert "--prometheus-url" in prometheus.NO_ADDRESS


def test_prometheus_is_sent_an_instant_query_with_the_same_timeout() -> None:
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=vector("1"))

    assert prometheus_query(handle, address=PROMETHEUS + "/") == metrics.Answer.of(1.0)
    (request,) = requests
    assert request.url.path == "/api/v1/query"
    assert dict(request.url.params) == {"query": "sum(rate(errors[1m]))", "timeout": "2s"}


@pytest.mark.parametrize(
    ("document", "path", "expected"),
    [
        pytest.param(0.5, "$", metrics.Answer.of(0.5), id="root"),
        pytest.param({"data": {"rate": 3}}, "$.data.rate", metrics.Answer.of(3.0), id="dotted-keys"),
        pytest.param({"a b": {"x-y": 1}}, "$['a b'].x-y", metrics.Answer.of(1.0), id="quoted-key"),
        pytest.param({"k": 2}, '$["k"]', metrics.Answer.of(2.0), id="double-quoted-key"),
        pytest.param({"v": [1, 2, 3]}, "$.v[1]", metrics.Answer.of(2.0), id="index"),
        pytest.param({"v": [1, 2, 3]}, "$.v[-1]", metrics.Answer.of(3.0), id="negative-index"),
        pytest.param({"v": [1, 2]}, "$.v", metrics.Answer.of([1.0, 2.0]), id="a-list-of-numbers"),
        pytest.param([{"v": 1}, {"v": 2}], "$[*].v", metrics.Answer.of([1.0, 2.0]), id="wildcard"),
        pytest.param({"a": 1, "b": 2}, "$.*", metrics.Answer.of([1.0, 2.0]), id="member-wildcard"),
        pytest.param({"v": "0.01"}, "$.v", metrics.Answer.of(0.01), id="numeric-string"),
        pytest.param({"v": None}, "$.v", metrics.Answer.empty(), id="null-is-empty"),
        pytest.param({"v": 1}, "$.w", metrics.Answer.empty(), id="missing-is-empty"),
        pytest.param({"v": [1]}, "$.v[5]", metrics.Answer.empty(), id="index-past-the-end-is-empty"),
        pytest.param({"v": []}, "$.v", metrics.Answer.empty(), id="empty-list-is-empty"),
        pytest.param({"v": "NaN"}, "$.v", metrics.Answer.empty(), id="nan-is-empty"),
        pytest.param(
            {"ok": True},
            "$.ok",
            metrics.Answer.failure(f"web endpoint {ENDPOINT}: $.ok is true, not a number"),
            id="bool-is-not-a-number",
        ),
        pytest.param(
            {"v": "fast"},
            "$.v",
            metrics.Answer.failure(f'web endpoint {ENDPOINT}: $.v is "fast", not a number'),
            id="text",
        ),
        pytest.param(
            {"v": {"x": 1}},
            "$.v",
            metrics.Answer.failure(f'web endpoint {ENDPOINT}: $.v is {{"x": 1}}, not a number'),
            id="object",
        ),
    ],
)
def test_web_takes_the_number_at_the_json_path(document: Any, path: str, expected: metrics.Answer) -> None:
    provider = web.Web(client(answering(200, document)))
    assert provider.query(metrics.Query("web", ENDPOINT, json_path=path)) == expected


@pytest.mark.parametrize("path", ["data.rate", "$..rate", "$.items[?(@.ok)]", "$.v[0:2]", "$.", "$[abc]"])
def test_a_json_path_outside_the_subset_is_refused_with_what_is_understood(path: str) -> None:
    with pytest.raises(jsonpath.PathError, match=r"understood: \$, \.key"):
        jsonpath.parse(path)
    answer = web.Web(client(answering(200, {}))).query(metrics.Query("web", ENDPOINT, json_path=path))
    assert answer.error is not None
    assert path in answer.error


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        pytest.param(
            answering(503, {"error": "overloaded"}),
            f"web endpoint {ENDPOINT} answered HTTP 503 Service Unavailable",
            id="non-2xx-even-with-json",
        ),
        pytest.param(
            answering(200, text="<html>"), f"web endpoint {ENDPOINT} answered with a body that is not JSON", id="html"
        ),
        pytest.param(
            raising(httpx.ConnectError("[Errno -2] Name or service not known")),
            f"web endpoint {ENDPOINT} did not answer: name or service not known",
            id="unresolvable",
        ),
    ],
)
def test_web_failures_are_errors(handler: Handler, expected: str) -> None:
    assert web.Web(client(handler)).query(metrics.Query("web", ENDPOINT)) == metrics.Answer.failure(expected)


def test_web_sends_the_headers_and_keeps_credentials_out_of_errors() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500)

    query = metrics.Query("web", "http://user:secret@metrics.test/errors?token=s3cret", headers={"X-Team": "ml"})
    answer = web.Web(client(handle)).query(query)
    assert answer == metrics.Answer.failure(
        "web endpoint http://metrics.test/errors answered HTTP 500 Internal Server Error"
    )
    assert seen[0].headers["X-Team"] == "ml"


def test_a_server_that_trickles_its_answer_is_cut_off_at_the_timeout() -> None:
    def trickle() -> Iterator[bytes]:
        for _ in range(20):
            time.sleep(0.05)
            yield b" "

    handler = answering_stream(trickle())
    answer = web.Web(client(handler)).query(metrics.Query("web", ENDPOINT, timeout=0.2))
    assert answer == metrics.Answer.failure(f"web endpoint {ENDPOINT} did not answer within 0.2s")


def test_an_answer_larger_than_the_bound_is_refused() -> None:
    chunk = b" " * 1024 * 1024
    handler = answering_stream(iter([chunk] * 5))
    answer = web.Web(client(handler)).query(metrics.Query("web", ENDPOINT))
    assert answer == metrics.Answer.failure(f"web endpoint {ENDPOINT} answered with more than 4 MiB")


def test_an_answer_cannot_have_both_a_value_and_an_error() -> None:
    with pytest.raises(ValueError, match="not both"):
        metrics.Answer(value=1.0, error="down")


def test_the_registry_knows_prometheus_and_web_and_refuses_anything_else() -> None:
    assert isinstance(metrics.provider_for("prometheus"), prometheus.Prometheus)
    assert isinstance(metrics.provider_for("web"), web.Web)
    with pytest.raises(ValueError, match="unknown metric provider 'datadog': known providers are prometheus, web"):
        metrics.provider_for("datadog")


def test_every_provider_the_api_accepts_is_registered() -> None:
    assert set(metrics.PROVIDERS) == {name.value for name in modeldeployment.MetricProviderName}


def test_the_registry_can_be_handed_fakes() -> None:
    provider = fake.FakeMetricProvider()
    assert metrics.provider_for("web", {"web": provider}) is provider
    with pytest.raises(ValueError, match="known providers are web"):
        metrics.provider_for("prometheus", {"web": provider})


def test_the_fake_gives_scripted_answers_in_order_then_repeats_the_last() -> None:
    provider = fake.FakeMetricProvider([("up", metrics.Answer.of(1.0))])
    provider.answer("errors", metrics.Answer.of(0.1), metrics.Answer.empty(), metrics.Answer.failure("down"))
    errors = metrics.Query("prometheus", "errors", address=PROMETHEUS)
    answers = [provider.query(errors) for _ in range(4)]
    assert answers == [
        metrics.Answer.of(0.1),
        metrics.Answer.empty(),
        metrics.Answer.failure("down"),
        metrics.Answer.failure("down"),
    ]
    assert provider.query(metrics.Query("prometheus", "up")) == metrics.Answer.of(1.0)
    assert provider.queries == [errors] * 4 + [metrics.Query("prometheus", "up")]


def test_the_fake_answers_an_unscripted_expression_with_an_error() -> None:
    answer = fake.FakeMetricProvider().query(metrics.Query("web", ENDPOINT))
    assert answer == metrics.Answer.failure(f"the fake metric provider has no answer for {ENDPOINT!r}")
    with pytest.raises(ValueError, match="at least one answer"):
        fake.FakeMetricProvider().answer("up")
