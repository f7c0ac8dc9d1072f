"""A published model checked and made ready to answer requests.

Nothing reaches the request path without passing ``prepare``: the store has already
verified the files' digests and loaded them safely; here the model must match the
schema its metadata publishes and reproduce its golden rows bit for bit before it
may serve. Whatever model it is, it is served the same way: the compiled grid when
training published one, else scikit-learn's own ``predict_proba``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from predictor.inputs import RequestSchema
from training.store import ModelMetadata, PublishedModel

log = logging.getLogger(__name__)

Evaluator = Literal["grid", "sklearn"]
# Up to this many rows, a prediction's confidence is found in plain Python.
_FEW_ROWS = 8


class ModelRejected(Exception):  # noqa: N818 - the model is rejected, it is not an error
    """A published model that loads but is not fit to serve."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """The model's answer for a batch of rows."""

    labels: NDArray[np.int64]
    probabilities: NDArray[np.float64]

    @property
    def confidence(self) -> NDArray[np.float64]:
        """The probability of each row's predicted class."""
        if len(self.labels) <= _FEW_ROWS:
            # One NumPy call instead of a reduction, which costs more for one row.
            return np.array(list(map(max, self.probabilities.tolist())))
        highest: NDArray[np.float64] = self.probabilities.max(axis=1)
        return highest


@dataclass(frozen=True)
class ServingModel:
    metadata: ModelMetadata
    schema: RequestSchema
    # "grid" (the published ThresholdGrid) or "sklearn".
    evaluator: str
    predict_proba: Callable[[NDArray[np.float64]], NDArray[np.float64]]

    @property
    def version(self) -> str:
        return self.metadata.version

    def predict(self, rows: NDArray[np.float64]) -> Prediction:
        probabilities = self.predict_proba(rows)
        # argmax picks the first of equal maxima, as scikit-learn's predict does.
        return Prediction(probabilities.argmax(axis=1), probabilities)


def _sklearn_evaluator(
    estimator: Any, features: int, classes: int
) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """The estimator's own predict_proba, once it is known to fit the schema."""
    # skops has imported scikit-learn to load the estimator: this import is free.
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    servable = (RandomForestClassifier, DecisionTreeClassifier)
    if not isinstance(estimator, servable):
        expected = " or ".join(kind.__name__ for kind in servable)
        raise ModelRejected(
            f"holds a {type(estimator).__name__}, expected a {expected}"
        )
    if getattr(estimator, "n_features_in_", None) != features:
        raise ModelRejected(
            f"expects {getattr(estimator, 'n_features_in_', 'no')} features, "
            f"expected {features}"
        )
    ids = getattr(estimator, "classes_", np.array([])).tolist()
    if ids != list(range(classes)):
        raise ModelRejected(f"predicts classes {ids}, expected {list(range(classes))}")
    predict_proba: Callable[[NDArray[np.float64]], NDArray[np.float64]] = (
        estimator.predict_proba
    )
    return predict_proba


def prepare(published: PublishedModel, evaluator: Evaluator = "grid") -> ServingModel:
    """Check a loaded model against its schema and golden rows, or raise ModelRejected.

    The store loads the grid when there is one and the evaluator is "grid", else
    the scikit-learn estimator.
    """
    metadata = published.metadata
    features, classes = len(metadata.features), len(metadata.classes)
    grid = published.grid
    predict_proba: Callable[[NDArray[np.float64]], NDArray[np.float64]]
    if grid is not None and evaluator == "grid":
        if grid.features != features:
            raise ModelRejected(
                f"its grid expects {grid.features} features, expected {features}"
            )
        if grid.classes != classes:
            raise ModelRejected(
                f"its grid predicts {grid.classes} classes, expected {classes}"
            )
        name, predict_proba = "grid", grid.predict_proba
    else:
        name = "sklearn"
        predict_proba = _sklearn_evaluator(published.estimator, features, classes)
    golden = metadata.golden
    try:
        answers = predict_proba(np.array(golden.rows, dtype=np.float64))
    # A file can hold any structure skops trusts; whatever breaks, it cannot serve.
    except Exception as error:
        raise ModelRejected(
            f"fails to predict: {type(error).__name__}: {error}"
        ) from error
    expected = np.array(golden.probabilities, dtype=np.float64)
    if answers.shape != expected.shape or not np.array_equal(answers, expected):
        wrong = _first_mismatch(answers, expected)
        raise ModelRejected(
            f"does not reproduce golden row {wrong}: {golden.rows[wrong]} gave "
            f"{answers[wrong].tolist() if wrong < len(answers) else 'nothing'}, "
            f"training's scikit-learn {golden.probabilities[wrong]}"
        )
    log.info("evaluator=%s golden_rows=%d", name, len(golden.rows))
    return ServingModel(metadata, RequestSchema.of(metadata), name, predict_proba)


def _first_mismatch(answers: NDArray[np.float64], expected: NDArray[np.float64]) -> int:
    for index, row in enumerate(expected):
        if index >= len(answers) or not np.array_equal(answers[index], row):
            return index
    return 0
