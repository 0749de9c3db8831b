"""The short predict path gives exactly what the estimator's own predict gives, or is not taken."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.tree import DecisionTreeClassifier

from kiln.runtime.server import fastpath

FEATURES, LABELS = load_iris(return_X_y=True)
NAMES = load_iris().target_names[LABELS]


@pytest.mark.parametrize(
    ("estimator", "labels"),
    [
        pytest.param(LogisticRegression(max_iter=1000), LABELS, id="multiclass"),
        pytest.param(LogisticRegression(max_iter=1000), LABELS == 2, id="binary"),
        pytest.param(LogisticRegression(max_iter=1000), NAMES, id="string-labels"),
        pytest.param(SGDClassifier(random_state=0), LABELS, id="sgd"),
    ],
)
def test_linear_classifiers_take_the_short_path_with_the_same_answers(estimator: Any, labels: Any) -> None:
    estimator.fit(FEATURES, labels)
    probe = np.vstack([FEATURES, np.random.default_rng(1).normal(scale=5, size=(500, 4))])

    predict = fastpath.predictor(estimator)

    assert predict != estimator.predict
    np.testing.assert_array_equal(predict(probe), estimator.predict(probe))


@pytest.mark.parametrize("estimator", [DecisionTreeClassifier(), RidgeClassifier()], ids=["tree", "overrides-predict"])
def test_other_estimators_keep_their_own_predict(estimator: Any) -> None:
    estimator.fit(FEATURES, LABELS)

    assert fastpath.predictor(estimator) == estimator.predict
