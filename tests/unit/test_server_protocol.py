"""Decoding Open Inference Protocol v2 requests and encoding responses."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest

from kiln.runtime.server import protocol

ANY_FOUR = protocol.InputLayout(names=None, widths=(4,))
NAMED = protocol.InputLayout(names=("petals", "sepals"), widths=(2, 2))


def body(*tensors: dict[str, Any], **document: Any) -> bytes:
    return json.dumps({"inputs": list(tensors), **document}).encode()


def tensor(data: Any, shape: list[int], datatype: str = "FP64", name: str = "x") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


@pytest.mark.parametrize(
    ("request_body", "layout", "expected"),
    [
        pytest.param(body(tensor([1, 2, 3, 4], [1, 4])), ANY_FOUR, [[1, 2, 3, 4]], id="flat-one-row"),
        pytest.param(
            body(tensor([[1, 2, 3, 4], [5, 6, 7, 8]], [2, 4])), ANY_FOUR, [[1, 2, 3, 4], [5, 6, 7, 8]], id="nested"
        ),
        pytest.param(body(tensor([1.5, 2, 3, 4], [4])), ANY_FOUR, [[1.5, 2, 3, 4]], id="1-D-is-one-row"),
        pytest.param(body(tensor([1, 2, 3, 4], [1, 4], "INT8")), ANY_FOUR, [[1, 2, 3, 4]], id="int8"),
        pytest.param(body(tensor([0, 255, 3, 4], [1, 4], "UINT8")), ANY_FOUR, [[0, 255, 3, 4]], id="uint8-limits"),
        pytest.param(body(tensor([True, False, True, True], [1, 4], "BOOL")), ANY_FOUR, [[1, 0, 1, 1]], id="bool"),
        pytest.param(body(tensor([0.5, 1, 2, 3], [1, 4], "FP16")), ANY_FOUR, [[0.5, 1, 2, 3]], id="fp16"),
        pytest.param(
            body(tensor([1, 2, 3, 4], [2, 2], name="sepals"), tensor([5, 6, 7, 8], [2, 2], name="petals")),
            NAMED,
            [[5, 6, 1, 2], [7, 8, 3, 4]],
            id="named-inputs-in-layout-order",
        ),
        pytest.param(
            body(tensor([1, 2, 3], [3], name="a"), tensor([4, 5, 6], [3], name="b")),
            protocol.InputLayout(names=("a", "b"), widths=(1, 1)),
            [[1, 4], [2, 5], [3, 6]],
            id="1-D-columns",
        ),
    ],
)
def test_a_request_decodes_to_a_float64_feature_matrix(
    request_body: bytes, layout: protocol.InputLayout, expected: list[list[float]]
) -> None:
    decoded = protocol.decode_request(request_body, layout)

    assert decoded.features.dtype == np.float64
    assert decoded.features.flags.c_contiguous
    assert decoded.features.tolist() == expected


def test_id_and_outputs_are_read() -> None:
    decoded = protocol.decode_request(
        body(tensor([1, 2, 3, 4], [1, 4]), id="r-1", outputs=[{"name": "predict_proba"}], parameters={"a": 1}),
        ANY_FOUR,
    )

    assert (decoded.id, decoded.outputs) == ("r-1", ("predict_proba",))


@pytest.mark.parametrize(
    ("request_body", "status", "message"),
    [
        pytest.param(b"not json", 400, "not valid JSON", id="not-json"),
        pytest.param(b'"inputs"', 400, "JSON object", id="a-string"),
        pytest.param(b'{"inputs": {}}', 400, "non-empty array", id="inputs-object"),
        pytest.param(body("x"), 400, "inputs[0] must be an object", id="tensor-not-object"),  # type: ignore[arg-type]
        pytest.param(body({"shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}), 400, "'name'", id="no-name"),
        pytest.param(body(tensor([1, 2, 3, 4], [1, "4"])), 400, "non-negative integers", id="shape-string"),
        pytest.param(body(tensor([1, 2, 3, 4], [1.0, 4])), 400, "non-negative integers", id="shape-float"),
        pytest.param(body(tensor([1, 2, 3, 4], [1, 4], "FP128")), 400, "not one of", id="unknown-datatype"),
        pytest.param(body(tensor(["a", "b", "c", "d"], [1, 4], "BYTES")), 400, "BYTES", id="bytes"),
        pytest.param(body(tensor(7, [1, 4])), 400, "'data' as an array", id="scalar-data"),
        pytest.param(body(tensor([1, 2, 3], [1, 4])), 400, "3 element(s)", id="too-few-elements"),
        pytest.param(body(tensor([1, 2, 3, 4, 5], [1, 5])), 400, "takes 4", id="too-wide"),
        pytest.param(body(tensor([True, 1, 2, 3.5], [1, 4], "INT64")), 400, "fractional", id="fraction-in-int"),
        pytest.param(body(tensor([True, False, True, False], [1, 4])), 400, "booleans", id="bool-in-fp64"),
        pytest.param(body(tensor([1, 0, 1, 0], [1, 4], "BOOL")), 400, "BOOL", id="ints-in-bool"),
        pytest.param(body(tensor([-1, 0, 1, 0], [1, 4], "UINT16")), 400, "range of UINT16", id="negative-uint"),
        pytest.param(body(tensor([1, 2, 3, 4e39], [1, 4], "FP32")), 400, "not finite", id="fp32-overflow"),
        pytest.param(body(tensor([[1, 2], [3, 4, 5]], [1, 4])), 400, "ragged", id="ragged"),
        pytest.param(
            body(tensor([1, 2, 3, 4], [1, 4]), tensor([1, 2, 3, 4], [1, 4], name="y")), 400, "one input", id="two"
        ),
        pytest.param(body(tensor([1, 2, 3, 4], [1, 4]), outputs="predict"), 400, "'outputs'", id="outputs-string"),
        pytest.param(body(tensor([1, 2, 3, 4], [1, 4]), parameters=[1]), 400, "'parameters'", id="parameters-list"),
    ],
)
def test_a_malformed_request_is_refused_with_a_status_and_a_message(
    request_body: bytes, status: int, message: str
) -> None:
    with pytest.raises(protocol.RequestError) as refused:
        protocol.decode_request(request_body, ANY_FOUR)

    assert refused.value.status == status
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([tensor([1, 2], [1, 2], name="petals")], "not [petals]"),
        ([tensor([1, 2], [1, 2], name="petals"), tensor([1, 2], [1, 2], name="petals")], "distinct"),
        ([tensor([1, 2], [1, 2], name="petals"), tensor([1, 2, 3, 4], [2, 2], name="sepals")], "same number of rows"),
    ],
)
def test_named_inputs_must_match_the_signature(tensors: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(protocol.RequestError, match=message.replace("[", r"\[")):
        protocol.decode_request(body(*tensors), NAMED)


def test_a_response_is_flat_row_major_with_the_protocols_datatypes() -> None:
    encoded = protocol.encode_response(
        "iris",
        "1.0.0",
        "r-1",
        [
            protocol.Output("predict", np.array(["setosa", "virginica"], dtype=object)),
            protocol.Output("predict_proba", np.array([[0.25, 0.75], [1 / 3, 2 / 3]])),
            protocol.Output("flags", np.array([True, False])),
            protocol.Output("counts", np.array([1, 2], dtype=np.uint16)),
        ],
    )

    assert orjson.loads(encoded) == {
        "model_name": "iris",
        "model_version": "1.0.0",
        "id": "r-1",
        "outputs": [
            {"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["setosa", "virginica"]},
            {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [0.25, 0.75, 1 / 3, 2 / 3]},
            {"name": "flags", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            {"name": "counts", "shape": [2], "datatype": "UINT16", "data": [1, 2]},
        ],
    }


def test_a_response_without_an_id_has_none_and_errors_are_one_field() -> None:
    assert "id" not in orjson.loads(protocol.encode_response("m", "1.0.0", None, []))
    assert orjson.loads(protocol.encode_error("no")) == {"error": "no"}
