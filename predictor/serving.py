"""A published model checked and made ready to answer requests.

Nothing reaches the request path without passing ``prepare``: the store has already
verified the files' digests and loaded them safely; here the model itself must prove
it is an Iris classifier before it may serve.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from predictor.grid import MAX_CELLS, GridTooLarge, ThresholdGrid
from training.data import CLASS_NAMES, FEATURE_NAMES
from training.store import ModelMetadata, PublishedModel

log = logging.getLogger(__name__)

Evaluator = Literal["grid", "sklearn"]

SERVABLE_TYPES = (RandomForestClassifier, DecisionTreeClassifier)
# A textbook setosa (the first row of the data set): any Iris model gets it right.
SETOSA_CANARY = np.array([[5.1, 3.5, 1.4, 0.2]])


class ModelRejected(Exception):  # noqa: N818 - the model is rejected, it is not an error
    """A published model that loads but is not fit to serve."""


@dataclass(frozen=True)
class Prediction:
    """The model's answer for a batch of rows."""

    labels: NDArray[np.int64]
    probabilities: NDArray[np.float64]

    @property
    def confidence(self) -> NDArray[np.float64]:
        highest: NDArray[np.float64] = self.probabilities.max(axis=1)
        return highest


@dataclass(frozen=True)
class ServingModel:
    metadata: ModelMetadata
    estimator: Any
    # "grid" (the estimator compiled into a ThresholdGrid) or "sklearn".
    evaluator: str
    predict_proba: Callable[[NDArray[np.float64]], NDArray[np.float64]]

    @property
    def version(self) -> str:
        return self.metadata.version

    def predict(self, rows: NDArray[np.float64]) -> Prediction:
        probabilities = self.predict_proba(rows)
        # argmax picks the first of equal maxima, as scikit-learn's predict does.
        return Prediction(
            labels=probabilities.argmax(axis=1), probabilities=probabilities
        )


def compile_evaluator(
    estimator: Any, evaluator: Evaluator, max_cells: int = MAX_CELLS
) -> tuple[str, Callable[[NDArray[np.float64]], NDArray[np.float64]]]:
    """The fastest exact way to evaluate the estimator that works, and its name.

    A grid that would be too large, or that disagrees with scikit-learn on a sample,
    falls back to scikit-learn's own predict_proba, with a log line.
    """
    if evaluator == "sklearn":
        return "sklearn", estimator.predict_proba
    try:
        grid = ThresholdGrid(estimator, max_cells)
    except GridTooLarge as error:
        log.warning("evaluator=sklearn reason=threshold grid too large: %s", error)
        return "sklearn", estimator.predict_proba
    sample = np.random.default_rng(0).uniform(0, 10, size=(256, len(FEATURE_NAMES)))
    if not np.array_equal(grid.predict_proba(sample), estimator.predict_proba(sample)):
        log.error("evaluator=sklearn reason=threshold grid disagrees with scikit-learn")
        return "sklearn", estimator.predict_proba
    log.info("evaluator=grid cells=%d", grid.cells)
    return "grid", grid.predict_proba


def prepare(published: PublishedModel, evaluator: Evaluator = "grid") -> ServingModel:
    """Check a loaded model is an Iris classifier, or raise ModelRejected saying why."""
    estimator, metadata = published.estimator, published.metadata
    if not isinstance(estimator, SERVABLE_TYPES):
        expected = " or ".join(kind.__name__ for kind in SERVABLE_TYPES)
        raise ModelRejected(
            f"holds a {type(estimator).__name__}, expected a {expected}"
        )
    if metadata.feature_names != FEATURE_NAMES:
        raise ModelRejected(
            f"metadata names features {metadata.feature_names}, "
            f"expected {FEATURE_NAMES}"
        )
    if metadata.class_names != CLASS_NAMES:
        raise ModelRejected(
            f"metadata names classes {metadata.class_names}, expected {CLASS_NAMES}"
        )
    if getattr(estimator, "n_features_in_", None) != len(FEATURE_NAMES):
        raise ModelRejected(
            f"expects {getattr(estimator, 'n_features_in_', 'no')} features, "
            f"expected {len(FEATURE_NAMES)}"
        )
    classes = getattr(estimator, "classes_", np.array([]))
    if classes.tolist() != list(range(len(CLASS_NAMES))):
        raise ModelRejected(
            f"predicts classes {classes.tolist()}, expected "
            f"{list(range(len(CLASS_NAMES)))}"
        )
    try:
        name, predict_proba = compile_evaluator(estimator, evaluator)
        model = ServingModel(metadata, estimator, name, predict_proba)
        canary = CLASS_NAMES[int(model.predict(SETOSA_CANARY).labels[0])]
    # A file can hold any structure skops trusts; whatever breaks, it cannot serve.
    except Exception as error:
        raise ModelRejected(
            f"fails to predict: {type(error).__name__}: {error}"
        ) from error
    if canary != "setosa":
        raise ModelRejected(f"predicts {canary} for a textbook setosa")
    return model
