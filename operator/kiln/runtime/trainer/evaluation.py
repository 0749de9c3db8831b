"""The held-out split and the metrics measured on it.

The split is `train_test_split(test_size=testSize, random_state=randomSeed)`, stratified by the
target for classifiers when every class has enough rows for both sides; so, with a seeded
estimator, the same spec and data give the same metrics.

Classifiers: accuracy, f1_macro, precision_macro, recall_macro, and roc_auc for two classes.
Regressors: r2, mae, rmse. A metric that comes out NaN or infinite (r2 of one row) is left out:
the API stores finite numbers only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn import metrics as sk_metrics
from sklearn import model_selection

from kiln.runtime.trainer import errors


@dataclass(frozen=True)
class Split:
    train_features: npt.NDArray[np.float64]
    test_features: npt.NDArray[np.float64]
    train_target: npt.NDArray[Any]
    test_target: npt.NDArray[Any]
    stratified: bool


def split(
    features: npt.NDArray[np.float64], target: npt.NDArray[Any], test_size: float, seed: int, *, stratify: bool
) -> Split:
    """Hold out testSize of the rows; stratified when asked and the classes allow it."""
    if stratify:
        try:
            parts = model_selection.train_test_split(
                features, target, test_size=test_size, random_state=seed, stratify=target
            )
            train_features, test_features, train_target, test_target = parts
            return Split(train_features, test_features, train_target, test_target, stratified=True)
        except ValueError:
            pass  # a class with a single row, or fewer test rows than classes: split without strata
    try:
        parts = model_selection.train_test_split(features, target, test_size=test_size, random_state=seed)
    except ValueError as error:
        raise errors.TrainerError(
            f"sklearn.testSize: cannot hold out {test_size} of {len(target)} rows: {error}"
        ) from None
    train_features, test_features, train_target, test_target = parts
    return Split(train_features, test_features, train_target, test_target, stratified=False)


def classifier_metrics(estimator: Any, features: npt.NDArray[np.float64], target: npt.NDArray[Any]) -> dict[str, float]:
    predicted = estimator.predict(features)
    found = {
        "accuracy": sk_metrics.accuracy_score(target, predicted),
        "f1_macro": sk_metrics.f1_score(target, predicted, average="macro", zero_division=0),
        "precision_macro": sk_metrics.precision_score(target, predicted, average="macro", zero_division=0),
        "recall_macro": sk_metrics.recall_score(target, predicted, average="macro", zero_division=0),
    }
    classes = list(getattr(estimator, "classes_", []))
    if len(classes) == 2 and len(np.unique(target)) == 2:
        found["roc_auc"] = sk_metrics.roc_auc_score(target, _positive_scores(estimator, features))
    return _finite(found)


def _positive_scores(estimator: Any, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The score of the second class (classes_[1]), as roc_auc_score expects for labels in that order."""
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(features))[:, 1]
    return np.asarray(estimator.decision_function(features))


def regressor_metrics(estimator: Any, features: npt.NDArray[np.float64], target: npt.NDArray[Any]) -> dict[str, float]:
    predicted = estimator.predict(features)
    return _finite(
        {
            "r2": sk_metrics.r2_score(target, predicted),
            "mae": sk_metrics.mean_absolute_error(target, predicted),
            "rmse": math.sqrt(sk_metrics.mean_squared_error(target, predicted)),
        }
    )


def measure(estimator: Any, is_classifier: bool, data: Split) -> dict[str, float]:
    """The metrics of the fitted estimator on the held-out rows."""
    measured = classifier_metrics if is_classifier else regressor_metrics
    return measured(estimator, data.test_features, data.test_target)


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in values.items() if math.isfinite(float(value))}
