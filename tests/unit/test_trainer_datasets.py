"""Loading training data: CSV and Parquet files by URI, the datasets scikit-learn ships, digests."""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet
import pytest

from kiln.api import trainingjob
from kiln.runtime.trainer import datasets, errors

CSV = "sepal,petal,flag,species\n1.5,0.2,true,setosa\n6.1,,false,virginica\n5.0,1.4,true,versicolor\n"


def file_spec(uri: str, target: str = "species", fmt: str | None = None) -> trainingjob.SklearnTrainer:
    return trainingjob.SklearnTrainer(
        estimator="sklearn.tree.DecisionTreeClassifier",
        dataset=trainingjob.Dataset(uri=uri, format=fmt),  # type: ignore[arg-type]
        target_column=target,
    )


def test_a_csv_file_loads_numeric_features_with_nulls_as_nan_and_the_digest_of_its_bytes(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "iris.csv"
    path.write_text(CSV)

    data = datasets.load(file_spec(f"file://{path}"), None)

    assert data.feature_names == ["sepal", "petal", "flag"]
    np.testing.assert_array_equal(data.features, [[1.5, 0.2, 1.0], [6.1, np.nan, 0.0], [5.0, 1.4, 1.0]])
    assert list(data.target) == ["setosa", "virginica", "versicolor"]
    assert (data.uri, data.sha256) == (f"file://{path}", hashlib.sha256(CSV.encode()).hexdigest())


def test_a_parquet_file_on_a_claim_loads_from_the_path_the_operator_mounted(tmp_path: pathlib.Path) -> None:
    table = pa.table({"x0": [0.5, 1.5, 2.5, 3.5], "x1": [1, 2, 3, 4], "label": [0, 1, 0, 1]})
    mounted = tmp_path / "claim" / "train.pq"
    mounted.parent.mkdir()
    pyarrow.parquet.write_table(table, mounted)

    data = datasets.load(file_spec("pvc://datasets/iris/train.pq", target="label"), mounted)

    np.testing.assert_array_equal(data.features, [[0.5, 1], [1.5, 2], [2.5, 3], [3.5, 4]])
    assert data.target.tolist() == [0, 1, 0, 1]
    assert data.sha256 == hashlib.sha256(mounted.read_bytes()).hexdigest()
    assert data.uri == "pvc://datasets/iris/train.pq"


def test_the_format_field_wins_over_the_extension(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text(CSV)

    assert datasets.load(file_spec(f"file://{path}", fmt="csv"), None).features.shape == (3, 3)
    with pytest.raises(errors.TrainerError, match=r"^sklearn\.dataset\.format: cannot tell the format"):
        datasets.load(file_spec(f"file://{path}"), None)


@pytest.mark.parametrize(
    ("content", "target", "message"),
    [
        (CSV, "label", r"^sklearn\.targetColumn: column 'label' is not in the dataset; its columns are: sepal, petal"),
        ("name,y\nalice,1\nbob,0\n", "y", r"^sklearn\.dataset: feature column 'name' is of type string"),
        ("x,y\n1,1\n2,\n", "y", r"^sklearn\.targetColumn: column 'y' has 1 empty values"),
        ("y\n1\n0\n", "y", r"^sklearn\.dataset: the dataset has no columns besides the target"),
    ],
)
def test_a_dataset_the_trainer_cannot_use_is_refused_naming_the_field(
    tmp_path: pathlib.Path, content: str, target: str, message: str
) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content)

    with pytest.raises(errors.TrainerError, match=message):
        datasets.load(file_spec(f"file://{path}", target=target), None)


def test_a_missing_file_and_a_claim_without_its_mount_are_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.TrainerError, match=r"^sklearn\.dataset\.uri: cannot read file://.*/absent\.csv"):
        datasets.load(file_spec(f"file://{tmp_path}/absent.csv"), None)
    with pytest.raises(errors.TrainerError, match="KILN_DATASET_PATH"):
        datasets.load(file_spec("pvc://datasets/train.csv"), None)


def test_a_parquet_file_that_is_not_parquet_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_text(CSV)

    with pytest.raises(errors.TrainerError, match=r"^sklearn\.dataset: .* is not readable as parquet"):
        datasets.load(file_spec(f"file://{path}"), None)


@pytest.mark.parametrize("name", sorted(datasets.BUILTINS))
def test_every_builtin_dataset_loads_without_a_download_with_a_stable_digest(name: str) -> None:
    data = datasets.load_builtin(name)
    again = datasets.load_builtin(name)

    assert data.uri == f"sklearn://{name}"
    assert data.features.shape[0] == len(data.target) > 0
    assert len(data.feature_names) == data.features.shape[1]
    assert data.sha256 == again.sha256
    altered = data.features.copy()
    altered[0, 0] += 1
    assert datasets.builtin_digest(name, altered, data.target, data.feature_names) != data.sha256
