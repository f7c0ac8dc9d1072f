"""The classifier that training fits, built from the settings."""

from __future__ import annotations

from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from training.settings import TrainingSettings


def hyperparameters(settings: TrainingSettings) -> dict[str, int | float | str | None]:
    """The hyperparameters of the chosen algorithm, as recorded in the metadata."""
    shared: dict[str, int | float | str | None] = {
        "max_depth": settings.max_depth,
        "min_samples_split": settings.min_samples_split,
        "min_samples_leaf": settings.min_samples_leaf,
        "criterion": settings.criterion,
        "random_state": settings.random_state,
    }
    if settings.algorithm == "random_forest":
        return {"n_estimators": settings.n_estimators, **shared}
    return shared


def build_estimator(settings: TrainingSettings) -> ClassifierMixin:
    parameters = hyperparameters(settings)
    if settings.algorithm == "random_forest":
        return RandomForestClassifier(**parameters)
    return DecisionTreeClassifier(**parameters)
