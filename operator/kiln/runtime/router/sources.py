"""Where kiln-router's configuration comes from: a file it polls, or a ConfigMap it watches.

Both hand every new text to an `offer(text, origin)` callback on the event loop, which parses it
and keeps the last good configuration when it is bad; they never parse themselves.

- `poll_file`: reads the file every POLL_SECONDS and offers it when its bytes change. Reading is
  cheaper than trusting mtimes (two writes within the clock's granularity would look the same),
  and it follows the symlink swap of a mounted ConfigMap volume.
- `ConfigMapWatch`: lists the ConfigMap, then watches it, through the Kubernetes API, on a thread
  of its own (the `kubernetes` client blocks). A mounted ConfigMap updates only after the kubelet's
  sync period, a minute or more; an abort must move traffic at once, which the watch does. Errors
  re-list after a back-off that doubles up to MAX_BACKOFF_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import threading
from collections.abc import Callable
from typing import Any, Final

import kubernetes

log = logging.getLogger(__name__)

POLL_SECONDS: Final = 0.5
CONFIG_KEY: Final = "router.json"
WATCH_SECONDS: Final = 60
"""How long one watch request lasts on the server before it is renewed from the last version."""
REQUEST_TIMEOUT_SECONDS: Final = 10.0
MIN_BACKOFF_SECONDS: Final = 0.5
MAX_BACKOFF_SECONDS: Final = 30.0

Offer = Callable[[str | bytes, str], None]
Reject = Callable[[str, str], None]


async def poll_file(path: pathlib.Path, offer: Offer, reject: Reject) -> None:
    """Offer the file's content now and whenever it changes, until cancelled."""
    origin = f"file {path}"
    last: bytes | None = None
    missing_reported = False
    while True:
        try:
            content = path.read_bytes()
        except OSError as error:
            if not missing_reported:
                reject(f"cannot read the file: {error}", origin)
                missing_reported = True
        else:
            missing_reported = False
            if content != last:
                last = content
                offer(content, origin)
        await asyncio.sleep(POLL_SECONDS)


class ConfigMapWatch:
    """Keeps offering the `router.json` key of one ConfigMap, from a daemon thread."""

    def __init__(self, namespace: str, name: str, loop: asyncio.AbstractEventLoop, offer: Offer, reject: Reject):
        self.namespace = namespace
        self.name = name
        self.origin = f"configmap {namespace}/{name}"
        self._loop = loop
        self._offer = offer
        self._reject = reject
        self._stopping = threading.Event()
        self._last: str | None = None
        self._backoff = MIN_BACKOFF_SECONDS
        self._thread = threading.Thread(target=self._run, name="kiln-router-configmap", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop; it is a daemon, so a watch blocked on the network does not hold up exit."""
        self._stopping.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._list_then_watch(kubernetes.client.CoreV1Api(_api_client()))
            except Exception as error:  # whatever the API or the network raised: log it, re-list later
                kind = type(error).__name__
                log.warning("watching %s failed (%s: %s); re-listing in %.1fs", self.origin, kind, error, self._backoff)
                self._stopping.wait(self._backoff)
                self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)

    def _list_then_watch(self, api: Any) -> None:
        """List the ConfigMap, then watch it from the list's version, renewing each watch from the
        last version seen, until stopped or an error (a 410 Gone included) sends the caller to re-list."""
        selector = f"metadata.name={self.name}"
        listed = api.list_namespaced_config_map(
            self.namespace, field_selector=selector, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        self._backoff = MIN_BACKOFF_SECONDS
        if not listed.items:
            log.warning("%s does not exist yet; waiting for it", self.origin)
        for item in listed.items:
            self._deliver(item)
        version = listed.metadata.resource_version
        while not self._stopping.is_set():
            watch = kubernetes.watch.Watch()
            for event in watch.stream(
                api.list_namespaced_config_map,
                self.namespace,
                field_selector=selector,
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=WATCH_SECONDS + REQUEST_TIMEOUT_SECONDS,
            ):
                if self._stopping.is_set():
                    return
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._deliver(event["object"])
                elif event["type"] == "DELETED":
                    log.warning("%s was deleted; the router keeps its last configuration", self.origin)
            version = watch.resource_version or version

    def _deliver(self, configmap: Any) -> None:
        text = (configmap.data or {}).get(CONFIG_KEY)
        if text == self._last:
            return
        self._last = text
        if text is None:
            self._loop.call_soon_threadsafe(self._reject, f"it has no key {CONFIG_KEY}", self.origin)
        else:
            self._loop.call_soon_threadsafe(self._offer, text, self.origin)


def _api_client() -> Any:
    """A client from $KUBECONFIG when it is set (tests, a laptop), else the pod's service account."""
    if os.environ.get("KUBECONFIG"):
        return kubernetes.config.new_client_from_config()
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_incluster_config(client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)
