"""kiln-router's comparison of a shadow's inference answer with the live one: a table of cases."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kiln.runtime.router import comparison
from kiln.runtime.router.comparison import Outcome

TOLERANCE = 1e-6


def output(name: str, datatype: str, data: list[Any], shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape if shape is not None else [len(data)], "data": data}


def answer(*outputs: dict[str, Any], version: str = "1.0.0") -> bytes:
    return json.dumps({"model_name": "iris", "model_version": version, "id": "1", "outputs": list(outputs)}).encode()


PROBA = [0.9, 0.05, 0.05, 0.1, 0.2, 0.7]


def predict(data: list[Any] | None = None, datatype: str = "INT64") -> dict[str, Any]:
    return output("predict", datatype, data if data is not None else [0, 2])


def proba(data: list[Any] | None = None, shape: list[int] | None = None, datatype: str = "FP64") -> dict[str, Any]:
    return output("predict_proba", datatype, data if data is not None else PROBA, shape or [2, 3])


LIVE = answer(predict(), proba())


@pytest.mark.parametrize(
    ("shadow", "outcome"),
    [
        (LIVE, Outcome.AGREE),
        (answer(proba(), predict(), version="2.0.0"), Outcome.AGREE),
        (answer(predict(), proba([0.9 + 9e-7, 0.05, 0.05, 0.1, 0.2, 0.7 - 9e-7])), Outcome.AGREE),
        (answer(predict(), proba([0.9 + 2e-6, 0.05, 0.05, 0.1, 0.2, 0.7])), Outcome.DISAGREE),
        (answer(predict([0, 1]), proba()), Outcome.DISAGREE),
        (answer(predict(datatype="INT32"), proba(datatype="FP32")), Outcome.AGREE),
        (answer(predict()), Outcome.DISAGREE),
        (answer(predict(), proba(shape=[3, 2])), Outcome.DISAGREE),
        (answer(predict(), proba(), output("extra", "FP64", [1.0])), Outcome.DISAGREE),
        (answer(predict([0.0, 2.0], "FP64"), proba()), Outcome.DISAGREE),
        (answer(predict(), proba([PROBA[:3], PROBA[3:]])), Outcome.AGREE),
        (b'{"error": "fault injected"}', Outcome.ERROR),
        (b"<html>bad gateway</html>", Outcome.ERROR),
        (b'{"outputs": "none"}', Outcome.ERROR),
        (answer(predict(), proba(["a", *PROBA[1:]])), Outcome.ERROR),
        (answer(output("predict", "COMPLEX", [0, 2])), Outcome.ERROR),
    ],
    ids=[
        "same", "order-version-and-id-do-not-matter", "floats-within-tolerance", "float-beyond-tolerance",
        "class-differs", "datatype-width-does-not-matter", "missing-output", "other-shape", "extra-output",
        "class-as-float", "nested-data-flattened", "json-error-body", "not-json", "no-outputs-array",
        "float-data-not-a-number", "unknown-datatype",
    ],
)  # fmt: skip
def test_a_shadow_answer_agrees_disagrees_or_is_an_error(shadow: bytes, outcome: Outcome) -> None:
    verdict = comparison.compare(200, LIVE, 200, shadow, TOLERANCE)

    assert verdict is not None
    assert verdict.outcome is outcome, verdict.reason


@pytest.mark.parametrize(
    ("live", "shadow", "agrees"),
    [
        (0.5, 0.5 + 9e-7, True),
        (0.5, 0.5 + 1.1e-6, False),
        (1000.0, 1000.0 + 9e-4, True),
        (1000.0, 1000.0 + 1.1e-3, False),
        (-2000.0, -2000.0 - 1.9e-3, True),
        (0.0, 1e-7, True),
        (None, None, True),
        (None, 0.0, False),
        (float("inf"), float("inf"), True),
        (float("inf"), float("-inf"), False),
    ],
    ids=[
        "absolute-below-1", "absolute-beyond", "relative-above-1", "relative-beyond", "relative-negative",
        "near-zero", "nan-nan", "nan-number", "inf-inf", "inf-minus-inf",
    ],
)  # fmt: skip
def test_floats_agree_within_the_tolerance_absolute_up_to_1_and_relative_beyond(
    live: float | None, shadow: float | None, agrees: bool
) -> None:
    # orjson writes NaN as null; json writes the infinities as Infinity, which orjson does not read,
    # so the tensors are compared directly.
    tensor = comparison.Tensor("FP64", (1,), (live,))
    other = comparison.Tensor("FP64", (1,), (shadow,))

    verdict = comparison.compare_outputs({"y": tensor}, {"y": other}, TOLERANCE)

    assert (verdict.outcome is Outcome.AGREE) is agrees, verdict.reason


@pytest.mark.parametrize(
    ("live", "shadow", "agrees"),
    [
        (["setosa", "virginica"], ["setosa", "virginica"], True),
        (["setosa", "virginica"], ["setosa", "versicolor"], False),
        ([True, False], [True, False], True),
        ([True, False], [1, 0], False),
    ],
    ids=["bytes-equal", "bytes-differ", "bool-equal", "bool-vs-int"],
)
def test_class_outputs_must_be_equal_element_by_element(live: list[Any], shadow: list[Any], agrees: bool) -> None:
    datatype = "BOOL" if isinstance(live[0], bool) else "BYTES"
    verdict = comparison.compare(
        200, answer(output("y", datatype, live)), 200, answer(output("y", datatype, shadow)), 0.5
    )

    assert verdict is not None
    assert (verdict.outcome is Outcome.AGREE) is agrees, verdict.reason


def test_a_shadow_that_did_not_answer_200_or_at_all_is_an_error_not_a_disagreement() -> None:
    refused = comparison.compare(200, LIVE, 500, b'{"error": "fault injected by KILN_FAULT_INJECTION"}', TOLERANCE)
    silent = comparison.compare(200, LIVE, None, b"", TOLERANCE)

    assert refused == comparison.Verdict(Outcome.ERROR, "answered 500")
    assert silent is not None
    assert silent.outcome is Outcome.ERROR


@pytest.mark.parametrize(("status", "body"), [(400, b'{"error": "bad input"}'), (200, b"not json"), (502, b"")])
def test_a_live_answer_that_is_not_an_inference_response_leaves_nothing_to_compare(status: int, body: bytes) -> None:
    assert comparison.compare(status, body, 200, LIVE, TOLERANCE) is None
