"""The training data's feature distributions, which drift detection compares live traffic with.

One histogram per feature over the training rows: `BINS` equal-width bins between the feature's
finite minimum and maximum; NaN and infinite values are not counted, and a feature with none finite
has no histogram. A bin holds the values above its lower edge up to and including its upper edge
(the first also its lower edge), as kiln-server's `le` buckets count live values, so that the same
data gives the same counts on both sides and drift starts at zero (numpy.histogram would put a
value on an edge one bin higher). The API bounds a baseline to `MAX_FEATURES` features
and `MAX_BINS` bins, so a wider dataset gets histograms of its first `MAX_FEATURES` features only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kiln.api import modelversion

BINS = 10
MAX_BINS = 256
MAX_FEATURES = 1024
MAX_NAME = 256


def counts_in(values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """How many of `values` fall in each bin between `edges`, as kiln-server counts them: up to and
    including each upper edge; values below the first edge count in the first bin and values above
    the last in the last."""
    upper_inclusive = np.clip(np.searchsorted(edges, values, side="left") - 1, 0, len(edges) - 2)
    return np.bincount(upper_inclusive, minlength=len(edges) - 1)


def compute(features: npt.NDArray[np.float64], names: list[str], bins: int = BINS) -> modelversion.Baseline:
    """Histograms of the first MAX_FEATURES columns of `features` (rows x columns)."""
    bins = max(1, min(bins, MAX_BINS))
    histograms = []
    for index, name in enumerate(names[:MAX_FEATURES]):
        column = features[:, index]
        finite = column[np.isfinite(column)]
        if finite.size == 0:
            continue
        edges = np.histogram_bin_edges(finite, bins=bins)
        counts = counts_in(finite, edges)
        histograms.append(
            modelversion.FeatureBaseline(
                name=name[:MAX_NAME] or f"feature-{index}",
                bins=[float(edge) for edge in edges],
                counts=[int(count) for count in counts],
            )
        )
    return modelversion.Baseline(features=histograms, sample_size=int(features.shape[0]))
