"""Quality gates: absolute bounds on a version's metrics and champion/challenger comparisons.

Every bound a gate sets is judged on its own and gives one GateResult, so a failure names the
exact rule that failed (`accuracy 0.85 < 0.9`). Comparisons allow a relative slack of 1e-9, so a
metric that equals its bound up to float rounding (0.95 - 0.01 is 0.9399999999999999) passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kiln.api import common
from kiln.api.modelversion import GateResult

_RELATIVE_SLACK = 1e-9


@dataclass(frozen=True)
class Champion:
    """The model's version in Production, which a challenger is compared with."""

    name: str
    version: str
    metrics: Mapping[str, float]


def _at_least(actual: float, bound: float) -> bool:
    return actual >= bound or math.isclose(actual, bound, rel_tol=_RELATIVE_SLACK)


def _at_most(actual: float, bound: float) -> bool:
    return actual <= bound or math.isclose(actual, bound, rel_tol=_RELATIVE_SLACK)


def _missing(metric: str, expected: str) -> GateResult:
    return GateResult(
        metric=metric, expected=expected, passed=False, message=f"metric {metric} is missing from spec.metrics"
    )


def _bound(metric: str, actual: float | None, bound: float, at_least: bool) -> GateResult:
    expected = f"{'>=' if at_least else '<='} {bound:g}"
    if actual is None:
        return _missing(metric, expected)
    passed = _at_least(actual, bound) if at_least else _at_most(actual, bound)
    failed = f"{metric} {actual:g} {'<' if at_least else '>'} {bound:g}"
    return GateResult(metric=metric, expected=expected, actual=actual, passed=passed, message="" if passed else failed)


def _against_champion(gate: common.Gate, actual: float | None, champion: Champion | None) -> GateResult:
    slack = gate.no_worse_than_production_by
    assert slack is not None
    better = "higher" if gate.higher_is_better else "lower"
    if champion is None:
        expected = f"no worse than Production by {slack:g} ({better} is better)"
        if actual is None:
            return _missing(gate.metric, expected)
        message = "the model has no Production version yet, so there is nothing to compare with"
        return GateResult(metric=gate.metric, expected=expected, actual=actual, passed=True, message=message)
    baseline = champion.metrics.get(gate.metric)
    if baseline is None:
        expected = f"no worse than Production {champion.version} by {slack:g}"
        if actual is None:
            return _missing(gate.metric, expected)
        message = f"Production version {champion.version} ({champion.name}) has no {gate.metric} to compare with"
        return GateResult(metric=gate.metric, expected=expected, actual=actual, passed=True, message=message)
    bound = baseline - slack if gate.higher_is_better else baseline + slack
    result = _bound(gate.metric, actual, bound, at_least=gate.higher_is_better)
    expected = f"{result.expected} (Production {champion.version} has {baseline:g}, allowed slack {slack:g})"
    message = f"{result.message}: worse than Production {champion.version} by more than {slack:g}"
    return result.model_copy(update={"expected": expected, "message": "" if result.passed else message})


def evaluate(gates: Sequence[common.Gate], metrics: Mapping[str, float], champion: Champion | None) -> list[GateResult]:
    """One result per bound of every gate, in the order the gates and their bounds are written."""
    results: list[GateResult] = []
    for gate in gates:
        actual = metrics.get(gate.metric)
        if gate.min is not None:
            results.append(_bound(gate.metric, actual, gate.min, at_least=True))
        if gate.max is not None:
            results.append(_bound(gate.metric, actual, gate.max, at_least=False))
        if gate.no_worse_than_production_by is not None:
            results.append(_against_champion(gate, actual, champion))
    return results
