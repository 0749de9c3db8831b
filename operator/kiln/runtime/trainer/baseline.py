"""The training data's feature distributions, which drift detection compares live traffic with.

One histogram per feature over the training rows: `BINS` equal-width bins (`numpy.histogram`)
between the feature's finite minimum and maximum; NaN and infinite values are not counted, and a
feature with none finite has no histogram. The API bounds a baseline to `MAX_FEATURES` features
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


def compute(features: npt.NDArray[np.float64], names: list[str], bins: int = BINS) -> modelversion.Baseline:
    """Histograms of the first MAX_FEATURES columns of `features` (rows x columns)."""
    bins = max(1, min(bins, MAX_BINS))
    histograms = []
    for index, name in enumerate(names[:MAX_FEATURES]):
        column = features[:, index]
        finite = column[np.isfinite(column)]
        if finite.size == 0:
            continue
        counts, edges = np.histogram(finite, bins=bins)
        histograms.append(
            modelversion.FeatureBaseline(
                name=name[:MAX_NAME] or f"feature-{index}",
                bins=[float(edge) for edge in edges],
                counts=[int(count) for count in counts],
            )
        )
    return modelversion.Baseline(features=histograms, sample_size=int(features.shape[0]))
