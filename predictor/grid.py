"""A tree or forest compiled into a lookup table over the grid of its split thresholds.

scikit-learn sends a row left at a node when ``float32(x[f]) <= threshold``. Per
feature, the sorted thresholds of every tree cut the axis into bins, and inside one
cell of the grid of bins every tree reaches the same leaf: the model's output is
constant there. So at load time the model's own ``predict_proba`` is run once on
one point per cell, and a prediction becomes one binary search per feature and one
table read. Because the table holds scikit-learn's own results, predictions and
probabilities match it bit for bit, whatever its version sums trees in.

The grid has ``prod(thresholds per feature + 1)`` cells: tens of thousands for the
Iris forests, at most about 750 thousand for any Iris model (its features have at
most 43 distinct values). ``max_cells`` refuses bigger grids, and the caller falls
back to scikit-learn.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAX_CELLS = 2_000_000
_CHUNK = 1 << 16
# Up to this many rows, cells are found with Python's bisect instead of NumPy.
_FEW_ROWS = 8


class GridTooLarge(Exception):  # noqa: N818 - the grid is too large, it is not an error
    pass


def _float32_bound(threshold: float) -> float:
    """The largest float64 ``x`` for which ``float32(x) <= threshold``.

    Rounding to float32 is monotonic, so ``float32(x) <= threshold`` exactly when
    ``x <= bound``: rows are binned without casting them to float32.
    """
    below = np.float32(threshold)
    if float(below) > threshold:
        below = np.nextafter(below, np.float32(-np.inf))
    above = np.nextafter(below, np.float32(np.inf))
    # Halfway between two float32s, a float64 rounds to the even one; step off the
    # midpoint when that is the one above.
    midpoint = (float(below) + float(above)) / 2.0
    if float(np.float32(midpoint)) > float(below):
        return float(np.nextafter(midpoint, -np.inf))
    return midpoint


def _bin_points(thresholds: NDArray[np.float64]) -> NDArray[np.float64]:
    """One float32-exact value in each bin: ``(t[i-1], t[i]]``, and above the last."""
    points = [float(np.float32(_float32_bound(float(t)))) for t in thresholds]
    last = np.float32(points[-1]) if points else np.float32(0.0)
    points.append(float(np.nextafter(last, np.float32(np.inf))) if points else 0.0)
    return np.array(points)


class ThresholdGrid:
    """``predict_proba`` of a fitted tree or forest classifier, exact and fast."""

    def __init__(self, estimator: Any, max_cells: int = MAX_CELLS) -> None:
        if getattr(estimator, "n_jobs", None) not in (None, 1):
            # A forest predicting on several threads adds its trees in thread order.
            estimator = copy.copy(estimator)
            estimator.n_jobs = None
        trees = getattr(estimator, "estimators_", [estimator])
        features = int(estimator.n_features_in_)
        thresholds = [
            np.unique(
                np.concatenate(
                    [tree.tree_.threshold[tree.tree_.feature == f] for tree in trees]
                )
            )
            for f in range(features)
        ]
        self.bounds = [
            np.array([_float32_bound(float(t)) for t in column])
            for column in thresholds
        ]
        self._bound_lists = [column.tolist() for column in self.bounds]
        points = [_bin_points(column) for column in thresholds]
        self.shape = tuple(len(column) for column in points)
        self.cells = int(np.prod(self.shape, dtype=np.int64))
        if self.cells > max_cells:
            raise GridTooLarge(f"{self.cells} cells is more than {max_cells}")
        self.table = np.empty((self.cells, len(estimator.classes_)), dtype=np.float64)
        for start in range(0, self.cells, _CHUNK):
            index = np.unravel_index(
                np.arange(start, min(start + _CHUNK, self.cells)), self.shape
            )
            grid_points = np.stack(
                [column[i] for column, i in zip(points, index, strict=True)], axis=1
            )
            self.table[start : start + len(grid_points)] = estimator.predict_proba(
                grid_points
            )

    def predict_proba(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        """The same as the estimator's ``predict_proba``, for finite rows."""
        probabilities: NDArray[np.float64] = self.table.take(self._cells(rows), axis=0)
        return probabilities

    def _cells(self, rows: NDArray[np.float64]) -> NDArray[np.intp] | list[int]:
        """The flat table index of each row's cell (row-major over the features)."""
        if len(rows) <= _FEW_ROWS:
            # A bisect on a list costs far less than a NumPy call for one value.
            cells = []
            for row in rows.tolist():
                cell = 0
                for bounds, size, value in zip(
                    self._bound_lists, self.shape, row, strict=True
                ):
                    cell = cell * size + bisect_left(bounds, value)
                cells.append(cell)
            return cells
        index = np.zeros(len(rows), dtype=np.intp)
        for column, (bounds, size) in enumerate(
            zip(self.bounds, self.shape, strict=True)
        ):
            index *= size
            index += np.searchsorted(bounds, rows[:, column], side="left")
        return index
