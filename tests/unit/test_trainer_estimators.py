"""The estimator allowlist: a spec chooses a model, never other code."""

from __future__ import annotations

import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, Ridge

from kiln.api import trainingjob
from kiln.runtime.trainer import errors, estimators


def spec(estimator: str, **params: object) -> trainingjob.SklearnTrainer:
    """A spec without the API's pattern check, as a hand-written KILN_SKLEARN might be."""
    return trainingjob.SklearnTrainer.model_construct(
        estimator=estimator, params=params, dataset=trainingjob.Dataset(builtin="iris"), test_size=0.2, random_seed=7
    )


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("os.system", "not in an allowed package"),
        ("subprocess.Popen", "not in an allowed package"),
        ("builtins.eval", "not in an allowed package"),
        ("sklearn", "not in an allowed package"),
        ("sklearn.ensemble.__builtins__", "only public names"),
        ("sklearn.utils._testing.ignore_warnings", "only public names"),
        ("sklearn.base.BaseEstimator.__subclasses__", "only public names"),
        ("sklearn.utils.Bunch", "is not a scikit-learn estimator class"),
        ("sklearn.utils.check_array", "is not a scikit-learn estimator class"),
        ("sklearn.utils.fixes.np", "is not a scikit-learn estimator class"),
        ("sklearn.ensemble.NoSuchForest", "has no NoSuchForest"),
        ("sklearn.nosuchmodule.Thing", "cannot import sklearn.nosuchmodule"),
        ("sklearn.os.system", "cannot import sklearn.os"),
    ],
)
def test_a_path_outside_the_allowlist_is_refused_naming_the_field(path: str, reason: str) -> None:
    with pytest.raises(errors.TrainerError, match=reason) as refused:
        estimators.resolve(path)

    assert str(refused.value).startswith("sklearn.estimator: ")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("sklearn.ensemble.RandomForestClassifier", RandomForestClassifier),
        ("sklearn.linear_model.Ridge", Ridge),
    ],
)
def test_a_public_classifier_or_regressor_is_accepted(path: str, expected: type) -> None:
    assert estimators.resolve(path) is expected


def test_an_estimator_that_is_neither_classifier_nor_regressor_is_refused() -> None:
    for path in ("sklearn.cluster.KMeans", "sklearn.preprocessing.StandardScaler", "sklearn.base.BaseEstimator"):
        with pytest.raises(errors.TrainerError, match="neither a classifier nor a regressor"):
            estimators.build(spec(path))


def test_random_state_comes_from_the_seed_unless_the_params_set_it() -> None:
    seeded = estimators.build(spec("sklearn.ensemble.RandomForestClassifier", n_estimators=3))
    chosen = estimators.build(spec("sklearn.ensemble.RandomForestClassifier", random_state=42))
    unseedable = estimators.build(spec("sklearn.linear_model.LinearRegression"))

    assert (seeded.instance.random_state, seeded.instance.n_estimators, seeded.is_classifier) == (7, 3, True)
    assert seeded.params == {"n_estimators": 3, "random_state": 7}
    assert chosen.instance.random_state == 42
    assert isinstance(unseedable.instance, LinearRegression)
    assert "random_state" not in unseedable.params
    assert unseedable.is_classifier is False


def test_an_unknown_parameter_is_refused_naming_it() -> None:
    with pytest.raises(errors.TrainerError, match=r"^sklearn\.params\.n_trees: RandomForestClassifier has no"):
        estimators.build(spec("sklearn.ensemble.RandomForestClassifier", n_trees=3))


def test_a_parameter_value_scikit_learn_refuses_is_reported_at_its_field() -> None:
    estimator = estimators.build(spec("sklearn.ensemble.RandomForestClassifier", n_estimators="many"))

    with pytest.raises(errors.TrainerError, match=r"^sklearn\.params\.n_estimators: The 'n_estimators' parameter"):
        estimators.fit(estimator, [[0.0], [1.0]], [0, 1])
