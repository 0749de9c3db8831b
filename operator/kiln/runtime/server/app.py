"""The HTTP shell of kiln-server: the Open Inference Protocol v2 REST endpoints and /metrics.

It runs on aiohttp's low-level server with one handler that routes by splitting the path, rather
than on `web.Application`: the router, middleware chain and signals cost more per request than
everything else here together bar the model, and these few routes need none of them. Every answer
outside a 2xx is a JSON `{"error": ...}`; 4xx for what the client got wrong, 503 for a model that is
not ready, 500 only for a model that raised while predicting. Ground truth posted to
`/v2/models/{name}[/versions/{v}]/feedback` is joined to remembered predictions (see `feedback`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any, Final

import numpy as np
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from kiln.runtime.server import feedback, loading, protocol, repository, settings
from kiln.runtime.server import metrics as server_metrics

log = logging.getLogger(__name__)

INLINE_ROWS: Final = 64
"""Batches up to this many rows are predicted on the event loop. For a small batch a scikit-learn
predict takes tens of microseconds, less than handing it to a thread and back (and the GIL would
serialize it anyway); larger batches go to a thread so health checks and metrics stay answered."""

JSON: Final = "application/json"
_JSON_HEADERS: Final = {"Content-Type": JSON}

try:
    SERVER_VERSION = metadata.version("kiln")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    SERVER_VERSION = "0.0.0"


def _json(status: int, document: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), headers=_JSON_HEADERS)


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=protocol.encode_error(message), headers=_JSON_HEADERS)


class VersionRoute:
    """A model version as requests reach it: its slot, metrics children and observations."""

    __slots__ = ("observed", "recorder", "slot")

    def __init__(self, slot: repository.Slot, metrics: server_metrics.ServerMetrics) -> None:
        self.slot = slot
        self.recorder, self.observed = metrics.for_version(slot.version)


class InferenceServer:
    """Answers requests from the repository's models; `draining` turns readiness off."""

    def __init__(
        self,
        models: repository.Repository,
        metrics: server_metrics.ServerMetrics,
        config: settings.ServerSettings,
        executor: concurrent.futures.Executor,
        feedback_limits: feedback.Limits | None = None,
    ) -> None:
        self.models = models
        self.metrics = metrics
        self.config = config
        self.executor = executor
        self.draining = False
        self.ledger = feedback.Ledger(feedback_limits or feedback.Limits())
        metrics.remembered.set_function(lambda: self.ledger.rows)
        self.routes = {slot.key: VersionRoute(slot, metrics) for slot in models.slots}
        self._faults = config.faults if config.faults.active else None
        self._get: dict[tuple[str, ...], Callable[[], web.Response]] = {
            ("v2",): self._server_metadata,
            ("v2", "health", "live"): lambda: _json(200, {"live": True}),
            ("v2", "health", "ready"): self._server_ready,
            ("metrics",): self._metrics,
        }

    def mark_loaded(self, slot: repository.Slot) -> None:
        route = self.routes[slot.key]
        if slot.served is not None and slot.served.classes is not None:
            route.observed.track_classes(slot.served.classes)
        if slot.served is not None:
            self.metrics.track_feedback(slot.name, slot.number, classifier=slot.served.classes is not None)
        self.metrics.model_ready.labels(slot.name, slot.number).set(1 if slot.state is repository.State.READY else 0)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except protocol.RequestError as error:
            return _error(error.status, error.message)
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            return _error(500, "internal error; the server's log has the details")

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        parts = tuple(request.path.strip("/").split("/"))
        if len(parts) >= 3 and parts[0] == "v2" and parts[1] == "models":
            return await self._model_endpoint(request, parts[2], parts[3:])
        answer = self._get.get(parts)
        if answer is None:
            raise protocol.RequestError(404, f"no endpoint at {request.path}")
        _require_method(request, "GET")
        return answer()

    async def _model_endpoint(self, request: web.BaseRequest, name: str, rest: tuple[str, ...]) -> web.StreamResponse:
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        if rest == ("infer",):
            _require_method(request, "POST")
            return await self._infer(request, name, version)
        if rest == ("feedback",):
            _require_method(request, "POST")
            return await self._feedback(request, name, version)
        if rest == ():
            _require_method(request, "GET")
            return self._model_metadata(name, version)
        if rest == ("ready",):
            _require_method(request, "GET")
            return self._model_ready(self.models.find(name, version))
        raise protocol.RequestError(404, f"no endpoint at {request.path}")

    async def _infer(self, request: web.BaseRequest, name: str, version: str | None) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            route = self.routes[self.models.find(name, version).key]
        except protocol.RequestError as error:
            self.metrics.unknown.record(error.status, time.perf_counter() - started)
            raise
        in_flight = self.metrics.in_flight
        in_flight.inc()
        try:
            status, body = await self._answer(request, route)
        finally:
            in_flight.dec()
        route.recorder.record(status, time.perf_counter() - started)
        return web.Response(status=status, body=body, headers=_JSON_HEADERS)

    async def _answer(self, request: web.BaseRequest, route: VersionRoute) -> tuple[int, bytes]:
        slot = route.slot
        try:
            served = slot.served
            if served is None or slot.state is not repository.State.READY:
                raise protocol.RequestError(503, f"model {slot.name} {slot.number} is not ready: {slot.reason}")
            body = await self._body(request)
            if self._faults is not None and (injected := await self._inject(self._faults)):
                return injected, protocol.encode_error("fault injected by KILN_FAULT_INJECTION")
            decoded = protocol.decode_request(body, served.layout)
            wanted = _wanted_outputs(decoded.outputs, served)
            features = decoded.features
            if 0 < self.config.max_batch_size < len(features):
                raise protocol.bad_request(
                    f"the request has {len(features)} rows; this server takes at most {self.config.max_batch_size}"
                    " per request (KILN_MAX_BATCH_SIZE, a ModelDeployment's spec.server.maxBatchSize)"
                )
            if len(features) <= INLINE_ROWS:
                outputs, predictions = _predict(served, features, wanted)
            else:
                loop = asyncio.get_running_loop()
                outputs, predictions = await loop.run_in_executor(self.executor, _predict, served, features, wanted)
        except protocol.RequestError as error:
            return error.status, protocol.encode_error(error.message)
        except (ValueError, TypeError) as error:
            return 400, protocol.encode_error(f"the model could not predict on these inputs: {error}")
        except Exception as error:
            log.exception("model %s %s failed to predict", slot.name, slot.number)
            return 500, protocol.encode_error(f"the model failed to predict: {type(error).__name__}: {error}")
        route.observed.observe(features, predictions)
        if decoded.id is not None and predictions is not None:
            self.ledger.remember(slot.name, decoded.id, slot.number, predictions, time.monotonic())
        return 200, protocol.encode_response(slot.name, slot.number, decoded.id, outputs)

    async def _feedback(self, request: web.BaseRequest, name: str, version: str | None) -> web.Response:
        counted = self.metrics.feedback_requests
        try:
            self.models.find(name, version)
        except protocol.RequestError:
            counted.labels("", "", feedback.Outcome.UNKNOWN).inc()
            raise
        try:
            posted = feedback.decode(await self._body(request))
        except protocol.RequestError:
            counted.labels(name, version or "", feedback.Outcome.INVALID).inc()
            raise
        found = self.ledger.find(name, posted.id, version, time.monotonic())
        if found.served is None:
            counted.labels(name, found.version or "", found.outcome).inc()
            status = feedback.OUTCOME_STATUS[found.outcome]
            return _json(status, {"error": found.message, "id": posted.id, "outcome": found.outcome})
        served_by = found.served.version
        served = self.models.find(name, served_by).served
        try:
            scored = feedback.score(
                found.served.predictions, posted.truth, served is not None and served.classes is not None
            )
        except protocol.RequestError:
            counted.labels(name, served_by, feedback.Outcome.INVALID).inc()
            raise
        self.ledger.labelled(name, posted.id)
        counted.labels(name, served_by, feedback.Outcome.JOINED).inc()
        return _json(200, self._judged(name, served_by, posted.id, scored))

    def _judged(self, name: str, version: str, request_id: str, scored: feedback.Score) -> dict[str, object]:
        """Count a joined truth's rows and describe them for the client."""
        answer: dict[str, object] = {
            "id": request_id,
            "model_name": name,
            "model_version": version,
            "outcome": feedback.Outcome.JOINED,
            "rows": scored.rows,
        }
        if scored.correct is not None:
            judged = self.metrics.feedback_predictions
            judged.labels(name, version, "correct").inc(scored.correct)
            judged.labels(name, version, "incorrect").inc(scored.rows - scored.correct)
            answer["correct"] = scored.correct
        if scored.absolute_errors is not None:
            histogram = self.metrics.feedback_absolute_error.labels(name, version)
            for error in scored.absolute_errors.tolist():
                histogram.observe(error)
            answer["meanAbsoluteError"] = float(scored.absolute_errors.mean())
        return answer

    async def _body(self, request: web.BaseRequest) -> bytes:
        content_type = request.headers.get("Content-Type")
        if content_type is not None:
            media = content_type.partition(";")[0].strip().lower()
            if media != JSON and not media.endswith("+json"):
                raise protocol.RequestError(415, f"the body must be application/json, not {media or 'empty'}")
        limit = self.config.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise protocol.RequestError(413, f"the body is {length} bytes; this server takes at most {limit}")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise protocol.RequestError(413, f"the body is larger than this server takes ({limit} bytes)") from None

    @staticmethod
    async def _inject(faults: settings.FaultInjection) -> int | None:
        if faults.delay_rate and random.random() < faults.delay_rate:
            await asyncio.sleep(faults.delay_seconds)
        if faults.error_rate and random.random() < faults.error_rate:
            return faults.error_status
        return None

    def _server_metadata(self) -> web.Response:
        return _json(200, {"name": "kiln-server", "version": SERVER_VERSION, "extensions": []})

    def _server_ready(self) -> web.Response:
        models = [slot.status() for slot in self.models.slots]
        if self.draining:
            return _json(503, {"ready": False, "reason": "shutting down", "models": models})
        if not self.models.ready:
            waiting = [
                f"{slot.name} {slot.number}: {slot.reason}"
                for slot in self.models.slots
                if slot.state is not repository.State.READY
            ]
            return _json(503, {"ready": False, "reason": "; ".join(waiting), "models": models})
        return _json(200, {"ready": True, "models": models})

    def _model_ready(self, slot: repository.Slot) -> web.Response:
        ready = slot.state is repository.State.READY
        return _json(200 if ready else 503, {**slot.status(), "ready": ready})

    def _model_metadata(self, name: str, version: str | None) -> web.Response:
        slot = self.models.find(name, version)
        spec = slot.version.spec
        return _json(
            200,
            {
                "name": name,
                "versions": [other.number for other in self.models.versions_of(name)],
                "platform": spec.framework,
                "inputs": loading.input_metadata(spec, slot.served),
                "outputs": loading.output_metadata(spec, slot.served),
            },
        )

    def _metrics(self) -> web.Response:
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


