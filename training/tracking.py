"""MLflow tracking: each training run, the gate's verdict, and the champion alias.

The store stays the source of truth that predictors read; MLflow is a record of it.
So a tracking failure (server down, refused credentials) is one warning and the
run goes on without tracking, while a tracking URI that can never work is a usage
error before anything is trained. The client is ``mlflow-skinny``, a dependency
imported only when a tracking URI is set, so the predictor never loads it.
Credentials come from MLflow's own ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` or
``MLFLOW_TRACKING_TOKEN``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from training.store.model_file import dump_model

if TYPE_CHECKING:
    from training.lifecycle import Outcome
    from training.train import TrainedModel

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
CHAMPION_ALIAS = "champion"
STORE_VERSION_TAG = "store_version"
CV_SCORES_METRIC = "cv_accuracy"
# MLflow's defaults retry a dead server for minutes (7 retries, backoff factor 2);
# the store does not wait on MLflow, so fail fast. An operator's own values win.
CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # Read when mlflow is imported: no usage reports to MLflow's servers from a Job,
    # and its thread, failing offline, unset a variable while a request read them all.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


class TrackingUnavailableError(Exception):
    """A tracking URI is set but the MLflow client is not installed."""


def check_tracking_uri(uri: str) -> str:
    """The URI unchanged if a tracking client could use it; empty means no tracking."""
    if not uri:
        return uri
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as error:
        raise ValueError(f"not a URL: {uri!r}: {error}") from error
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"unsupported scheme {parts.scheme!r} in {uri!r}: use "
            + " or ".join(f"{scheme}://" for scheme in SCHEMES)
        )
    if not parts.hostname:
        raise ValueError(f"no host in {uri!r}")
    return uri


class Tracker:
    """One MLflow client; after its first failure it warns once and does nothing."""

    def __init__(self, tracking_uri: str, model_name: str) -> None:
        for name, value in CLIENT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise TrackingUnavailableError(
                "a tracking URI is set but the MLflow client is not installed: "
                "pip install mlflow-skinny"
            ) from error
        self.uri = tracking_uri
        self.model_name = model_name
        self.client: Any = MlflowClient(
            tracking_uri=tracking_uri, registry_uri=tracking_uri
        )
        self.failed = False

    def _attempt(self, what: str, action: Callable[[], None]) -> None:
        if self.failed:
            return
        try:
            action()
        # Any failure of the record must leave the store's publish untouched.
        except Exception as error:  # noqa: BLE001
            self.failed = True
            log.warning(
                "mlflow unreachable, the store is updated without it "
                "uri=%s step=%s error=%s: %s",
                self.uri,
                what,
                type(error).__name__,
                error,
            )

    def record_training(
        self, trained: TrainedModel, outcome: Outcome, experiment: str
    ) -> None:
        """One run: parameters, metrics, the gate's verdict, and the model."""
        self._attempt(
            "run", lambda: self._record_training(trained, outcome, experiment)
        )

    def move_champion(self, store_version: str) -> None:
        """Point the champion alias at the registered version of store_version."""
        self._attempt("alias", lambda: self._move_champion(store_version))

    def _record_training(
        self, trained: TrainedModel, outcome: Outcome, experiment: str
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        client = self.client
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id if found else client.create_experiment(experiment)
        )
        card = trained.card
        verdict = outcome.verdict
        published = outcome.published
        run = client.create_run(experiment_id)
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        metrics = card.metrics
        values = {
            "accuracy": metrics.accuracy,
            "precision_macro": metrics.precision_macro,
            "recall_macro": metrics.recall_macro,
            "f1_macro": metrics.f1_macro,
            "cv_accuracy_mean": metrics.cv_accuracy_mean,
            "cv_accuracy_std": metrics.cv_accuracy_std,
            "train_rows": float(metrics.train_rows),
            "test_rows": float(metrics.test_rows),
            "gate_exit_code": float(verdict.exit_code),
        }
        if verdict.comparison is not None:
            values["champion_accuracy"] = verdict.comparison.champion_accuracy
            values["accuracy_difference_low"] = verdict.comparison.low
            values["accuracy_difference_high"] = verdict.comparison.high
        parameters = {
            "algorithm": card.algorithm,
            **{name: str(value) for name, value in card.hyperparameters.items()},
            "random_state": str(card.random_state),
            "test_fraction": str(card.test_fraction),
            "cv_folds": str(metrics.cv_folds),
            "dataset_sha256": str(card.dataset_sha256),
            "evaluation_sha256": str(card.evaluation_sha256),
        }
        tags = {
            "gate.verdict": verdict.exit_code.name.lower(),
            "gate.published": str(verdict.publish).lower(),
            "gate.reason": verdict.reason,
        }
        if published is not None:
            tags[STORE_VERSION_TAG] = published.version
        # Each fold's accuracy is one step of cv_accuracy, MLflow's way to log a series.
        folds = [
            Metric(CV_SCORES_METRIC, score, now, fold)
            for fold, score in enumerate(trained.cv_scores)
        ]
        client.log_batch(
            run_id,
            metrics=[
                *(Metric(key, value, now, 0) for key, value in values.items()),
                *folds,
            ],
            params=[Param(key, value) for key, value in parameters.items()],
            tags=[RunTag(key, value) for key, value in tags.items()],
        )
        client.log_dict(
            run_id,
            {"classes": card.class_names, "matrix": metrics.confusion_matrix},
            "confusion_matrix.json",
        )
        with tempfile.TemporaryDirectory() as scratch:
            model_dir = Path(scratch) / "model"
            model_dir.mkdir()
            # The store's own format (skops) and card, not a pickle.
            (model_dir / "model.skops").write_bytes(dump_model(trained.estimator))
            (model_dir / "model_card.json").write_text(
                json.dumps(card.model_dump(mode="json"), indent=2)
            )
            client.log_artifacts(run_id, str(model_dir), "model")
        client.set_terminated(run_id, "FINISHED")
        log.info(
            "mlflow run recorded uri=%s run_id=%s verdict=%s",
            self.uri,
            run_id,
            tags["gate.verdict"],
        )
        if published is not None:
            self._register(run_id, published.version)

    def _register(self, run_id: str, store_version: str) -> None:
        from mlflow.exceptions import MlflowException

        client = self.client
        try:
            client.create_registered_model(self.model_name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        registered = client.create_model_version(
            self.model_name,
            f"runs:/{run_id}/model",
            run_id=run_id,
            tags={STORE_VERSION_TAG: store_version},
        )
        client.set_registered_model_alias(
            self.model_name, CHAMPION_ALIAS, registered.version
        )
        log.info(
            "mlflow champion model=%s registered_version=%s store_version=%s",
            self.model_name,
            registered.version,
            store_version,
        )

    def _move_champion(self, store_version: str) -> None:
        client = self.client
        matches = [
            found
            for found in client.search_model_versions(f"name='{self.model_name}'")
            if found.tags.get(STORE_VERSION_TAG) == store_version
        ]
        if not matches:
            log.warning(
                "mlflow has no registered version for this store version, "
                "the champion alias stays model=%s store_version=%s",
                self.model_name,
                store_version,
            )
            return
        registered = max(matches, key=lambda found: int(found.version))
        client.set_registered_model_alias(
            self.model_name, CHAMPION_ALIAS, registered.version
        )
        log.info(
            "mlflow champion moved model=%s registered_version=%s store_version=%s",
            self.model_name,
            registered.version,
            store_version,
        )
