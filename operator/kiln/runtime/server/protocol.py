"""The Open Inference Protocol v2 on the wire: decoding inference requests, encoding responses.

Pure functions over bytes and numpy arrays, no I/O. Everything a client can get wrong is refused
here with a `RequestError` that carries the HTTP status and a message for the protocol's error body
(`{"error": "..."}`), so the HTTP layer never has to guess and a bad request is never a 500.

A request's tensors become one float64 feature matrix `[rows, n_features]`, the columns in the
order of the model's inputs. A tensor is `[rows, width]`, or one row as `[width]`; `data` may be
flat (row-major, as the protocol writes it) or nested, and must hold exactly as many elements as
the shape says, of the kind the datatype names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

NUMERIC_DATATYPES: Final[Mapping[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
"""The protocol's numeric datatypes; BYTES is the only other one, and a numeric model refuses it."""

# The numpy kinds JSON values may parse to for each family of datatype: booleans only in BOOL,
# integers in integer and float tensors, fractions only in float tensors.
_ACCEPTED_KINDS: Final = {"b": frozenset("b"), "u": frozenset("iu"), "i": frozenset("iu"), "f": frozenset("iuf")}

_DATATYPE_OF_KIND: Final = {"b": "BOOL", "U": "BYTES", "S": "BYTES", "O": "BYTES"}
_WHAT_KIND_HOLDS: Final = {"b": "booleans", "f": "fractional numbers", "U": "strings", "S": "strings"}


class RequestError(Exception):
    """A request the server refuses: `status` is the HTTP status, the message goes to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> RequestError:
    return RequestError(400, message)


@dataclass(frozen=True)
class InputLayout:
    """The tensors a model takes: their names (None: one tensor of any name) and widths (None: not
    known until the model says so)."""

    names: tuple[str, ...] | None
    widths: tuple[int | None, ...]

    @property
    def n_features(self) -> int | None:
        if any(width is None for width in self.widths):
            return None
        return sum(width for width in self.widths if width is not None)


@dataclass(frozen=True)
class InferenceRequest:
    """A decoded request: the feature matrix and what the client asked to get back."""

    features: np.ndarray[Any, np.dtype[np.float64]]
    id: str | None
    outputs: tuple[str, ...] | None
    """The outputs asked for by name, in order; None for every output the model has."""


def decode_request(body: bytes, layout: InputLayout) -> InferenceRequest:
    """The request in `body`, checked against the model's inputs; RequestError when it is wrong."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"the body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise bad_request("the body must be a JSON object with an 'inputs' array")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_request("'id' must be a string")
    parameters = document.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise bad_request("'parameters' must be an object")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad_request("'inputs' must be a non-empty array of tensors")
    return InferenceRequest(
        features=_feature_matrix(inputs, layout),
        id=request_id,
        outputs=_requested_outputs(document.get("outputs")),
    )


def _requested_outputs(outputs: object) -> tuple[str, ...] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise bad_request("'outputs' must be an array of {\"name\": ...} objects")
    names: list[str] = []
    for output in outputs:
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise bad_request("each entry of 'outputs' must be an object with a string 'name'")
        names.append(output["name"])
    return tuple(names) or None


def _feature_matrix(inputs: list[Any], layout: InputLayout) -> np.ndarray[Any, np.dtype[np.float64]]:
    tensors = [_tensor_header(tensor, position) for position, tensor in enumerate(inputs)]
    by_name = {tensor.name: tensor for tensor in tensors}
    if len(by_name) != len(tensors):
        raise bad_request("input names must be distinct")
    if layout.names is None:
        if len(tensors) != 1:
            raise bad_request(f"the model takes one input tensor, not {len(tensors)}")
        ordered = tensors
    else:
        expected = ", ".join(layout.names)
        if set(by_name) != set(layout.names):
            given = ", ".join(tensor.name for tensor in tensors)
            raise bad_request(f"the model takes the inputs [{expected}], not [{given}]")
        ordered = [by_name[name] for name in layout.names]
    columns = [tensor.rows_of(width) for tensor, width in zip(ordered, layout.widths, strict=True)]
    rows = {len(column) for column in columns}
    if len(rows) != 1:
        raise bad_request("every input must have the same number of rows")
    if rows == {0}:
        raise bad_request("the request has no rows to predict")
    matrix = columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise bad_request("the inputs hold values that are not finite numbers in their datatype")
    return matrix


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    datatype: str
    values: np.ndarray[Any, Any]

    def rows_of(self, width: int | None) -> np.ndarray[Any, Any]:
        """The tensor as a 2-D `[rows, width]` block; one row when it is 1-D (a column when the
        input is one feature wide)."""
        if len(self.shape) == 2:
            block = self.values.reshape(self.shape)
        elif len(self.shape) == 1:
            block = self.values.reshape((-1, 1) if width == 1 else (1, -1))
        else:
            raise bad_request(f"input {self.name!r} has shape {list(self.shape)}; use [rows, features] or [features]")
        if width is not None and block.shape[1] != width:
            raise bad_request(f"input {self.name!r} has {block.shape[1]} feature(s) per row; the model takes {width}")
        return block


