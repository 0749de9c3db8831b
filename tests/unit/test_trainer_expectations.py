"""Data validation before fitting: every broken expectation named at once, PSI against a
ModelVersion's baseline checked with numpy independently, and a run that refuses its dataset
fitting nothing and registering nothing."""

from __future__ import annotations

import io
import json
import pathlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pytest
from test_trainer_run import NS, config, sklearn_spec

import kiln.runtime.trainer
from kiln.api import modelversion, trainingjob
from kiln.runtime.trainer import datasets, expectations, registration, run

CSV = b"""a,b,label
1,0.5,x
2,,y
3,2.5,x
4,nan,y
"""


def table(data: bytes = CSV) -> pa.Table:
    return pyarrow.csv.read_csv(io.BytesIO(data))


def expected(**fields: Any) -> trainingjob.DatasetExpectations:
    return trainingjob.DatasetExpectations.model_validate(fields)


def no_baselines(name: str) -> modelversion.Baseline | None:
    raise AssertionError(f"no drift expectation, yet the baseline of {name} was read")


def test_a_dataset_meeting_its_expectations_passes() -> None:
    columns = [
        {"name": "a", "type": "integer", "maxNulls": 0, "min": 1, "max": 4},
        {"name": "b", "type": "number", "maxNulls": 2, "maxNullFraction": 0.5},
        {"name": "label", "type": "string"},
    ]

    assert expectations.check(table(), expected(minRows=4, columns=columns), no_baselines) == []


def test_every_broken_expectation_is_named() -> None:
    columns = [
        {"name": "a", "type": "float", "max": 3},
        {"name": "b", "maxNulls": 1, "maxNullFraction": 0.25, "min": 1},
        {"name": "label", "min": 0},
        {"name": "missing"},
    ]

    failures = expectations.check(table(), expected(minRows=10, columns=columns), no_baselines)

    assert failures == [
        "minRows: the dataset has 4 rows, fewer than 10",
        "columns[a].type: the column is int64, not float",
        "columns[a].max: values as high as 4, above 3",
        "columns[b].maxNulls: 2 empty values, more than 1",
        "columns[b].maxNullFraction: 0.5 of the values are empty, more than 0.25",
        "columns[b].min: values as low as 0.5, below 1",
        "columns[label]: min and max apply to numeric columns; this one is string",
        "columns[missing]: required, but the dataset has no such column (it has a, b, label)",
    ]


def baseline_of(values: np.ndarray[Any, Any], name: str = "a") -> modelversion.Baseline:
    counts, edges = np.histogram(values, bins=5)
    feature = modelversion.FeatureBaseline(name=name, bins=edges.tolist(), counts=counts.tolist())
    return modelversion.Baseline(features=[feature], sample_size=len(values))


def independent_psi(expected_counts: np.ndarray[Any, Any], actual_counts: np.ndarray[Any, Any]) -> float:
    e = np.maximum(expected_counts / expected_counts.sum(), 0.0001)
    a = np.maximum(actual_counts / actual_counts.sum(), 0.0001)
    return float(np.sum((a - e) * np.log(a / e)))


def test_drift_beyond_max_psi_names_the_feature_and_its_psi() -> None:
    rng = np.random.default_rng(0)
    trained_on, shifted = rng.normal(0, 1, 2000), rng.normal(1.5, 1, 500)
    baseline = baseline_of(trained_on)
    edges = np.asarray(baseline.features[0].bins)
    psi = independent_psi(
        np.asarray(baseline.features[0].counts), np.histogram(np.clip(shifted, edges[0], edges[-1]), edges)[0]
    )
    drift = {"modelVersion": "iris-1-0-0", "maxPSI": 0.25}

    failures = expectations.check(pa.table({"a": shifted}), expected(drift=drift), lambda name: baseline)
    steady = expectations.check(pa.table({"a": rng.normal(0, 1, 500)}), expected(drift=drift), lambda name: baseline)

    assert psi > 0.25
    assert failures == [f"drift (against modelversion iris-1-0-0).maxPSI: feature a has PSI {psi:.3g}, more than 0.25"]
    assert steady == []


