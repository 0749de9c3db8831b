"""Training data: a CSV or Parquet file by URI, or a dataset scikit-learn ships; and its digest.

A file is read once into memory, and the digest is the sha256 of exactly the bytes parsed. A
builtin dataset has no file, so its digest is computed over a canonical encoding of the arrays
(`builtin_digest`). Features must be numeric (integers, floats, booleans; nulls become NaN); the
target may be numeric, boolean or text (class labels). A `check` given to `load` sees the table as
read (a builtin dataset as its feature columns and `target`) before any of that, so data validation
(`expectations`) reports on the data itself.
"""

from __future__ import annotations

import hashlib
import pathlib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
from sklearn import datasets as sklearn_datasets

from kiln.api import trainingjob
from kiln.runtime.trainer import errors

BUILTINS: Mapping[str, Callable[..., Any]] = {
    "iris": sklearn_datasets.load_iris,
    "wine": sklearn_datasets.load_wine,
    "breast_cancer": sklearn_datasets.load_breast_cancer,
    "digits": sklearn_datasets.load_digits,
    "diabetes": sklearn_datasets.load_diabetes,
}
"""The datasets scikit-learn ships in its wheel: they load without any download."""

EXTENSIONS: Mapping[str, str] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
BUILTIN_SCHEME = "sklearn://"


@dataclass(frozen=True)
class Data:
    """A loaded dataset: float64 features (rows x columns), the target, and where they came from."""

    uri: str
    sha256: str
    features: npt.NDArray[np.float64]
    target: npt.NDArray[Any]
    feature_names: list[str]


Check = Callable[[pa.Table], None]
"""Looks at the table as read; raises a TrainerError to refuse it."""


def load(spec: trainingjob.SklearnTrainer, dataset_path: pathlib.Path | None, check: Check | None = None) -> Data:
    """The dataset the spec names, once `check` has seen it; TrainerError names the field at fault."""
    dataset = spec.dataset
    if dataset.builtin is not None:
        loaded = load_builtin(dataset.builtin)
        if check is not None:
            check(builtin_table(loaded))
        return loaded
    assert dataset.uri is not None  # the API's rule: exactly one of uri and builtin
    path = local_path(dataset.uri, dataset_path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise errors.TrainerError(
            f"sklearn.dataset.uri: cannot read {dataset.uri} at {path}: {error.strerror}"
        ) from None
    table = parse(data, file_format(dataset), dataset.uri)
    if check is not None:
        check(table)
    if spec.target_column is None:
        raise errors.TrainerError("sklearn.targetColumn: required for a dataset given by uri")
    features, target, names = split_columns(table, spec.target_column)
    return Data(dataset.uri, hashlib.sha256(data).hexdigest(), features, target, names)


def local_path(uri: str, dataset_path: pathlib.Path | None) -> pathlib.Path:
    """Where a dataset URI is on this machine: a `file://` URI's own path, or for `pvc://` the
    path the operator mounted it at (`KILN_DATASET_PATH`)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise errors.TrainerError(f"sklearn.dataset.uri: {uri} names host {parsed.netloc}; use file:///abs/path")
        return pathlib.Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "pvc":
        if dataset_path is None:
            raise errors.TrainerError(
                f"sklearn.dataset.uri: {uri} is on a claim, but KILN_DATASET_PATH (where it is mounted) is not set"
            )
        return dataset_path
    raise errors.TrainerError(f"sklearn.dataset.uri: {uri}: only file:// and pvc:// datasets are supported")


def file_format(dataset: trainingjob.Dataset) -> str:
    """The dataset's format: as given, or from its URI's extension."""
    if dataset.format is not None:
        return dataset.format
    suffix = pathlib.PurePosixPath(urllib.parse.urlparse(dataset.uri or "").path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise errors.TrainerError(
            f"sklearn.dataset.format: cannot tell the format of {dataset.uri} from its extension "
            f"({', '.join(EXTENSIONS)}); set format to csv or parquet"
        )
    return EXTENSIONS[suffix]


def parse(data: bytes, fmt: str, uri: str) -> pa.Table:
    try:
        if fmt == "parquet":
            return pyarrow.parquet.read_table(pa.BufferReader(data))
        return pyarrow.csv.read_csv(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as error:
        raise errors.TrainerError(f"sklearn.dataset: {uri} is not readable as {fmt}: {error}") from None


def _numeric(column: pa.ChunkedArray) -> bool:
    kind = column.type
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind))


def split_columns(table: pa.Table, target_column: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any], list[str]]:
    """The features as float64 (nulls as NaN), the target, and the feature names, in file order."""
    names = [str(name) for name in table.column_names]
    if target_column not in names:
        raise errors.TrainerError(
            f"sklearn.targetColumn: column {target_column!r} is not in the dataset; its columns are: {', '.join(names)}"
        )
    if table.num_rows == 0:
        raise errors.TrainerError("sklearn.dataset: the dataset has no rows")
    feature_names = [name for name in names if name != target_column]
    if not feature_names:
        raise errors.TrainerError(f"sklearn.dataset: the dataset has no columns besides the target {target_column!r}")
    for name in feature_names:
        if not _numeric(table.column(name)):
            raise errors.TrainerError(
                f"sklearn.dataset: feature column {name!r} is of type {table.column(name).type}; "
                "the trainer needs numeric features (encode the column first)"
            )
    target = table.column(target_column)
    if target.null_count:
        raise errors.TrainerError(
            f"sklearn.targetColumn: column {target_column!r} has {target.null_count} empty values"
        )
    features = np.column_stack(
        [table.column(name).cast(pa.float64()).to_numpy().astype(np.float64) for name in feature_names]
    )
    return features, target.to_numpy(), feature_names


def load_builtin(name: str) -> Data:
    """A dataset scikit-learn ships, identified as `sklearn://<name>`."""
    bunch = BUILTINS[name]()
    features = np.asarray(bunch.data, dtype=np.float64)
    target = np.asarray(bunch.target)
    shipped = getattr(bunch, "feature_names", None)
    names = [str(n) for n in shipped] if shipped is not None else [f"feature-{i}" for i in range(features.shape[1])]
    return Data(f"{BUILTIN_SCHEME}{name}", builtin_digest(name, features, target, names), features, target, names)


BUILTIN_TARGET = "target"


def builtin_table(data: Data) -> pa.Table:
    """A builtin dataset as a table: its feature columns by scikit-learn's names, then `target`."""
    columns = {name: data.features[:, index] for index, name in enumerate(data.feature_names)}
    return pa.table({**columns, BUILTIN_TARGET: data.target})


def builtin_digest(name: str, features: npt.NDArray[np.float64], target: npt.NDArray[Any], names: list[str]) -> str:
    """sha256 over a canonical encoding of a builtin dataset, version 1:

    `kiln-builtin-dataset-v1`, the name, `<rows>x<columns>` and the feature names, each followed by
    a NUL byte; then the features as little-endian float64 in row-major order; then the target as
    little-endian float64. The same arrays give the same digest on any machine and numpy version.
    """
    digest = hashlib.sha256()
    rows, columns = features.shape
    for part in ("kiln-builtin-dataset-v1", name, f"{rows}x{columns}", *names):
        digest.update(part.encode() + b"\0")
    digest.update(np.ascontiguousarray(features, dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(target, dtype="<f8").tobytes())
    return digest.hexdigest()
