"""The worker's side of the preemption handshake: SIGTERM, then a checkpoint, then exit.

When builtin admission preempts a job, the operator annotates each worker pod
`kiln.dev/preempted: <namespace>/<job it makes room for>` and then deletes it, so the kubelet sends
SIGTERM and waits the pod's grace period (terminationGracePeriodSeconds, 30 s by default) before
SIGKILL. `on_sigterm(checkpoint)` installs a handler that learns whether this SIGTERM is a
preemption, from the annotation as the kubelet projects it into the pod
(`KILN_PREEMPTED_FILE`, a downwardAPI volume) or, while the kubelet has not refreshed that file
yet (it does so within its sync period, up to about a minute on a real cluster), from the pod
itself through the API server; sets `KILN_PREEMPTED=1` when it is; calls `checkpoint`; and exits
with 143 (128 + SIGTERM), as a process killed by the signal would. Any other SIGTERM (the job
suspended or deleted, its gang restarted) checkpoints the same way: the work is kept either way.
A checkpoint that fails is logged; the process exits all the same.
"""

from __future__ import annotations

import os
import signal
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from kiln.api import trainingjob
from kiln.runtime import incluster, progress

PREEMPTED_VARIABLE = "KILN_PREEMPTED"
PREEMPTED_FILE_VARIABLE = "KILN_PREEMPTED_FILE"
EXIT_CODE = 128 + signal.SIGTERM
REQUEST_TIMEOUT_SECONDS = 2.0

Ask = Callable[[], str | None]
"""The annotation as the API server has it now; None when it cannot tell."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def from_file(environ: Mapping[str, str]) -> str | None:
    """The job that preempted this pod, as the kubelet last wrote the annotation; None when unset."""
    path = environ.get(PREEMPTED_FILE_VARIABLE)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as found:
            return found.read().strip() or None
    except OSError:
        return None


def ask_the_api_server(environ: Mapping[str, str]) -> Ask | None:
    """Read this pod's annotation from the API server; None outside a Kiln pod."""
    name, namespace = environ.get(progress.POD_NAME_VARIABLE), environ.get(progress.NAMESPACE_VARIABLE)
    if not name or not namespace:
        return None

    def ask() -> str | None:
        try:
            api = client.CoreV1Api(incluster.api_client())
            pod: Any = api.read_namespaced_pod(name, namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except Exception:  # no answer in time: the file is all there is to go by
            return None
        annotations = pod.metadata.annotations or {}
        return annotations.get(trainingjob.PREEMPTED_ANNOTATION) or None

    return ask


def preempted_by(environ: Mapping[str, str], ask: Ask | None) -> str | None:
    """Who preempted this pod (`namespace/name`), or None when the SIGTERM is not a preemption."""
    return from_file(environ) or (ask() if ask is not None else None)


def on_sigterm(
    checkpoint: Callable[[], None],
    *,
    say: Callable[[str], None] = _stderr,
    environ: Mapping[str, str] | None = None,
    ask: Ask | None = None,
) -> None:
    """Make SIGTERM checkpoint and exit (see the module docstring). Call it from the main thread."""
    seen = os.environ if environ is None else environ
    asking = ask if ask is not None else ask_the_api_server(seen)

    def stop(signum: int, frame: types.FrameType | None) -> None:
        by = preempted_by(seen, asking)
        if by is not None:
            os.environ[PREEMPTED_VARIABLE] = "1"
            say(f"kiln: preempted by {by}: checkpointing before the grace period ends")
        else:
            say("kiln: told to stop (SIGTERM): checkpointing")
        try:
            checkpoint()
        except Exception as error:  # the process is going anyway: say why nothing was kept
            say(f"kiln: the checkpoint failed: {type(error).__name__}: {error}")
        raise SystemExit(EXIT_CODE)

    signal.signal(signal.SIGTERM, stop)
