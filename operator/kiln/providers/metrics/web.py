"""The web metric provider: GET a URL that answers JSON and take the number at a JSONPath.

The path may reach a number, a numeric string (`"0.5"`, as many APIs send decimals) or a list
of those; null or nothing at all is empty. A boolean, an object or other text is an error: the
analysis judges numbers, and reading `true` as 1 would hide a mistake in the path. Any answer
outside 2xx is an error even with a JSON body, since an error document is not a measurement.
Errors name the URL without its query string or user info, which may carry credentials and would
otherwise land in the ModelDeployment's status.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import httpx

from kiln.providers.metrics import base, fetch, jsonpath

SHOWN_VALUE_CHARS = 60


class Web:
    def __init__(self, client: httpx.Client | None = None) -> None:
        """`client` carries the transport (tests pass `httpx.MockTransport`)."""
        self._client = client or httpx.Client()

    def query(self, query: base.Query) -> base.Answer:
        where = f"web endpoint {shown_url(query.expression)}"
        try:
            steps = jsonpath.parse(query.json_path)
        except jsonpath.PathError as exc:
            return base.Answer.failure(str(exc))
        reply = fetch.get_json(
            self._client, query.expression, where=where, timeout=query.timeout, headers=query.headers
        )
        if isinstance(reply, str):
            return base.Answer.failure(reply)
        if not 200 <= reply.status < 300:
            return base.Answer.failure(f"{where} answered {reply.status_line}")
        if not reply.is_json:
            return base.Answer.failure(f"{where} answered with a body that is not JSON")
        return numbers_at(jsonpath.find(reply.document, steps), f"{where}: {query.json_path}")


def numbers_at(nodes: list[Any], where: str) -> base.Answer:
    """The Answer the nodes a path reached mean; a list reached is its elements."""
    elements = [element for node in nodes for element in (node if isinstance(node, list) else [node])]
    numbers: list[float] = []
    for element in elements:
        if element is None:
            continue
        number = _number(element)
        if number is None:
            return base.Answer.failure(f"{where} is {_shown(element)}, not a number")
        numbers.append(number)
    return base.Answer.of_numbers(numbers)


def _number(element: Any) -> float | None:
    # bool before int: in Python True is an int.
    if isinstance(element, bool):
        return None
    if isinstance(element, int | float):
        return float(element)
    if isinstance(element, str):
        try:
            return float(element)
        except ValueError:
            return None
    return None


def _shown(element: Any) -> str:
    text = json.dumps(element)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def shown_url(url: str) -> str:
    """The URL as errors show it: no query string, fragment or user info."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
