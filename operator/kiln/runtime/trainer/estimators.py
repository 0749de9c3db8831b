"""The estimator a spec names, from an allowlist of packages only.

`sklearn.estimator` is a dotted path such as `sklearn.ensemble.RandomForestClassifier`. Only a
module below one of `ESTIMATOR_MODULES` (sklearn, xgboost, lightgbm, catboost) is ever imported,
every segment must be public (no `_private` or `__dunder__` names), and what the path names must
be a class, defined in one of those packages, that derives from scikit-learn's `BaseEstimator`
and is a classifier or a regressor. So a spec can choose a model but never run other code:
`os.system`, `subprocess.Popen` or `sklearn.utils.Bunch` are refused before anything is called.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any

import sklearn.base

from kiln.api import trainingjob
from kiln.runtime.trainer import errors

_PARAMETER_ERROR = re.compile(r"The '(\w+)' parameter of \w+ must be")


@dataclass(frozen=True)
class Estimator:
    """An unfitted estimator and what the trainer needs to know of it."""

    path: str
    instance: Any
    params: dict[str, Any]
    """The parameters the spec set, plus random_state when the trainer set it from randomSeed."""
    is_classifier: bool

    @property
    def framework(self) -> str:
        """The package that defines the estimator: sklearn, xgboost, lightgbm or catboost."""
        return str(type(self.instance).__module__).split(".", 1)[0]


def resolve(path: str) -> type[sklearn.base.BaseEstimator]:
    """The estimator class a dotted path names; TrainerError (naming `sklearn.estimator`) if it is
    not an allowed, public scikit-learn estimator class."""
    segments = path.split(".")
    if segments[0] not in trainingjob.ESTIMATOR_MODULES or len(segments) < 2:
        raise errors.TrainerError(
            f"sklearn.estimator: {path!r} is not in an allowed package ({', '.join(trainingjob.ESTIMATOR_MODULES)})"
        )
    private = [segment for segment in segments if segment.startswith("_") or not segment.isidentifier()]
    if private:
        raise errors.TrainerError(
            f"sklearn.estimator: {path!r} names {private[0]!r}; only public names are allowed "
            "(sklearn.ensemble.RandomForestClassifier)"
        )
    module_name, class_name = ".".join(segments[:-1]), segments[-1]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise errors.TrainerError(f"sklearn.estimator: cannot import {module_name} ({error})") from None
    found = getattr(module, class_name, None)
    if found is None:
        raise errors.TrainerError(f"sklearn.estimator: {module_name} has no {class_name}")
    if not inspect.isclass(found) or not issubclass(found, sklearn.base.BaseEstimator):
        raise errors.TrainerError(f"sklearn.estimator: {path} is not a scikit-learn estimator class")
    defined_in = str(found.__module__).split(".", 1)[0]
    if defined_in not in trainingjob.ESTIMATOR_MODULES:
        raise errors.TrainerError(f"sklearn.estimator: {path} is defined in {found.__module__}, not an allowed package")
    return found


def build(spec: trainingjob.SklearnTrainer) -> Estimator:
    """The unfitted estimator with the spec's params, seeded with randomSeed when it takes a
    random_state the params leave unset."""
    cls = resolve(spec.estimator)
    try:
        accepted = cls().get_params(deep=False)
    except TypeError as error:
        raise errors.TrainerError(
            f"sklearn.estimator: {spec.estimator} cannot be built without arguments: {error}"
        ) from None
    unknown = sorted(set(spec.params) - set(accepted))
    if unknown:
        raise errors.TrainerError(
            f"sklearn.params.{unknown[0]}: {cls.__name__} has no parameter {unknown[0]!r}; "
            f"its parameters are: {', '.join(sorted(accepted))}"
        )
    params = dict(spec.params)
    if "random_state" in accepted and "random_state" not in params:
        params["random_state"] = spec.random_seed
    instance = cls(**params)
    classifier = sklearn.base.is_classifier(instance)
    if not classifier and not sklearn.base.is_regressor(instance):
        raise errors.TrainerError(
            f"sklearn.estimator: {spec.estimator} is neither a classifier nor a regressor; "
            "the trainer measures classifiers and regressors"
        )
    return Estimator(spec.estimator, instance, params, classifier)


def fit(estimator: Estimator, features: Any, target: Any) -> None:
    """Fit in place; a parameter scikit-learn refuses is reported as `sklearn.params.<name>`."""
    try:
        estimator.instance.fit(features, target)
    except (ValueError, TypeError) as error:
        match = _PARAMETER_ERROR.search(str(error))
        where = f"sklearn.params.{match.group(1)}" if match else f"fitting {estimator.path}"
        raise errors.TrainerError(f"{where}: {error}") from None
