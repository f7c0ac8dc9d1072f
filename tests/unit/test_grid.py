"""The threshold grid answers exactly as scikit-learn does, bit for bit."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from predictor.grid import GridTooLarge, ThresholdGrid
from predictor.serving import compile_evaluator
from training.data import load_split

SETTINGS = {
    "default forest": RandomForestClassifier(
        n_estimators=50,
        max_depth=5,
        min_samples_split=10,
        min_samples_leaf=5,
        random_state=42,
    ),
    "100 trees": RandomForestClassifier(
        n_estimators=100,
        max_depth=5,
        min_samples_split=10,
        min_samples_leaf=5,
        random_state=42,
    ),
    "deep entropy forest": RandomForestClassifier(
        n_estimators=30, criterion="entropy", random_state=7
    ),
    "default tree": DecisionTreeClassifier(
        max_depth=5, min_samples_split=10, min_samples_leaf=5, random_state=42
    ),
    "unpruned tree": DecisionTreeClassifier(random_state=3),
    "stump": DecisionTreeClassifier(max_depth=1, random_state=0),
}


def edge_rows(estimator: object, rng: np.random.Generator) -> NDArray[np.float64]:
    """Rows made of split thresholds and their nearest neighbours, both precisions."""
    trees = getattr(estimator, "estimators_", [estimator])
    thresholds = np.unique(
        np.concatenate(
            [tree.tree_.threshold[tree.tree_.feature >= 0] for tree in trees]
        )
    )
    as_float32 = thresholds.astype(np.float32)
    values = np.concatenate(
        [
            thresholds,
            np.nextafter(thresholds, np.inf),
            np.nextafter(thresholds, -np.inf),
            as_float32.astype(np.float64),
            np.nextafter(as_float32, np.float32(np.inf)).astype(np.float64),
            np.nextafter(as_float32, np.float32(-np.inf)).astype(np.float64),
            [0.0, 5e-324, 1e-300, 100.0, 1e6, 3.4e38],
        ]
    )
    return rng.choice(values, size=(20_000, 4))


@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_grid_matches_scikit_learn_bit_for_bit(name: str) -> None:
    split = load_split(test_fraction=0.2, random_state=42)
    estimator = SETTINGS[name].fit(split.x_train, split.y_train)
    rng = np.random.default_rng(0)
    x = np.vstack([split.x_train, split.x_test])
    rows = np.vstack(
        [
            x,
            rng.uniform(0, 10, size=(20_000, 4)),
            np.round(rng.uniform(0, 8, size=(20_000, 4)), 1),
            edge_rows(estimator, rng),
        ]
    )

    grid = ThresholdGrid(estimator)
    expected = estimator.predict_proba(rows)
    actual = grid.predict_proba(rows)

    assert actual.dtype == expected.dtype
    assert np.array_equal(actual, expected)
    assert np.array_equal(actual.argmax(axis=1), estimator.predict(rows))
    # Small batches take the pure-Python path: the same answers, edge rows included.
    few = np.vstack([x, edge_rows(estimator, rng)[:3000]])
    expected_few = estimator.predict_proba(few)
    for start in range(0, len(few), 7):
        assert np.array_equal(
            grid.predict_proba(few[start : start + 7]), expected_few[start : start + 7]
        )


def test_a_grid_over_its_cell_limit_is_refused() -> None:
    split = load_split(test_fraction=0.2, random_state=42)
    estimator = SETTINGS["default forest"].fit(split.x_train, split.y_train)

    with pytest.raises(GridTooLarge, match="cells is more than 100"):
        ThresholdGrid(estimator, max_cells=100)


def test_compilation_falls_back_to_scikit_learn_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    split = load_split(test_fraction=0.2, random_state=42)
    estimator = SETTINGS["default forest"].fit(split.x_train, split.y_train)

    with caplog.at_level(logging.WARNING):
        name, predict_proba = compile_evaluator(estimator, "grid", max_cells=10)

    assert name == "sklearn"
    assert predict_proba == estimator.predict_proba
    assert "evaluator=sklearn reason=threshold grid too large" in caplog.text


def test_the_sklearn_setting_skips_compilation() -> None:
    split = load_split(test_fraction=0.2, random_state=42)
    estimator = SETTINGS["default tree"].fit(split.x_train, split.y_train)

    assert compile_evaluator(estimator, "sklearn")[0] == "sklearn"
    assert compile_evaluator(estimator, "grid")[0] == "grid"
