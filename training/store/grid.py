"""A tree or forest compiled into a lookup table over the grid of its split thresholds.

scikit-learn sends a row left at a node when ``float32(x[f]) <= threshold``. Per
feature, the sorted thresholds of every tree cut the axis into bins, and inside one
cell of the grid of bins every tree reaches the same leaf: the model's output is
constant there. So the model's own ``predict_proba`` is run once, at training, on
one point per cell, and a prediction becomes one binary search per feature and one
table read. Because the table holds scikit-learn's own results, predictions and
probabilities match it bit for bit, whatever its version sums trees in.

The grid has ``prod(thresholds per feature + 1)`` cells, so it suits models with
few features: ``max_cells`` refuses bigger grids, and scikit-learn serves those.

Training compiles the grid (``ThresholdGrid.compile``) and publishes it beside the
model as ``to_bytes`` writes it; the predictor reads it with ``from_bytes``, with
NumPy alone. This module imports nothing but NumPy.
"""

from __future__ import annotations

import copy
import io
import zipfile
from bisect import bisect_left
from math import prod
from operator import mul
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAX_CELLS = 2_000_000
_CHUNK = 1 << 16
# Up to this many rows, cells are found with Python's bisect instead of NumPy.
_FEW_ROWS = 8


class GridUnavailable(Exception):  # noqa: N818 - a model without a grid is no error
    """The estimator cannot be compiled into a grid; scikit-learn serves it."""


class GridTooLarge(GridUnavailable):
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
    """``predict_proba`` of a fitted tree or forest classifier, exact and fast.

    ``bounds[f]`` are feature f's bin edges as float64 (see ``_float32_bound``), and
    ``table`` holds one row of class probabilities per cell, row-major over the
    features.
    """

    def __init__(
        self, bounds: list[NDArray[np.float64]], table: NDArray[np.float64]
    ) -> None:
        self.bounds = bounds
        self._bound_lists = [column.tolist() for column in bounds]
        self.shape = tuple(len(column) + 1 for column in bounds)
        # How far apart in the table two cells one bin apart on each feature are.
        self._strides = [prod(self.shape[f + 1 :]) for f in range(len(self.shape))]
        self.cells = int(np.prod(self.shape, dtype=np.int64))
        self.table = table

    @property
    def features(self) -> int:
        return len(self.bounds)

    @property
    def classes(self) -> int:
        return int(self.table.shape[1])

    @classmethod
    def compile(cls, estimator: Any, max_cells: int = MAX_CELLS) -> ThresholdGrid:
        """Run the estimator's own ``predict_proba`` once per cell of its grid."""
        if getattr(estimator, "n_jobs", None) not in (None, 1):
            # A forest predicting on several threads adds its trees in thread order.
            estimator = copy.copy(estimator)
            estimator.n_jobs = None
        trees = getattr(estimator, "estimators_", [estimator])
        if not all(hasattr(tree, "tree_") for tree in trees) or not hasattr(
            estimator, "predict_proba"
        ):
            raise GridUnavailable(f"a {type(estimator).__name__} is not a tree model")
        features = int(estimator.n_features_in_)
        thresholds = [
            np.unique(
                np.concatenate(
                    [tree.tree_.threshold[tree.tree_.feature == f] for tree in trees]
                )
            )
            for f in range(features)
        ]
        points = [_bin_points(column) for column in thresholds]
        shape = tuple(len(column) for column in points)
        cells = int(np.prod(shape, dtype=np.int64))
        if cells > max_cells:
            raise GridTooLarge(f"{cells} cells is more than {max_cells}")
        table = np.empty((cells, len(estimator.classes_)), dtype=np.float64)
        for start in range(0, cells, _CHUNK):
            stop = min(start + _CHUNK, cells)
            index = np.unravel_index(np.arange(start, stop), shape)
            grid_points = np.stack(
                [column[i] for column, i in zip(points, index, strict=True)], axis=1
            )
            table[start : start + len(grid_points)] = estimator.predict_proba(
                grid_points
            )
        bounds = [
            np.array([_float32_bound(float(t)) for t in column], dtype=np.float64)
            for column in thresholds
        ]
        return cls(bounds, table)

    def to_bytes(self) -> bytes:
        """The grid as an ``.npz`` of plain arrays: nothing in it is ever unpickled."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            bounds=np.concatenate([*self.bounds, np.empty(0)]),
            sizes=np.array([len(column) for column in self.bounds], dtype=np.int64),
            table=self.table,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ThresholdGrid:
        """Read ``to_bytes``'s output, or raise ValueError saying what is wrong."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                bounds, sizes, table = (
                    arrays[name] for name in ("bounds", "sizes", "table")
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ValueError(f"not a threshold grid: {error}") from error
        if (
            bounds.dtype != np.float64
            or bounds.ndim != 1
            or sizes.dtype != np.int64
            or sizes.ndim != 1
            or len(sizes) == 0
            or (sizes < 0).any()
            or int(sizes.sum()) != len(bounds)
        ):
            raise ValueError("not a threshold grid: malformed bin edges")
        columns = np.split(bounds, np.cumsum(sizes)[:-1])
        if (
            any((np.diff(column) < 0).any() for column in columns)
            or not np.isfinite(bounds).all()
        ):
            raise ValueError("not a threshold grid: bin edges not finite and sorted")
        cells = int(np.prod(sizes + 1, dtype=np.int64))
        if table.dtype != np.float64 or table.ndim != 2 or table.shape[0] != cells:
            raise ValueError(
                f"not a threshold grid: table of shape {table.shape}, "
                f"expected {cells} float64 rows"
            )
        return cls(list(columns), table)

    def predict_proba(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        """The same as the estimator's ``predict_proba``, for finite rows."""
        probabilities: NDArray[np.float64] = self.table.take(self._cells(rows), axis=0)
        return probabilities

    def _cells(self, rows: NDArray[np.float64]) -> NDArray[np.intp] | list[int]:
        """The flat table index of each row's cell (row-major over the features)."""
        if len(rows) <= _FEW_ROWS:
            # A bisect on a list costs far less than a NumPy call for one value; map
            # is used, not zip(strict=...), whose keyword alone costs a third more.
            edges, strides = self._bound_lists, self._strides
            cells = []
            for row in rows.tolist():
                if len(row) != len(edges):
                    raise ValueError(
                        f"a row of {len(row)} values for {len(edges)} features"
                    )
                cells.append(sum(map(mul, map(bisect_left, edges, row), strides)))
            return cells
        index = np.zeros(len(rows), dtype=np.intp)
        for column, (bounds, size) in enumerate(
            zip(self.bounds, self.shape, strict=True)
        ):
            index *= size
            index += np.searchsorted(bounds, rows[:, column], side="left")
        return index
