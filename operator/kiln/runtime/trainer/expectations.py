"""Data validation before fitting: the dataset's declared expectations, every one checked.

A TrainingJob's `sklearn.dataset.expectations` says what the data must hold (columns and their
types, the most empty values, the fewest rows, value ranges, and no drift beyond a PSI from a
ModelVersion's baseline). The trainer checks them all on the table as read, before anything is
fitted, and refuses the dataset with every failing expectation named, so one run tells the whole
story and a corrupted dataset never costs a fit. The refusal is a `DatasetRejected` error, which
kiln-trainer exits with `DATASET_REJECTED_EXIT_CODE`: the operator fails the job at once instead
of retrying a run that cannot succeed.

Plain pyarrow rather than pandera: pandera validates pandas or polars frames, and the trainer
reads pyarrow tables and carries neither (pandas alone would add tens of megabytes and a second
of import to every training pod) for what are a dozen `pyarrow.compute` calls. Like pandera's
`lazy=True`, every failure is collected rather than the first raised.

The drift check uses the same PSI as drift detection (`kiln.monitoring.statistics.psi`), on the
baseline's own bins, values beyond them counted in the outermost bins as kiln-server's live
histograms count them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kiln.api import modelversion, trainingjob
from kiln.monitoring import statistics
from kiln.runtime.trainer import baseline, errors, registration

Type = trainingjob.ColumnType
BaselineOf = Callable[[str], modelversion.Baseline | None]
"""The baseline of a ModelVersion by name (None when it has none); raises LookupError naming why
it cannot be read."""

_TYPE_TESTS: dict[Type, Callable[[pa.DataType], bool]] = {
    Type.INTEGER: pa.types.is_integer,
    Type.FLOAT: pa.types.is_floating,
    Type.NUMBER: lambda kind: pa.types.is_integer(kind) or pa.types.is_floating(kind),
    Type.BOOLEAN: pa.types.is_boolean,
    Type.STRING: lambda kind: pa.types.is_string(kind) or pa.types.is_large_string(kind),
}


class DatasetRejected(errors.TrainerError):
    """The dataset breaks expectations; `failures` names each."""

    def __init__(self, failures: Sequence[str]) -> None:
        self.failures = list(failures)
        count = len(self.failures)
        super().__init__(
            f"the dataset breaks {count} expectation{'s' if count != 1 else ''}, so nothing was fitted: "
            + "; ".join(self.failures)
        )


def checker(
    dataset: trainingjob.Dataset, namespace: str | None, api: Callable[[], registration.ModelVersions]
) -> Checker | None:
    """The check of `dataset`'s expectations (None when it declares none), reading baselines
    through `api` in `namespace` only if a drift expectation asks."""
    if dataset.expectations is None:
        return None
    return Checker(dataset.expectations, baseline_reader(api, namespace or ""))


def baseline_reader(api: Callable[[], registration.ModelVersions], namespace: str) -> BaselineOf:
    def baseline_of(name: str) -> modelversion.Baseline | None:
        try:
            found = api().get(namespace, name)
            return modelversion.ModelVersion.model_validate(found).spec.baseline
        # Whatever stops the read (no such version, no API, a malformed object) fails the expectation.
        except Exception as error:
            raise LookupError(f"modelversion {namespace}/{name}: {error}") from None

    return baseline_of


@dataclass(frozen=True)
class Checker:
    """The expectations of one dataset and where to read a ModelVersion's baseline."""

    expectations: trainingjob.DatasetExpectations
    baseline_of: BaselineOf

    def __call__(self, table: pa.Table) -> None:
        failures = check(table, self.expectations, self.baseline_of)
        if failures:
            raise DatasetRejected(failures)


def check(table: pa.Table, expected: trainingjob.DatasetExpectations, baseline_of: BaselineOf) -> list[str]:
    """Every expectation `table` breaks, each as `<field>: <what is wrong>`; empty when it meets them all."""
    failures: list[str] = []
    if expected.min_rows is not None and table.num_rows < expected.min_rows:
        failures.append(f"minRows: the dataset has {table.num_rows} rows, fewer than {expected.min_rows}")
    for column in expected.columns:
        failures += _column_failures(table, column)
    if expected.drift is not None:
        failures += _drift_failures(table, expected.drift, baseline_of)
    return failures