def _tensor_header(tensor: object, position: int) -> _Tensor:
    if not isinstance(tensor, dict):
        raise bad_request(f"inputs[{position}] must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request(f"inputs[{position}] needs a non-empty string 'name'")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(type(extent) is int and extent >= 0 for extent in shape):
        raise bad_request(f"input {name!r} needs a 'shape' of non-negative integers")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise bad_request(f"input {name!r} needs a string 'datatype'")
    dtype = NUMERIC_DATATYPES.get(datatype)
    if dtype is None:
        if datatype == "BYTES":
            raise bad_request(f"input {name!r} is BYTES; this model takes numeric tensors (BOOL, INT*, UINT*, FP*)")
        raise bad_request(f"input {name!r} has datatype {datatype!r}, which is not one of the protocol's datatypes")
    return _Tensor(name, tuple(shape), datatype, _values(name, tensor.get("data"), shape, datatype, dtype))


def _values(name: str, data: object, shape: list[int], datatype: str, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    if not isinstance(data, list):
        raise bad_request(f"input {name!r} needs 'data' as an array (flat or nested)")
    try:
        parsed = np.array(data)
    except (ValueError, OverflowError):
        raise bad_request(f"input {name!r} has ragged or out-of-range 'data'") from None
    expected = math.prod(shape)
    if parsed.size != expected:
        raise bad_request(f"input {name!r} has {parsed.size} element(s) but its shape {shape} holds {expected}")
    if parsed.size == 0:
        return parsed.astype(dtype)
    if parsed.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        found = _WHAT_KIND_HOLDS.get(parsed.dtype.kind, "values that are not numbers")
        raise bad_request(f"input {name!r} is {datatype} but its data holds {found}")
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        if parsed.min() < limits.min or parsed.max() > limits.max:
            raise bad_request(f"input {name!r} holds values outside the range of {datatype}")
    with np.errstate(over="ignore"):
        return parsed.reshape(-1).astype(dtype)


@dataclass(frozen=True)
class Output:
    """One output tensor of a response."""

    name: str
    values: np.ndarray[Any, Any]


def datatype_of(values: np.ndarray[Any, Any]) -> str:
    """The protocol's name for a numpy array's element type; strings and objects are BYTES."""
    kind = values.dtype.kind
    if kind in "iuf":
        return f"{'FP' if kind == 'f' else 'INT' if kind == 'i' else 'UINT'}{values.dtype.itemsize * 8}"
    return _DATATYPE_OF_KIND.get(kind, "BYTES")


def encode_response(model: str, version: str, request_id: str | None, outputs: Sequence[Output]) -> bytes:
    """The response body: each output flattened row-major, as the protocol writes tensors."""
    document: dict[str, Any] = {
        "model_name": model,
        "model_version": version,
        "outputs": [
            {
                "name": output.name,
                "shape": list(output.values.shape),
                "datatype": datatype_of(output.values),
                "data": _flat(output.values),
            }
            for output in outputs
        ],
    }
    if request_id is not None:
        document["id"] = request_id
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def _flat(values: np.ndarray[Any, Any]) -> object:
    # orjson writes numeric and bool arrays natively; labels held as strings or objects go as a list.
    if values.dtype.kind in "biuf":
        return np.ascontiguousarray(values).reshape(-1)
    return [str(value) for value in values.reshape(-1).tolist()]


def encode_error(message: str) -> bytes:
    return orjson.dumps({"error": message})
