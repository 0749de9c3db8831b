"""Ground truth for predictions already served: remembering them, joining labels, scoring them.

A client that wants its predictions judged gives the inference request an `id`; the server then
remembers what it predicted for that id (the `predict` output) and which version predicted it.
When the truth is known, the client posts it:

    POST /v2/models/{name}/feedback               {"id": "order-17", "truth": [2]}
    POST /v2/models/{name}/versions/{v}/feedback  {"id": "order-17", "truth": 2}

`truth` holds one value per predicted row (a scalar for a one-row request). The `Ledger` joins it
to the remembered prediction and forgets the id; a classifier's rows are then counted correct or
incorrect, a regressor's give absolute errors. What it cannot join it says, and the server counts:

- `late`: the prediction was remembered but has been forgotten, because it is older than the
  window's `max_age` or newer predictions pushed it out (the window holds `max_predictions` rows);
- `duplicate`: the id already has its truth;
- `unknown`: no prediction with that id (or not by that version) is remembered, or it was
  forgotten so long ago that even its tombstone is gone.

Pure: the time is passed in, nothing here does I/O or touches metrics. A label that does not fit
its prediction (wrong number of rows, strings for a numeric class) is refused before the join, so
a bad post never uses up the id.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import numpy as np
import orjson

from kiln.runtime.server import protocol

DEFAULT_MAX_PREDICTIONS: Final = 100_000
"""Rows remembered across every model; at a few dozen bytes a row, a few megabytes."""
DEFAULT_MAX_AGE_SECONDS: Final = 3600.0
"""An hour: labels that take longer (a chargeback, a churned customer) belong in a batch evaluation."""

_NUMERIC_KINDS: Final = frozenset("biuf")
_TEXT_KINDS: Final = frozenset("USO")


class Outcome(StrEnum):
    JOINED = "joined"
    LATE = "late"
    DUPLICATE = "duplicate"
    UNKNOWN = "unknown"
    INVALID = "invalid"
    """The post itself is wrong (not JSON, no id, a truth that does not fit); counted, never joined."""


OUTCOME_STATUS: Final = {
    Outcome.JOINED: 200,
    Outcome.LATE: 410,
    Outcome.DUPLICATE: 409,
    Outcome.UNKNOWN: 404,
    Outcome.INVALID: 400,
}


@dataclass(frozen=True)
class Limits:
    """How much the server remembers: at most `max_predictions` rows, none older than `max_age`."""

    max_predictions: int = DEFAULT_MAX_PREDICTIONS
    max_age: float = DEFAULT_MAX_AGE_SECONDS

    def __post_init__(self) -> None:
        if self.max_predictions < 1:
            raise ValueError(f"max_predictions must be at least 1, not {self.max_predictions}")
        if not (math.isfinite(self.max_age) and self.max_age > 0):
            raise ValueError(f"max_age must be a positive number of seconds, not {self.max_age}")


@dataclass(frozen=True)
class Served:
    """A remembered prediction."""

    version: str
    predictions: np.ndarray[Any, Any]
    at: float


@dataclass(frozen=True)
class _Tombstone:
    version: str
    outcome: Outcome
    why: str


@dataclass(frozen=True)
class Found:
    """What a lookup found: the prediction to join (outcome JOINED), or why there is none."""

    outcome: Outcome
    version: str | None
    """The version that served the id; None when nothing is known of it."""
    served: Served | None
    message: str


Key = tuple[str, str]
"""(model name, request id): ids are the client's, so two models may use the same one."""


