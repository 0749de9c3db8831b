"""Fixtures of the runtime tests: the iris data set and models trained on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier


@dataclass(frozen=True)
class Iris:
    features: np.ndarray[Any, Any]
    labels: np.ndarray[Any, Any]
    names: np.ndarray[Any, Any]


@pytest.fixture(scope="session")
def iris() -> Iris:
    data = load_iris()
    return Iris(features=data.data, labels=data.target, names=data.target_names[data.target])


@pytest.fixture(scope="session")
def iris_model(iris: Iris) -> LogisticRegression:
    return LogisticRegression(max_iter=1000).fit(iris.features, iris.labels)


@pytest.fixture(scope="session")
def iris_tree(iris: Iris) -> DecisionTreeClassifier:
    """A tree (skops needs the trusted Tree type) predicting species names (BYTES outputs)."""
    return DecisionTreeClassifier(max_depth=3, random_state=0).fit(iris.features, iris.names)
