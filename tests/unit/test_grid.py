"""The threshold grid answers exactly as scikit-learn does, bit for bit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from tests.api.models import WritesMarker
from training.data import load_split
from training.store.grid import GridTooLarge, GridUnavailable, ThresholdGrid

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

    # As published and read back: the file is the evaluator.
    grid = ThresholdGrid.from_bytes(ThresholdGrid.compile(estimator).to_bytes())
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
        ThresholdGrid.compile(estimator, max_cells=100)


def test_only_tree_models_compile() -> None:
    with pytest.raises(GridUnavailable, match="a dict is not a tree model"):
        ThresholdGrid.compile({"weights": [1, 2, 3]})


def npz(**arrays: object) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


GOOD = {
    "bounds": np.array([0.5, 1.5]),
    "sizes": np.array([1, 1]),
    "table": np.ones((4, 2)),
}


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({**GOOD, "sizes": np.array([1, 2])}, "malformed bin edges"),
        ({**GOOD, "sizes": np.array([1.0, 1.0])}, "malformed bin edges"),
        ({**GOOD, "bounds": np.array([0.5, np.nan])}, "not finite and sorted"),
        (
            {**GOOD, "bounds": np.array([1.5, 0.5]), "sizes": np.array([2, 0])},
            "not finite and sorted",
        ),
        ({**GOOD, "table": np.ones((5, 2))}, "table of shape (5, 2)"),
        ({**GOOD, "table": np.ones(4)}, "table of shape (4,)"),
        ({"bounds": GOOD["bounds"], "sizes": GOOD["sizes"]}, "table is not a file"),
    ],
)
def test_a_malformed_grid_file_is_refused(
    arrays: dict[str, object], problem: str
) -> None:
    assert ThresholdGrid.from_bytes(npz(**GOOD)).cells == 4
    with pytest.raises(ValueError, match="not a threshold grid") as refused:
        ThresholdGrid.from_bytes(npz(**arrays))
    assert problem in str(refused.value)


def test_a_grid_file_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = np.array([WritesMarker(marker)], dtype=object)

    with pytest.raises(ValueError, match="allow_pickle=False"):
        ThresholdGrid.from_bytes(npz(**{**GOOD, "table": hostile}))
    with pytest.raises(ValueError, match="not a threshold grid"):
        ThresholdGrid.from_bytes(b"PK\x03\x04 not a zip")
    assert not marker.exists()
