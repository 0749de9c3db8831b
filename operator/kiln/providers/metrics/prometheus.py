"""The prometheus metric provider: an instant query through the HTTP API (`GET /api/v1/query`).

An instant vector gives one number per series (one series is a float, several a list, none is
empty); a scalar gives its number. A range vector (matrix) or a string is an error, since a
measurement is judged as numbers. Prometheus is told the same timeout (its `timeout` parameter)
so that it stops evaluating a query nobody is waiting for any more.
"""

from __future__ import annotations

from typing import Any

import httpx

from kiln.providers.metrics import base, fetch

NO_ADDRESS = (
    "no Prometheus address: set spec.analysis.metrics[].prometheus.address, "
    "or run the operator with --prometheus-url (KILN_PROMETHEUS_URL)"
)


class Prometheus:
    def __init__(self, client: httpx.Client | None = None) -> None:
        """`client` carries the transport (tests pass `httpx.MockTransport`); one is shared by
        every query so connections to the same server are reused."""
        self._client = client or httpx.Client()

    def query(self, query: base.Query) -> base.Answer:
        if query.address is None:
            return base.Answer.failure(NO_ADDRESS)
        where = f"prometheus at {query.address}"
        reply = fetch.get_json(
            self._client,
            query.address.rstrip("/") + "/api/v1/query",
            where=where,
            timeout=query.timeout,
            params={"query": query.expression, "timeout": f"{query.timeout:g}s"},
        )
        if isinstance(reply, str):
            return base.Answer.failure(reply)
        return interpret(reply, where)


def interpret(reply: fetch.Reply, where: str) -> base.Answer:
    """The Answer an API reply means; `where` names the server in errors."""
    document = reply.document
    if not reply.is_json or not isinstance(document, dict) or document.get("status") not in {"success", "error"}:
        return base.Answer.failure(f"{where} answered {reply.status_line}, not with a Prometheus API response")
    if document["status"] == "error":
        return base.Answer.failure(
            f"{where} could not run the query: {document.get('errorType', 'error')}: {document.get('error', '')}"
        )
    try:
        return _result(document["data"]["resultType"], document["data"]["result"], where)
    except (KeyError, IndexError, TypeError, ValueError):
        return base.Answer.failure(f"{where} answered with a result Kiln does not understand")


def _result(result_type: str, result: Any, where: str) -> base.Answer:
    if result_type == "vector":
        return base.Answer.of_numbers([_sample(series["value"]) for series in result])
    if result_type == "scalar":
        return base.Answer.of_numbers([_sample(result)])
    if result_type == "matrix":
        return base.Answer.failure(
            f"{where} answered with a range vector: use an instant query, "
            "e.g. wrap the range selector in rate() or avg_over_time()"
        )
    return base.Answer.failure(f"{where} answered with a {result_type}, not a number")


def _sample(pair: list[Any]) -> float:
    """`[1700000000.123, "0.5"]`: Prometheus sends the value as text (so `NaN` and `+Inf` fit)."""
    _timestamp, text = pair
    if not isinstance(text, str):
        raise TypeError("a sample's value is a string")
    return float(text)