def test_values_beyond_the_baseline_range_count_in_the_outermost_bins() -> None:
    np.testing.assert_array_equal(expectations.binned(np.array([-5.0, 0.5, 1.5, 9.0, np.nan]), [0, 1, 2]), [2, 2])


@pytest.mark.parametrize(
    ("found", "message"),
    [
        (None, "the ModelVersion has no baseline to compare with"),
        (modelversion.Baseline(features=[], sample_size=0), "the ModelVersion has no baseline to compare with"),
    ],
)
def test_a_model_version_without_a_baseline_fails_the_drift_expectation(
    found: modelversion.Baseline | None, message: str
) -> None:
    failures = expectations.check(pa.table({"a": [1.0]}), expected(drift={"modelVersion": "v1"}), lambda _: found)

    assert failures == [f"drift (against modelversion v1): {message}"]


def test_an_unreadable_model_version_fails_the_drift_expectation() -> None:
    reader = expectations.baseline_reader(registration.InMemoryModelVersions, NS)

    failures = expectations.check(pa.table({"a": [1.0]}), expected(drift={"modelVersion": "gone"}), reader)

    assert len(failures) == 1
    assert failures[0].startswith("drift (against modelversion gone): cannot read its baseline: modelversion ml/gone")


def test_a_baseline_feature_missing_from_the_dataset_is_named() -> None:
    baseline = baseline_of(np.arange(10.0), name="petal_width")

    failures = expectations.check(pa.table({"a": [1.0]}), expected(drift={"modelVersion": "v1"}), lambda _: baseline)

    assert failures == [
        "drift (against modelversion v1): baseline feature 'petal_width' is not a column of the dataset"
    ]


def test_a_builtin_dataset_is_checked_by_its_feature_names_and_target() -> None:
    iris = datasets.builtin_table(datasets.load_builtin("iris"))
    columns = [
        {"name": "petal width (cm)", "type": "float", "max": 2.5},
        {"name": "target", "type": "integer", "max": 2},
    ]

    assert expectations.check(iris, expected(minRows=150, columns=columns), no_baselines) == []
    assert iris.num_rows == 150


def test_a_run_that_refuses_its_dataset_fits_and_registers_nothing(tmp_path: pathlib.Path) -> None:
    spec = sklearn_spec("sklearn.linear_model.LogisticRegression", "iris", max_iter=200)
    spec["dataset"]["expectations"] = {"minRows": 1000, "columns": [{"name": "target", "max": 1}]}
    api = registration.InMemoryModelVersions()
    said: list[str] = []

    with pytest.raises(expectations.DatasetRejected) as rejected:
        run.train(config(tmp_path, spec), lambda: api, said.append)

    assert rejected.value.failures == [
        "minRows: the dataset has 150 rows, fewer than 1000",
        "columns[target].max: values as high as 2, above 1",
    ]
    assert str(rejected.value).startswith("the dataset breaks 2 expectations, so nothing was fitted: minRows:")
    assert not any("fitted" in line for line in said)
    assert api.objects == {}
    assert not (tmp_path / "models").exists()


def test_kiln_trainer_exits_65_on_a_rejected_dataset(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = sklearn_spec("sklearn.linear_model.LogisticRegression", "iris")
    spec["dataset"]["expectations"] = {"minRows": 1000}
    monkeypatch.setenv("KILN_SKLEARN", json.dumps(spec))
    monkeypatch.setenv("KILN_RESULT_FILE", str(tmp_path / "result.json"))

    code = kiln.runtime.trainer.main([])

    assert code == trainingjob.DATASET_REJECTED_EXIT_CODE == 65
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        "kiln-trainer: failed: the dataset breaks 1 expectation, so nothing was fitted: "
        "minRows: the dataset has 150 rows, fewer than 1000"
    )
