"""A published model checked and made ready to answer requests.

Nothing reaches the request path without passing ``prepare``: the store has already
verified the files' digests and loaded them safely; here the model itself must prove
it is an Iris classifier before it may serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from training.data import CLASS_NAMES, FEATURE_NAMES
from training.store import ModelMetadata, PublishedModel

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

    @property
    def version(self) -> str:
        return self.metadata.version

    def predict(self, rows: NDArray[np.float64]) -> Prediction:
        probabilities: NDArray[np.float64] = self.estimator.predict_proba(rows)
        # argmax picks the first of equal maxima, as scikit-learn's predict does.
        return Prediction(
            labels=probabilities.argmax(axis=1), probabilities=probabilities
        )


def prepare(published: PublishedModel) -> ServingModel:
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
    model = ServingModel(metadata=metadata, estimator=estimator)
    try:
        canary = model.predict(SETOSA_CANARY)
    # A file can hold any structure skops trusts; whatever breaks, it cannot serve.
    except Exception as error:
        raise ModelRejected(f"fails on a textbook setosa: {error}") from error
    if CLASS_NAMES[int(canary.labels[0])] != "setosa":
        raise ModelRejected(
            f"predicts {CLASS_NAMES[int(canary.labels[0])]} for a textbook setosa"
        )
    return model