class Ledger:
    """The remembered predictions, oldest first, and tombstones of the ones forgotten."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.rows = 0
        self._served: collections.OrderedDict[Key, Served] = collections.OrderedDict()
        self._forgotten: collections.OrderedDict[Key, _Tombstone] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._served)

    def remember(
        self, model: str, request_id: str, version: str, predictions: np.ndarray[Any, Any], now: float
    ) -> None:
        """Keep what `version` predicted for `request_id`; a reused id replaces the earlier prediction."""
        key = (model, request_id)
        earlier = self._served.pop(key, None)
        if earlier is not None:
            self.rows -= len(earlier.predictions)
        self._forgotten.pop(key, None)
        self._served[key] = Served(version, predictions, now)
        self.rows += len(predictions)
        self.expire(now)

    def expire(self, now: float) -> None:
        """Forget predictions older than the window, then the oldest while more rows are held than allowed."""
        oldest_kept = now - self.limits.max_age
        while self._served:
            key, served = next(iter(self._served.items()))
            if served.at < oldest_kept:
                why = f"it was served more than {self.limits.max_age:g} s ago, the window's max age"
            elif self.rows > self.limits.max_predictions:
                why = f"newer predictions pushed it out (the window holds {self.limits.max_predictions} rows)"
            else:
                return
            self._forget(key, _Tombstone(served.version, Outcome.LATE, why))

    def find(self, model: str, request_id: str, version: str | None, now: float) -> Found:
        """The prediction served for `request_id` (by `version`, when given), not yet labelled."""
        self.expire(now)
        key = (model, request_id)
        served = self._served.get(key)
        if served is not None:
            if version is not None and served.version != version:
                message = f"request {request_id!r} was served by version {served.version}, not {version}"
                return Found(Outcome.UNKNOWN, None, None, message)
            return Found(Outcome.JOINED, served.version, served, "")
        tombstone = self._forgotten.get(key)
        if tombstone is not None and (version is None or tombstone.version == version):
            if tombstone.outcome is Outcome.DUPLICATE:
                message = f"request {request_id!r} already has its truth; each prediction is judged once"
            else:
                message = f"the prediction for request {request_id!r} is forgotten: {tombstone.why}"
            return Found(tombstone.outcome, tombstone.version, None, message)
        served_by = f"version {version} of model {model}" if version is not None else f"model {model}"
        message = (
            f"no prediction for request {request_id!r} by {served_by} is remembered; only inference "
            "requests that carry an id and ask for the predict output are"
        )
        return Found(Outcome.UNKNOWN, None, None, message)

    def labelled(self, model: str, request_id: str) -> None:
        """Forget a joined prediction, keeping its id so a second truth is a duplicate."""
        key = (model, request_id)
        served = self._served[key]
        self._forget(key, _Tombstone(served.version, Outcome.DUPLICATE, "labelled"))

    def _forget(self, key: Key, tombstone: _Tombstone) -> None:
        self.rows -= len(self._served.pop(key).predictions)
        self._forgotten[key] = tombstone
        # Tombstones are a few dozen bytes; as many as the rows the window holds bounds them alike.
        while len(self._forgotten) > self.limits.max_predictions:
            self._forgotten.popitem(last=False)


@dataclass(frozen=True)
class Feedback:
    """A decoded feedback post."""

    id: str
    truth: np.ndarray[Any, Any]
    """The true values, flat."""


def decode(body: bytes) -> Feedback:
    """The feedback in `body`; RequestError (400) naming the field when it is wrong."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise protocol.bad_request(f"the body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise protocol.bad_request('the body must be a JSON object: {"id": "...", "truth": [...]}')
    unknown = sorted(set(document) - {"id", "truth"})
    if unknown:
        raise protocol.bad_request(f"unknown field(s) {', '.join(unknown)}; feedback has 'id' and 'truth'")
    request_id = document.get("id")
    if not isinstance(request_id, str) or not request_id:
        raise protocol.bad_request("'id' must be the non-empty id of the inference request")
    if "truth" not in document:
        raise protocol.bad_request("'truth' is required: the true value of each predicted row")
    truth = document["truth"]
    if isinstance(truth, dict) or truth is None:
        raise protocol.bad_request("'truth' must be a value or an array of values, one per predicted row")
    try:
        values = np.asarray(truth)
    except (ValueError, OverflowError):
        raise protocol.bad_request("'truth' is ragged or out of range") from None
    if values.dtype.kind not in _NUMERIC_KINDS | _TEXT_KINDS or values.dtype.kind == "O":
        raise protocol.bad_request("'truth' must hold numbers, booleans or strings, not nulls or objects")
    return Feedback(request_id, values.reshape(-1))


@dataclass(frozen=True)
class Score:
    """How the remembered prediction compares with the truth."""

    rows: int
    correct: int | None = None
    """For a classifier: rows predicted right (the others are wrong)."""
    absolute_errors: np.ndarray[Any, np.dtype[np.float64]] | None = None
    """For a regressor: |prediction - truth| of each row."""


def score(predictions: np.ndarray[Any, Any], truth: np.ndarray[Any, Any], classifier: bool) -> Score:
    """The truth against the predictions; RequestError (400) when it does not fit them."""
    predicted = predictions.reshape(-1)
    if truth.size != predicted.size:
        raise protocol.bad_request(f"'truth' has {truth.size} value(s) but the request predicted {predicted.size}")
    predicted_text = predicted.dtype.kind in _TEXT_KINDS
    truth_text = truth.dtype.kind in _TEXT_KINDS
    if not classifier:
        if truth_text or predicted_text:
            raise protocol.bad_request("the model is a regressor: 'truth' must hold numbers")
        errors = np.abs(predicted.astype(np.float64) - truth.astype(np.float64))
        if not np.isfinite(errors).all():
            raise protocol.bad_request("'truth' holds values that are not finite numbers")
        return Score(rows=predicted.size, absolute_errors=errors)
    if predicted_text != truth_text:
        wanted = "class names (strings)" if predicted_text else "numeric class labels"
        raise protocol.bad_request(f"the model predicts {wanted}; 'truth' must hold the same kind")
    if predicted_text:
        matches = predicted.astype(str) == truth.astype(str)
    else:
        matches = predicted.astype(np.float64) == truth.astype(np.float64)
    return Score(rows=predicted.size, correct=int(np.count_nonzero(matches)))