def _require_method(request: web.BaseRequest, method: str) -> None:
    if request.method != method:
        raise protocol.RequestError(405, f"{request.path} takes {method}, not {request.method}")


def _wanted_outputs(requested: tuple[str, ...] | None, served: loading.ServedModel) -> tuple[str, ...]:
    if requested is None:
        return served.output_names
    unknown = [name for name in requested if name not in served.output_names]
    if unknown:
        raise protocol.RequestError(
            400, f"unknown output(s) {', '.join(unknown)}; the model gives {', '.join(served.output_names)}"
        )
    return requested


def _predict(
    served: loading.ServedModel, features: np.ndarray[Any, Any], wanted: tuple[str, ...]
) -> tuple[list[protocol.Output], np.ndarray[Any, Any] | None]:
    predictions = served.predict(features) if served.predict_name in wanted else None
    outputs = []
    for name in wanted:
        if name == served.predict_name:
            outputs.append(protocol.Output(name, np.asarray(predictions)))
        else:
            outputs.append(protocol.Output(name, served.estimator.predict_proba(features)))
    return outputs, predictions


def request_factory(max_body_bytes: int) -> Callable[..., web.BaseRequest]:
    """Requests that refuse to read a body beyond the server's limit, chunked ones included."""

    def make(message: Any, payload: Any, protocol_: Any, writer: Any, task: Any) -> web.BaseRequest:
        return web.BaseRequest(
            message, payload, protocol_, writer, task, asyncio.get_running_loop(), client_max_size=max_body_bytes
        )

    return make
