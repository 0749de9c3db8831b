"""Whether a shadow variant's answer agrees with the live answer to the same request; pure.

Both are Open Inference Protocol v2 responses, `{"model_name", "model_version", "id", "outputs":
[{"name", "datatype", "shape", "data"}]}`. Only `outputs` is compared (the model's name, version and
the request id may differ between variants by design):

- outputs are matched by name; an output one side has and the other lacks is a disagreement;
- the shapes must be equal, and so the number of elements;
- class outputs (datatypes BYTES, BOOL, INT*, UINT*) must be equal element by element;
- floating-point outputs (FP16, FP32, FP64) agree when every pair of elements a, b has
  |a - b| <= tolerance * max(1, |a|, |b|): an absolute tolerance for magnitudes up to 1
  (probabilities, scores) and one relative to the larger magnitude beyond (regressions in
  thousands). NaN (written as null) agrees only with NaN, an infinity only with the same one;
- a class output on one side and a floating-point one on the other disagree.

A shadow answer that is not a 200 with a JSON inference response is an `error`, not a
disagreement: the shadow failed rather than predicted differently. A live answer that is not one
leaves nothing to compare against, so `compare` gives None for it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

CLASS_PREFIXES: Final = ("BYTES", "BOOL", "INT", "UINT")
FLOAT_PREFIX: Final = "FP"


class Outcome(enum.StrEnum):
    AGREE = "agree"
    DISAGREE = "disagree"
    ERROR = "error"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    """Why, for the log: the first output and element that differ, or what was wrong with the shadow."""


@dataclass(frozen=True)
class Tensor:
    datatype: str
    shape: tuple[int, ...]
    data: tuple[Any, ...]
    """Flattened row-major, as the protocol writes it (nested lists are flattened here)."""

    @property
    def floating(self) -> bool:
        return self.datatype.startswith(FLOAT_PREFIX)


class MalformedError(ValueError):
    """A body that is not an inference response."""


def compare(
    live_status: int, live_body: bytes, shadow_status: int | None, shadow_body: bytes, tolerance: float
) -> Verdict | None:
    """The verdict on the shadow's answer (`shadow_status` None: it gave none), or None when the live
    answer has nothing to compare with."""
    try:
        live = outputs_of(live_status, live_body)
    except MalformedError:
        return None
    try:
        if shadow_status is None:
            raise MalformedError("gave no answer")
        shadow = outputs_of(shadow_status, shadow_body)
    except MalformedError as error:
        return Verdict(Outcome.ERROR, str(error))
    return compare_outputs(live, shadow, tolerance)


def compare_outputs(live: Mapping[str, Tensor], shadow: Mapping[str, Tensor], tolerance: float) -> Verdict:
    missing = sorted(live.keys() - shadow.keys())
    if missing:
        return Verdict(Outcome.DISAGREE, f"the shadow lacks output(s) {', '.join(missing)}")
    extra = sorted(shadow.keys() - live.keys())
    if extra:
        return Verdict(Outcome.DISAGREE, f"the shadow has output(s) the live answer lacks: {', '.join(extra)}")
    for name, expected in live.items():
        found = shadow[name]
        if expected.shape != found.shape or len(expected.data) != len(found.data):
            return Verdict(Outcome.DISAGREE, f"output {name}: shape {list(found.shape)}, live {list(expected.shape)}")
        if expected.floating != found.floating:
            return Verdict(Outcome.DISAGREE, f"output {name}: datatype {found.datatype}, live {expected.datatype}")
        equal = _close if expected.floating else _same
        for index, (a, b) in enumerate(zip(expected.data, found.data, strict=True)):
            if not equal(a, b, tolerance):
                return Verdict(Outcome.DISAGREE, f"output {name}[{index}]: {b!r}, live {a!r}")
    return Verdict(Outcome.AGREE, "every output agrees")


def _same(a: Any, b: Any, _: float) -> bool:
    # True == 1 in Python; a class output keeps its JSON type, so compare that too.
    return type(a) is type(b) and bool(a == b)


def _close(a: float | None, b: float | None, tolerance: float) -> bool:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def outputs_of(status: int, body: bytes) -> dict[str, Tensor]:
    """The outputs of a 200 inference response by name; MalformedError for anything else."""
    if status != 200:
        raise MalformedError(f"answered {status}")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedError("the answer is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("outputs"), list):
        raise MalformedError("the answer has no outputs array")
    found: dict[str, Tensor] = {}
    for position, output in enumerate(document["outputs"]):
        tensor = _tensor(output, position)
        name = output["name"]
        if name in found:
            raise MalformedError(f"output {name!r} appears twice")
        found[name] = tensor
    return found


def _tensor(output: object, position: int) -> Tensor:
    if not isinstance(output, dict) or not isinstance(output.get("name"), str):
        raise MalformedError(f"outputs[{position}] is not an object with a string name")
    name, datatype, shape = output["name"], output.get("datatype"), output.get("shape")
    if not isinstance(datatype, str) or not datatype.startswith((*CLASS_PREFIXES, FLOAT_PREFIX)):
        raise MalformedError(f"output {name}: unknown datatype {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(size, int) and not isinstance(size, bool) for size in shape):
        raise MalformedError(f"output {name}: shape is not a list of integers")
    data = tuple(_flat(output.get("data")))
    if datatype.startswith(FLOAT_PREFIX) and not all(_is_number(value) for value in data):
        raise MalformedError(f"output {name}: {datatype} data holds a non-number")
    return Tensor(datatype, tuple(shape), data)


def _flat(data: object) -> list[Any]:
    if not isinstance(data, list):
        raise MalformedError("an output's data is not an array")
    flat: list[Any] = []
    for value in data:
        if isinstance(value, list):
            flat.extend(_flat(value))
        else:
            flat.append(value)
    return flat


def _is_number(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))
