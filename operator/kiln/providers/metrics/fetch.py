"""GET a JSON document over HTTP; every failure of the network or of the body becomes a sentence.

Both providers share it, so an unreachable Prometheus and an unreachable web endpoint are told
to the user the same way. httpx's timeout bounds the connection and each read; the deadline
checked between chunks also bounds a server that trickles its answer, and MAX_BODY_BYTES one
that never stops.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx

MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Reply:
    """An HTTP answer: its status, and its body parsed as JSON when it is JSON."""

    status: int
    reason: str
    """The status's phrase (`Service Unavailable`)."""
    document: Any
    """The parsed body; None when the body is not JSON (or is JSON `null`: see is_json)."""
    is_json: bool

    @property
    def status_line(self) -> str:
        return f"HTTP {self.status} {self.reason}".rstrip()


def get_json(
    client: httpx.Client,
    url: str,
    *,
    where: str,
    timeout: float,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply | str:
    """The reply, or why there is none; `where` names the system in that sentence
    (`prometheus at http://prometheus:9090`)."""
    deadline = time.monotonic() + timeout
    try:
        with client.stream("GET", url, params=params, headers=headers, timeout=timeout) as response:
            body = _read(response, deadline)
            if body is None:
                return f"{where} did not answer within {timeout:g}s"
            if len(body) > MAX_BODY_BYTES:
                return f"{where} answered with more than {MAX_BODY_BYTES // (1024 * 1024)} MiB"
            status, reason = response.status_code, response.reason_phrase
    except httpx.TimeoutException:
        return f"{where} did not answer within {timeout:g}s"
    except httpx.ConnectError as exc:
        return f"{where} did not answer: {_reason(exc)}"
    # InvalidURL is not an HTTPError: a rendered URL may still be malformed.
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return f"{where} failed: {_reason(exc)}"
    try:
        return Reply(status, reason, json.loads(body), is_json=True)
    except ValueError:
        return Reply(status, reason, None, is_json=False)


def _read(response: httpx.Response, deadline: float) -> bytes | None:
    """The body, cut one chunk past MAX_BODY_BYTES; None when the deadline passed."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if time.monotonic() > deadline:
            return None
        if len(body) > MAX_BODY_BYTES:
            break
    return bytes(body)


def _reason(exc: Exception) -> str:
    """`[Errno 111] Connection refused` reads as `connection refused`."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)) or type(exc).__name__
    return (text[:1].lower() + text[1:]).rstrip(".")
