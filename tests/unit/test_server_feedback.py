"""The feedback join with time injected: remembered predictions meet their truth once; late,
duplicate and unknown ids say why; labels that do not fit their prediction are refused unjoined."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.runtime.server import feedback, protocol

Outcome = feedback.Outcome


def ledger(max_predictions: int = 100, max_age: float = 60.0) -> feedback.Ledger:
    return feedback.Ledger(feedback.Limits(max_predictions=max_predictions, max_age=max_age))


def test_a_truth_joins_the_prediction_its_id_remembers_and_the_version_that_made_it() -> None:
    book = ledger()
    book.remember("iris", "r1", "1.1.0", np.array([2, 0]), now=10.0)

    found = book.find("iris", "r1", None, now=20.0)

    assert (found.outcome, found.version) == (Outcome.JOINED, "1.1.0")
    assert found.served is not None
    np.testing.assert_array_equal(found.served.predictions, [2, 0])


def test_a_second_truth_for_the_same_id_is_a_duplicate() -> None:
    book = ledger()
    book.remember("iris", "r1", "1.0.0", np.array([1]), now=0.0)
    book.labelled("iris", "r1")

    found = book.find("iris", "r1", None, now=1.0)

    assert (found.outcome, found.version, found.served) == (Outcome.DUPLICATE, "1.0.0", None)
    assert "already has its truth" in found.message
    assert book.rows == 0


def test_a_truth_after_the_max_age_is_late_and_says_so() -> None:
    book = ledger(max_age=60.0)
    book.remember("iris", "r1", "1.0.0", np.array([1]), now=0.0)

    found = book.find("iris", "r1", None, now=60.5)

    assert (found.outcome, found.version) == (Outcome.LATE, "1.0.0")
    assert "more than 60 s ago" in found.message
    assert book.rows == 0


def test_a_prediction_just_inside_the_window_still_joins() -> None:
    book = ledger(max_age=60.0)
    book.remember("iris", "r1", "1.0.0", np.array([1]), now=0.0)

    assert book.find("iris", "r1", None, now=60.0).outcome is Outcome.JOINED


def test_newer_predictions_push_the_oldest_out_when_the_window_is_full() -> None:
    book = ledger(max_predictions=4)
    book.remember("iris", "r1", "1.0.0", np.array([1, 1]), now=0.0)
    book.remember("iris", "r2", "1.0.0", np.array([1, 1]), now=1.0)
    book.remember("iris", "r3", "1.0.0", np.array([1]), now=2.0)

    pushed = book.find("iris", "r1", None, now=3.0)

    assert pushed.outcome is Outcome.LATE
    assert "newer predictions pushed it out (the window holds 4 rows)" in pushed.message
    assert [book.find("iris", rid, None, now=3.0).outcome for rid in ("r2", "r3")] == [Outcome.JOINED] * 2
    assert book.rows == 3


def test_an_id_never_served_is_unknown() -> None:
    found = ledger().find("iris", "nope", None, now=0.0)

    assert (found.outcome, found.version) == (Outcome.UNKNOWN, None)
    assert "no prediction for request 'nope' by model iris is remembered" in found.message


def test_ids_belong_to_their_model() -> None:
    book = ledger()
    book.remember("iris", "r1", "1.0.0", np.array([1]), now=0.0)

    assert book.find("wine", "r1", None, now=0.0).outcome is Outcome.UNKNOWN


def test_a_truth_addressed_to_another_version_is_unknown_and_names_the_one_that_served() -> None:
    book = ledger()
    book.remember("iris", "r1", "1.0.0", np.array([1]), now=0.0)

    found = book.find("iris", "r1", "1.1.0", now=0.0)

    assert found.outcome is Outcome.UNKNOWN
    assert "served by version 1.0.0, not 1.1.0" in found.message
    assert book.find("iris", "r1", "1.0.0", now=0.0).outcome is Outcome.JOINED


def test_tombstones_are_bounded_so_long_forgotten_ids_become_unknown() -> None:
    book = ledger(max_predictions=2)
    for position in range(5):
        book.remember("iris", f"r{position}", "1.0.0", np.array([1]), now=float(position))
        book.labelled("iris", f"r{position}")

    outcomes = [book.find("iris", f"r{position}", None, now=5.0).outcome for position in range(5)]

    assert outcomes == [Outcome.UNKNOWN] * 3 + [Outcome.DUPLICATE] * 2


def test_a_reused_id_replaces_the_earlier_prediction_and_its_tombstone() -> None:
    book = ledger()
    book.remember("iris", "r1", "1.0.0", np.array([1, 1, 1]), now=0.0)
    book.labelled("iris", "r1")
    book.remember("iris", "r1", "1.0.0", np.array([0]), now=1.0)
    book.remember("iris", "r1", "1.1.0", np.array([2]), now=2.0)

    found = book.find("iris", "r1", None, now=3.0)

    assert (found.outcome, found.version, book.rows) == (Outcome.JOINED, "1.1.0", 1)


def test_limits_refuse_an_empty_window() -> None:
    with pytest.raises(ValueError, match="max_predictions must be at least 1"):
        feedback.Limits(max_predictions=0)
    with pytest.raises(ValueError, match="max_age must be a positive number of seconds"):
        feedback.Limits(max_age=0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1]", "must be a JSON object"),
        (b'{"truth": [1]}', "'id' must be the non-empty id"),
        (b'{"id": "r1"}', "'truth' is required"),
        (b'{"id": "r1", "truth": null}', "'truth' must be a value or an array"),
        (b'{"id": "r1", "truth": [1, null]}', "must hold numbers, booleans or strings"),
        (b'{"id": "r1", "truth": [1], "label": 2}', "unknown field(s) label"),
        (b"{", "not valid JSON"),
    ],
)
def test_a_malformed_post_is_refused_naming_the_field(body: bytes, message: str) -> None:
    with pytest.raises(protocol.RequestError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        feedback.decode(body)
    assert refused.value.status == 400


def test_a_scalar_truth_is_one_row() -> None:
    posted = feedback.decode(b'{"id": "r1", "truth": 2}')

    assert posted.id == "r1"
    np.testing.assert_array_equal(posted.truth, [2])


def test_a_classifier_counts_rows_predicted_right() -> None:
    scored = feedback.score(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]), classifier=True)

    assert (scored.rows, scored.correct, scored.absolute_errors) == (4, 3, None)


def test_class_names_compare_as_strings_and_integers_with_floats() -> None:
    names = feedback.score(np.array(["setosa", "virginica"], dtype=object), np.array(["setosa", "setosa"]), True)
    numbers = feedback.score(np.array([1.0, 2.0]), np.array([1, 2]), classifier=True)

    assert (names.correct, numbers.correct) == (1, 2)


def test_a_regressor_gives_each_rows_absolute_error() -> None:
    scored = feedback.score(np.array([1.5, 3.0]), np.array([2, 1]), classifier=False)

    assert scored.correct is None
    assert scored.absolute_errors is not None
    np.testing.assert_allclose(scored.absolute_errors, [0.5, 2.0])


@pytest.mark.parametrize(
    ("predictions", "truth", "classifier", "message"),
    [
        (np.array([1, 2]), np.array([1]), True, "'truth' has 1 value(s) but the request predicted 2"),
        (np.array([1, 2]), np.array(["a", "b"]), True, "predicts numeric class labels"),
        (np.array(["a"]), np.array([1]), True, "predicts class names"),
        (np.array([1.5]), np.array(["a"]), False, "regressor: 'truth' must hold numbers"),
    ],
)
def test_a_truth_that_does_not_fit_its_prediction_is_refused(
    predictions: np.ndarray, truth: np.ndarray, classifier: bool, message: str
) -> None:
    with pytest.raises(protocol.RequestError) as refused:
        feedback.score(predictions, truth, classifier)
    assert message in refused.value.message
