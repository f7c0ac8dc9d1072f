"""The Iris data set that scikit-learn ships, split for training and evaluation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from training.store.layout import FeatureStats
from training.store.reference import describe_feature

# scikit-learn names the features "sepal length (cm)"; these are the names the
# predictor accepts in a request, so they are fixed here once.
FEATURE_NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASS_NAMES = ["setosa", "versicolor", "virginica"]


@dataclass(frozen=True)
class IrisSplit:
    x_train: NDArray[np.float64]
    x_test: NDArray[np.float64]
    y_train: NDArray[np.int64]
    y_test: NDArray[np.int64]
    dataset_sha256: str

    def feature_stats(self) -> dict[str, FeatureStats]:
        """Each feature's distribution in the training part."""
        return {
            name: describe_feature(column)
            for name, column in zip(FEATURE_NAMES, self.x_train.T, strict=True)
        }


def load_split(test_fraction: float, random_state: int) -> IrisSplit:
    """Load Iris (no network) and hold out a stratified test_fraction of it."""
    bunch = load_iris()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    if list(bunch.target_names) != CLASS_NAMES or x.shape[1] != len(FEATURE_NAMES):
        raise RuntimeError(f"unexpected Iris data set: classes {bunch.target_names}")
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=random_state
    )
    return IrisSplit(x_train, x_test, y_train, y_test, dataset_sha256=digest)
