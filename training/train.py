"""Fit and evaluate one classifier, and describe it in a model card."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from training.data import DataSplit, load_dataset, split_dataset
from training.estimator import build_estimator, hyperparameters
from training.evaluation import fit_and_evaluate
from training.settings import TrainingSettings
from training.store import ModelCard
from training.store.reference import class_priors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedModel:
    estimator: Any
    card: ModelCard
    split: DataSplit
    # Each cross-validation fold's accuracy, in fold order.
    cv_scores: tuple[float, ...]


def train(settings: TrainingSettings) -> TrainedModel:
    dataset = load_dataset(
        settings.data,
        settings.target,
        settings.max_data_rows,
        settings.max_data_columns,
    )
    split = split_dataset(
        dataset, settings.test_fraction, settings.split_seed, settings.cv_folds
    )
    log.info(
        "loaded source=%s rows=%d train=%d test=%d dataset_sha256=%s",
        dataset.source,
        len(split.y_train) + len(split.y_test),
        len(split.y_train),
        len(split.y_test),
        split.dataset_sha256,
    )
    parameters = hyperparameters(settings)
    log.info(
        "training algorithm=%s %s",
        settings.algorithm,
        " ".join(f"{name}={value}" for name, value in parameters.items()),
    )
    estimator = build_estimator(settings)
    metrics, cv_scores = fit_and_evaluate(
        estimator, split, settings.cv_folds, settings.random_state
    )
    log.info(
        "evaluated accuracy=%.4f f1_macro=%.4f cv_accuracy_mean=%.4f "
        "cv_accuracy_std=%.4f",
        metrics.accuracy,
        metrics.f1_macro,
        metrics.cv_accuracy_mean,
        metrics.cv_accuracy_std,
    )
    card = ModelCard(
        algorithm=settings.algorithm,
        hyperparameters=parameters,
        metrics=metrics,
        feature_names=dataset.features,
        class_names=[str(name) for name in dataset.classes],
        feature_stats=split.feature_stats(),
        class_priors=class_priors(split.y_train, len(dataset.classes)),
        random_state=settings.random_state,
        test_fraction=settings.test_fraction,
        dataset_sha256=split.dataset_sha256,
        evaluation_sha256=split.evaluation_sha256,
        features=split.feature_schema(settings.feature_margin),
        classes=dataset.classes,
        golden=split.golden_rows(estimator.predict_proba(split.x_test)),
    )
    return TrainedModel(
        estimator=estimator, card=card, split=split, cv_scores=cv_scores
    )
