"""PSI and the KS distance on binned distributions, checked against the same statistics computed
independently here with numpy and scipy, and the live counts read back from kiln-server's
cumulative buckets as Prometheus returns them (in no particular order)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from kiln.monitoring import statistics

EDGES = np.linspace(-3.0, 3.0, 11)


def numpy_psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(expected / expected.sum(), statistics.EMPTY_SHARE, None)
    a = np.clip(actual / actual.sum(), statistics.EMPTY_SHARE, None)
    return float(np.sum((a - e) * np.log(a / e)))


def scipy_ks(expected: np.ndarray, actual: np.ndarray) -> float:
    """KS of the two samples each value replaced by its bin: the binned distributions' KS statistic."""
    bins = np.arange(len(expected))
    return float(stats.ks_2samp(np.repeat(bins, expected), np.repeat(bins, actual)).statistic)


def counts(sample: np.ndarray) -> np.ndarray:
    return np.histogram(np.clip(sample, EDGES[0], EDGES[-1]), bins=EDGES)[0]


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5, 1.0, 2.5])
def test_psi_and_ks_match_numpy_and_scipy_on_shifted_normals(shift: float) -> None:
    generator = np.random.default_rng(7)
    training = counts(generator.normal(0, 1, 5000))
    live = counts(generator.normal(shift, 1, 800))
    assert statistics.psi(training.tolist(), live.tolist()) == pytest.approx(numpy_psi(training, live), rel=1e-12)
    assert statistics.ks_distance(training.tolist(), live.tolist()) == pytest.approx(scipy_ks(training, live))


def test_same_shares_have_no_drift_and_a_larger_shift_more() -> None:
    base = [10, 20, 40, 20, 10]
    assert statistics.psi(base, [n * 3 for n in base]) == pytest.approx(0.0)
    assert statistics.ks_distance(base, [n * 3 for n in base]) == pytest.approx(0.0)
    small, large = [8, 18, 40, 22, 12], [2, 8, 30, 35, 25]
    assert 0 < statistics.psi(base, small) < statistics.psi(base, large)
    assert 0 < statistics.ks_distance(base, small) < statistics.ks_distance(base, large)


def test_an_empty_bin_on_one_side_gives_a_large_finite_psi() -> None:
    value = statistics.psi([50, 50, 0], [0, 50, 50])
    assert value == pytest.approx(numpy_psi(np.array([50, 50, 0]), np.array([0, 50, 50])))
    assert 5 < value < 20


def test_distributions_of_different_bins_or_none_are_refused() -> None:
    with pytest.raises(ValueError, match="3 and 2 bins"):
        statistics.psi([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least one count"):
        statistics.ks_distance([1, 2], [0, 0])


def test_live_counts_from_unordered_cumulative_buckets_are_the_clipped_histogram() -> None:
    generator = np.random.default_rng(11)
    values = generator.normal(0.8, 1.5, 2000)  # a good share beyond both ends of the edges
    # What kiln-server does: each value into the bucket of the first edge >= it, then cumulative.
    buckets = np.bincount(np.searchsorted(EDGES, values, side="left"), minlength=len(EDGES) + 1)
    cumulative = np.cumsum(buckets).astype(float)
    shuffled = generator.permutation(cumulative).tolist()  # Prometheus answers the series in no order
    live = statistics.live_counts(sorted(shuffled), len(EDGES) - 1)
    assert live == counts(values).tolist()
    assert sum(live) == len(values)


def test_live_counts_need_one_bucket_per_edge_and_inf() -> None:
    with pytest.raises(ValueError, match="expected 12 cumulative buckets"):
        statistics.live_counts([1.0, 2.0, 3.0], 10)
