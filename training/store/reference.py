"""The training distribution a model is published with: drift's reference.

Training describes each feature here and the predictor scores live rows against it
with the same bins, so the two sides count alike. NumPy only: the predictor imports
this through the contract.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from training.store.layout import FeatureStats

# Deciles: the ten bins of the population stability index.
PSI_QUANTILES: Final = np.linspace(0.1, 0.9, 9)
# The training CDF is recorded at every distinct training value (the KS statistic is
# then exact) or, for more distinct values than this, at as many quantiles.
CDF_POINTS: Final = 201


def bin_counts(
    edges: NDArray[np.float64], values: NDArray[np.float64]
) -> NDArray[np.int64]:
    """Rows in each bin (-inf, e0], (e0, e1], ..., (e_last, inf) of a column."""
    index = np.searchsorted(edges, values, side="left")
    return np.bincount(index, minlength=len(edges) + 1)


def describe_feature(column: NDArray[np.float64]) -> FeatureStats:
    """A feature's summary and the reference its drift scores need."""
    # Edges are training values ("inverted_cdf"), below the maximum, so no bin is
    # empty in training and the PSI's logarithm stays finite.
    deciles = np.quantile(column, PSI_QUANTILES, method="inverted_cdf")
    edges = np.unique(deciles[deciles < column.max()])
    points = np.unique(column)
    if len(points) > CDF_POINTS:
        quantiles = np.linspace(0.0, 1.0, CDF_POINTS)
        points = np.unique(np.quantile(column, quantiles, method="inverted_cdf"))
    ordered = np.sort(column)
    below = np.searchsorted(ordered, points, side="right")
    return FeatureStats(
        min=float(column.min()),
        max=float(column.max()),
        mean=float(column.mean()),
        std=float(column.std()),
        bin_edges=edges.tolist(),
        bin_fractions=(bin_counts(edges, column) / len(column)).tolist(),
        cdf_values=points.tolist(),
        cdf_fractions=(below / len(column)).tolist(),
    )


def class_priors(labels: NDArray[np.int64], classes: int) -> list[float]:
    """Each class's share of the training rows, in class order."""
    counts = np.bincount(labels, minlength=classes)
    return [float(share) for share in counts / counts.sum()]
