"""The training program's settings: each is a flag (``--n_estimators``) and an
environment variable (``IRIS_N_ESTIMATORS``); a flag wins over the environment."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_settings import SettingsConfigDict

from training.store.cli import ProgramSettings, parse_cli
from training.tracking import check_tracking_uri

TrackingUri = Annotated[str, AfterValidator(check_tracking_uri)]
TRACKING_URI_HELP = (
    "An MLflow tracking server (http:// or https://) to record runs and the "
    "champion alias in; empty for none. Credentials from MLFLOW_TRACKING_*."
)


class TrackedSettings(ProgramSettings):
    """What training and the pointer commands share: MLflow and the history's why."""

    reason: str = Field(
        "", description="Why the pointer moves, recorded in the store's history."
    )
    mlflow_tracking_uri: TrackingUri = Field("", description=TRACKING_URI_HELP)
    mlflow_model_name: str = Field(
        "iris", min_length=1, description="The MLflow registered model. Default iris."
    )


class TrainingSettings(TrackedSettings):
    # IRIS_MAX_DEPTH=null means no limit, as --max_depth null does.
    model_config = SettingsConfigDict(env_parse_none_str="null")

    data: str = Field(
        "",
        description="A CSV file with a header row to train on, a path or "
        "s3://bucket/key; empty for scikit-learn's Iris.",
    )
    target: str = Field(
        "", description="With --data: the column that holds the classes."
    )
    max_data_rows: int = Field(
        1_000_000, ge=1, description="Refuse a CSV with more data rows than this."
    )
    max_data_columns: int = Field(
        1_000, ge=2, description="Refuse a CSV with more columns than this."
    )
    feature_margin: float = Field(
        0.5,
        ge=0,
        description="The predictor accepts each feature from its training minimum "
        "less this fraction of its training range to its maximum plus as much.",
    )
    algorithm: Literal["random_forest", "decision_tree"] = Field(
        "random_forest", description="Which classifier to train. Default random_forest."
    )
    n_estimators: int = Field(
        50, ge=1, le=1000, description="Trees in the random forest. Default 50."
    )
    max_depth: int | None = Field(
        5, ge=1, description="Deepest a tree may grow; null for no limit. Default 5."
    )
    min_samples_split: int = Field(
        10, ge=2, description="Fewest samples a node needs to be split. Default 10."
    )
    min_samples_leaf: int = Field(
        5, ge=1, description="Fewest samples a leaf may hold. Default 5."
    )
    criterion: Literal["gini", "entropy", "log_loss"] = Field(
        "gini", description="Split quality measure. Default gini."
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of rows held out for evaluation. Default 0.2.",
    )
    random_state: int = Field(
        42, ge=0, description="Seed of the estimator and the CV folds. Default 42."
    )
    split_seed: int = Field(
        42,
        ge=0,
        description="Seed of the held-out split, fixed apart from random_state so "
        "that retrained models share their evaluation rows. Default 42.",
    )
    cv_folds: int = Field(
        5, ge=2, description="Cross-validation folds on the training part. Default 5."
    )
    min_accuracy: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Refuse to publish below this held-out accuracy. Default 0.9.",
    )
    min_improvement: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Publish only if held-out accuracy beats the current model's "
        "by at least this much, so noise does not churn versions. Default 0.",
    )
    force: bool = Field(
        False,
        description="Publish even if the current model scores better on the same "
        "held-out rows. Default false.",
    )
    keep_versions: int = Field(
        5,
        ge=2,
        description="Published versions to keep, the current one included; "
        "at least 2 so a reader of the previous version is never cut off. Default 5.",
    )
    mlflow_experiment: str = Field(
        "iris", min_length=1, description="The MLflow experiment. Default iris."
    )

    @model_validator(mode="after")
    def _target_with_data(self) -> TrainingSettings:
        if bool(self.data) != bool(self.target):
            raise ValueError("--data and --target go together")
        return self


class StoreCommandSettings(TrackedSettings):
    """Settings of ``versions``, ``rollback`` and ``promote``."""


def parse_settings(argv: Sequence[str] | None = None) -> TrainingSettings:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train a classifier (on Iris unless --data names a CSV), "
        "evaluate it, and publish it if it passes the quality gate.",
    )
    settings, _ = parse_cli(TrainingSettings, parser, argv)
    return settings
