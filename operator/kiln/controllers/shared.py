"""What every controller shell does the same way: tell the time, hold one object at a time, post Events.

No decisions live here, only the I/O habits the controllers share, so each controller module keeps
to observing and acting for its own kind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from kiln.api import events
from kiln.kube import client

Clock = Callable[[], datetime.datetime]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


@dataclasses.dataclass
class ObjectLocks:
    """One lock per (namespace, name), so one object is reconciled at a time and different ones in parallel."""

    _locks: dict[tuple[str, str], threading.Lock] = dataclasses.field(default_factory=dict)
    _guard: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def hold(self, namespace: str, name: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        with lock:
            yield

    def forget(self, namespace: str, name: str) -> None:
        """Drop the lock of a deleted object."""
        with self._guard:
            self._locks.pop((namespace, name), None)


def post_events(
    kube: client.Api, body: Mapping[str, Any], planned: Iterable[events.Event], log: logging.Logger
) -> None:
    """Post each planned Event about `body`; one the API server refuses is logged, not raised."""
    for event in planned:
        try:
            kube.post_event(body, event.type, event.reason, event.message)
        except client.ApiError as error:
            # Status already tells the story; a retry would not plan this Event again.
            log.warning("could not post Event %s about %s: %s", event.reason, body["metadata"]["name"], error)
