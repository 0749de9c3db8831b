"""Drift statistics on binned distributions: the population stability index and the
Kolmogorov-Smirnov distance, and live counts read from kiln-server's cumulative histograms.

Both statistics compare two histograms over the same bins. PSI sums (a - e) * ln(a / e) over the
bins' shares, with an empty bin's share raised to `EMPTY_SHARE` so that a bin only one side has
counts gives a large, finite term (Evidently does the same). The KS distance is the largest gap
between the two cumulative shares at the bin edges, which on binned data is the KS statistic of
the two samples rounded to the bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

EMPTY_SHARE = 0.0001
"""The share an empty bin counts as in PSI, so ln(a / e) stays finite."""


def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    if total <= 0:
        raise ValueError("a distribution needs at least one count")
    return [count / total for count in counts]


def _check_same_bins(expected: Sequence[float], actual: Sequence[float]) -> None:
    if len(expected) != len(actual):
        raise ValueError(f"the distributions have {len(expected)} and {len(actual)} bins; they must have the same")


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """The population stability index of `actual` counts against `expected` counts, bin by bin."""
    _check_same_bins(expected, actual)
    total = 0.0
    for expected_share, actual_share in zip(_shares(expected), _shares(actual), strict=True):
        e, a = max(expected_share, EMPTY_SHARE), max(actual_share, EMPTY_SHARE)
        total += (a - e) * math.log(a / e)
    return total


def ks_distance(expected: Sequence[float], actual: Sequence[float]) -> float:
    """The largest gap between the cumulative shares of `actual` and `expected` counts."""
    _check_same_bins(expected, actual)
    gap = cumulative_expected = cumulative_actual = 0.0
    for e, a in zip(_shares(expected), _shares(actual), strict=True):
        cumulative_expected += e
        cumulative_actual += a
        gap = max(gap, abs(cumulative_actual - cumulative_expected))
    return gap


def live_counts(cumulative: Sequence[float], bins: int) -> list[float]:
    """Counts in the baseline's `bins` bins from kiln-server's cumulative buckets, one per edge
    (`le`) and +Inf, in ascending order. A value at or below the first edge counts in the first
    bin and one above the last edge in the last, as clipping to the training range would: what
    lies beyond the range still moves the outermost shares, which is the drift to see."""
    if len(cumulative) != bins + 2:
        raise ValueError(f"expected {bins + 2} cumulative buckets ({bins + 1} edges and +Inf), got {len(cumulative)}")
    counts = [cumulative[index + 1] - cumulative[index] for index in range(bins)]
    counts[0] += cumulative[0]
    counts[-1] += cumulative[-1] - cumulative[-2]
    return [max(count, 0.0) for count in counts]
