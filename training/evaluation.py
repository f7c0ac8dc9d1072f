"""How well a classifier does on rows it was not trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)
from sklearn.model_selection import StratifiedKFold, cross_val_score

from training.data import DataSplit
from training.store.layout import Metrics


def held_out_accuracy(estimator: Any, split: DataSplit) -> float:
    return float(accuracy_score(split.y_test, estimator.predict(split.x_test)))


def fit_and_evaluate(
    estimator: ClassifierMixin, split: DataSplit, cv_folds: int, random_state: int
) -> tuple[Metrics, tuple[float, ...]]:
    """Cross-validate on the training part, fit on all of it, score the test part.

    Returns the metrics and each fold's accuracy in fold order, which MLflow records
    and the published metadata summarises as a mean and spread.
    """
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=random_state)
    cv_scores = cross_val_score(
        clone(estimator), split.x_train, split.y_train, cv=folds
    )
    estimator.fit(split.x_train, split.y_train)
    predicted = estimator.predict(split.x_test)
    precision, recall, f1, _ = precision_recall_fscore_support(
        split.y_test, predicted, average="macro", zero_division=0
    )
    labels = np.arange(len(split.dataset.classes))
    metrics = Metrics(
        accuracy=float(accuracy_score(split.y_test, predicted)),
        precision_macro=float(precision),
        recall_macro=float(recall),
        f1_macro=float(f1),
        confusion_matrix=confusion_matrix(
            split.y_test, predicted, labels=labels
        ).tolist(),
        cv_accuracy_mean=float(cv_scores.mean()),
        cv_accuracy_std=float(cv_scores.std()),
        cv_folds=cv_folds,
        train_rows=len(split.y_train),
        test_rows=len(split.y_test),
    )
    return metrics, tuple(float(score) for score in cv_scores)