def _column_failures(table: pa.Table, expected: trainingjob.ColumnExpectation) -> list[str]:
    where = f"columns[{expected.name}]"
    if expected.name not in table.column_names:
        return [f"{where}: required, but the dataset has no such column (it has {', '.join(table.column_names)})"]
    column = table.column(expected.name)
    failures = []
    if expected.type is not None and not _TYPE_TESTS[expected.type](column.type):
        failures.append(f"{where}.type: the column is {column.type}, not {expected.type.value}")
    failures += _null_failures(where, column, expected)
    failures += _range_failures(where, column, expected)
    return failures


def _empty(column: pa.ChunkedArray) -> int:
    nulls = int(column.null_count)
    if pa.types.is_floating(column.type):
        nulls += int(pc.sum(pc.is_nan(column)).as_py() or 0)
    return nulls


def _null_failures(where: str, column: pa.ChunkedArray, expected: trainingjob.ColumnExpectation) -> list[str]:
    empty = _empty(column)
    failures = []
    if expected.max_nulls is not None and empty > expected.max_nulls:
        failures.append(f"{where}.maxNulls: {empty} empty values, more than {expected.max_nulls}")
    if expected.max_null_fraction is not None and len(column) and empty / len(column) > expected.max_null_fraction:
        share = empty / len(column)
        failures.append(
            f"{where}.maxNullFraction: {share:.3g} of the values are empty, more than {expected.max_null_fraction:g}"
        )
    return failures


def _range_failures(where: str, column: pa.ChunkedArray, expected: trainingjob.ColumnExpectation) -> list[str]:
    if expected.min is None and expected.max is None:
        return []
    if not _TYPE_TESTS[Type.NUMBER](column.type):
        return [f"{where}: min and max apply to numeric columns; this one is {column.type}"]
    values = pc.drop_null(column)
    if pa.types.is_floating(column.type):
        values = pc.filter(values, pc.invert(pc.is_nan(values)))
    if len(values) == 0:
        return []
    lowest, highest = (float(value.as_py()) for value in pc.min_max(values).values())
    failures = []
    if expected.min is not None and lowest < expected.min:
        failures.append(f"{where}.min: values as low as {lowest:g}, below {expected.min:g}")
    if expected.max is not None and highest > expected.max:
        failures.append(f"{where}.max: values as high as {highest:g}, above {expected.max:g}")
    return failures


def _drift_failures(table: pa.Table, expected: trainingjob.DriftExpectation, baseline_of: BaselineOf) -> list[str]:
    where = f"drift (against modelversion {expected.model_version})"
    try:
        baseline = baseline_of(expected.model_version)
    except LookupError as error:
        return [f"{where}: cannot read its baseline: {error}"]
    if baseline is None or not baseline.features:
        return [f"{where}: the ModelVersion has no baseline to compare with"]
    failures = []
    for feature in baseline.features:
        if feature.name not in table.column_names:
            failures.append(f"{where}: baseline feature {feature.name!r} is not a column of the dataset")
            continue
        column = table.column(feature.name)
        if not _TYPE_TESTS[Type.NUMBER](column.type):
            failures.append(f"{where}: baseline feature {feature.name!r} is {column.type} in the dataset, not numeric")
            continue
        counts = binned(column.cast(pa.float64()).to_numpy(zero_copy_only=False), feature.bins)
        if not counts.sum():
            failures.append(f"{where}: feature {feature.name!r} has no values to compare")
            continue
        value = statistics.psi(feature.counts, counts.tolist())
        if value > expected.max_psi:
            failures.append(
                f"{where}.maxPSI: feature {feature.name} has PSI {value:.3g}, more than {expected.max_psi:g}"
            )
    return failures


def binned(values: np.ndarray[Any, Any], edges: Sequence[float]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Counts of the finite `values` in the bins between `edges`, binned as the baseline was
    (`baseline.counts_in`: as kiln-server's buckets count live values)."""
    finite = values[np.isfinite(values)]
    return baseline.counts_in(finite, np.asarray(edges, dtype=np.float64))
