"""``python -m training``: the program the training Job runs.

Train, evaluate, pass the quality gate, publish, report. The exit status says
which of those happened (see ``training.gate.ExitCode``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from training.data import DataError, DataSplit
from training.evaluation import held_out_accuracy
from training.gate import ExitCode, judge
from training.report import render_report
from training.settings import TrainingSettings, parse_settings
from training.store import IntegrityError, ModelStore, StoreError, open_store
from training.train import train

log = logging.getLogger("training")


def current_accuracy(store: ModelStore, split: DataSplit) -> float | None:
    """The published model's accuracy on this run's held-out rows, if it is usable."""
    try:
        current = store.load_current()
    except IntegrityError as error:
        log.warning("current model unusable, a new one may replace it: %s", error)
        return None
    if current is None:
        log.info("no current model uri=%s", store.uri)
        return None
    try:
        accuracy = held_out_accuracy(current.estimator, split)
    except ValueError as error:
        log.warning(
            "current model cannot score this data, a new one may replace it: %s", error
        )
        return None
    log.info(
        "current model version=%s accuracy=%.4f", current.metadata.version, accuracy
    )
    return accuracy


def run(settings: TrainingSettings) -> ExitCode:
    store = open_store(settings.model_uri)
    trained = train(settings)
    metrics = trained.card.metrics
    verdict = judge(
        metrics.accuracy,
        settings.min_accuracy,
        current_accuracy(store, trained.split),
        settings.force,
    )
    location = store.uri
    if verdict.publish:
        metadata = store.publish(
            trained.estimator, trained.card, settings.keep_versions
        )
        location = f"{store.uri} as version {metadata.version}"
    else:
        log.error(
            "refused to publish exit_code=%d reason=%s",
            verdict.exit_code,
            verdict.reason,
        )
    print(
        render_report(
            metrics, trained.card.class_names, verdict, location, trained.split.dataset
        )
    )
    return verdict.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    logging.basicConfig(
        level=settings.log_level,
        format="time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return run(settings)
    except DataError as error:
        log.error("bad training data, nothing published: %s", error)
        return ExitCode.USAGE
    except StoreError as error:
        log.error("store error: %s", error)
        return ExitCode.STORE_ERROR


if __name__ == "__main__":
    sys.exit(main())
