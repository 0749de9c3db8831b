"""Gate evaluation: absolute bounds and champion/challenger, one result per bound."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.api import common
from kiln.registry import gates

CHAMPION = gates.Champion(name="iris-1-0-0", version="1.0.0", metrics={"accuracy": 0.95, "latency_p99_ms": 10.0})


def gate(**fields: Any) -> common.Gate:
    return common.Gate.model_validate(fields)


@pytest.mark.parametrize(
    ("spec", "metrics", "champion", "outcome"),
    [
        ({"metric": "accuracy", "min": 0.9}, {"accuracy": 0.91}, None, (">= 0.9", True, "")),
        ({"metric": "accuracy", "min": 0.9}, {"accuracy": 0.9}, None, (">= 0.9", True, "")),
        ({"metric": "accuracy", "min": 0.9}, {"accuracy": 0.89}, None, (">= 0.9", False, "accuracy 0.89 < 0.9")),
        ({"metric": "latency_p99_ms", "max": 20.0}, {"latency_p99_ms": 20.0}, None, ("<= 20", True, "")),
        (
            {"metric": "latency_p99_ms", "max": 20.0},
            {"latency_p99_ms": 21.5},
            None,
            ("<= 20", False, "latency_p99_ms 21.5 > 20"),
        ),
        (
            {"metric": "accuracy", "min": 0.9},
            {},
            None,
            (">= 0.9", False, "metric accuracy is missing from spec.metrics"),
        ),
        (
            {"metric": "accuracy", "noWorseThanProductionBy": 0.01},
            {"accuracy": 0.94},
            CHAMPION,
            (">= 0.94 (Production 1.0.0 has 0.95, allowed slack 0.01)", True, ""),
        ),
        (
            {"metric": "accuracy", "noWorseThanProductionBy": 0.01},
            {"accuracy": 0.93},
            CHAMPION,
            (
                ">= 0.94 (Production 1.0.0 has 0.95, allowed slack 0.01)",
                False,
                "accuracy 0.93 < 0.94: worse than Production 1.0.0 by more than 0.01",
            ),
        ),
        (
            {"metric": "latency_p99_ms", "noWorseThanProductionBy": 2.0, "higherIsBetter": False},
            {"latency_p99_ms": 12.5},
            CHAMPION,
            (
                "<= 12 (Production 1.0.0 has 10, allowed slack 2)",
                False,
                "latency_p99_ms 12.5 > 12: worse than Production 1.0.0 by more than 2",
            ),
        ),
        (
            {"metric": "accuracy", "noWorseThanProductionBy": 0.01},
            {"accuracy": 0.5},
            None,
            (
                "no worse than Production by 0.01 (higher is better)",
                True,
                "the model has no Production version yet, so there is nothing to compare with",
            ),
        ),
        (
            {"metric": "f1", "noWorseThanProductionBy": 0.01},
            {"f1": 0.5},
            CHAMPION,
            (
                "no worse than Production 1.0.0 by 0.01",
                True,
                "Production version 1.0.0 (iris-1-0-0) has no f1 to compare with",
            ),
        ),
        (
            {"metric": "f1", "noWorseThanProductionBy": 0.01},
            {},
            CHAMPION,
            ("no worse than Production 1.0.0 by 0.01", False, "metric f1 is missing from spec.metrics"),
        ),
    ],
)
def test_one_bound(
    spec: dict[str, Any], metrics: dict[str, float], champion: gates.Champion | None, outcome: tuple[str, bool, str]
) -> None:
    """outcome: (expected, passed, message) of the one result."""
    [result] = gates.evaluate([gate(**spec)], metrics, champion)
    assert (result.expected, result.passed, result.message) == outcome
    assert result.actual == metrics.get(spec["metric"])


def test_every_bound_of_a_gate_is_judged_on_its_own_in_order() -> None:
    both = gate(metric="accuracy", min=0.9, max=0.99, noWorseThanProductionBy=0.01)
    results = gates.evaluate(
        [both, gate(metric="latency_p99_ms", max=5.0)], {"accuracy": 0.995, "latency_p99_ms": 4.0}, CHAMPION
    )
    assert [(r.metric, r.expected.split(" (")[0], r.passed) for r in results] == [
        ("accuracy", ">= 0.9", True),
        ("accuracy", "<= 0.99", False),
        ("accuracy", ">= 0.94", True),
        ("latency_p99_ms", "<= 5", True),
    ]
