"""Evaluating the model: scikit-learn's predict_proba against the threshold grid.

``python -m bench.evaluators``: for the default forest, a 100-tree forest and the
decision tree, prints µs per call for 1 row and for 1000 rows (best of several
runs), the grid's size and build time, and the ratio sklearn/grid; and checks the
two answers are identical.
"""

from __future__ import annotations

import timeit

import numpy as np

from training.settings import TrainingSettings
from training.store.grid import ThresholdGrid
from training.train import train

MODELS = {
    "rf50 (default)": TrainingSettings(),
    "rf100": TrainingSettings(n_estimators=100),
    "dt": TrainingSettings(algorithm="decision_tree"),
}


def microseconds(call: object, rows: np.ndarray, number: int) -> float:
    timer = timeit.Timer(lambda: call(rows))  # type: ignore[operator]
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def main() -> None:
    print(
        f"{'model':<16} {'rows':>5} {'sklearn µs':>11} {'grid µs':>9} "
        f"{'sklearn/grid':>12}   grid cells, build ms, MB"
    )
    rng = np.random.default_rng(0)
    for name, settings in MODELS.items():
        estimator = train(settings).estimator
        built = timeit.default_timer()
        grid = ThresholdGrid.compile(estimator)
        build_ms = (timeit.default_timer() - built) * 1000
        for rows in (1, 1000):
            batch = rng.uniform(0, 8, size=(rows, 4))
            if not np.array_equal(
                grid.predict_proba(batch), estimator.predict_proba(batch)
            ):
                raise SystemExit(f"{name}: the grid disagrees with scikit-learn")
            number = 20 if rows == 1 else 5
            base = microseconds(estimator.predict_proba, batch, number)
            ours = microseconds(grid.predict_proba, batch, number * 50)
            print(
                f"{name:<16} {rows:>5} {base:>11,.0f} {ours:>9,.1f} "
                f"{base / ours:>11,.0f}x   {grid.cells:,}, {build_ms:.0f}, "
                f"{grid.table.nbytes / 1e6:.1f}"
            )


if __name__ == "__main__":
    main()
