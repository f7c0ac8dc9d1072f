"""The per-row statistics count the same whether rows come one at a time or in bulk."""

from __future__ import annotations

import sys
import threading

import numpy as np
from numpy.typing import NDArray

from predictor.metrics import PENDING_BATCHES, PredictionStats
from tests.unit.test_drift import metadata
from training.settings import TrainingSettings
from training.store import ModelMetadata, open_store
from training.train import TrainedModel, train


def samples(
    stats: PredictionStats,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in stats.collect()
        for sample in family.samples
    }


def test_small_and_large_batches_count_alike(tmp_path: object) -> None:
    trained = train(TrainingSettings(algorithm="decision_tree"))
    metadata: ModelMetadata = open_store(str(tmp_path)).publish(
        trained.estimator, trained.card, 5
    )
    rows = np.vstack([trained.split.x_test, trained.split.x_test[:5] * 3])
    probabilities = trained.estimator.predict_proba(rows)
    labels, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    one_by_one, in_bulk = PredictionStats("a"), PredictionStats("a")
    for stats in (one_by_one, in_bulk):
        stats.follow(metadata)

    for index in range(len(rows)):
        one = slice(index, index + 1)
        one_by_one.record(rows[one], labels[one], confidence[one])
    in_bulk.record(rows, labels, confidence)

    counted, bulk = samples(one_by_one), samples(in_bulk)
    assert counted.keys() == bulk.keys()
    for key, value in bulk.items():
        if key[0].endswith("_sum"):
            # Sums are added in another order, so only nearly equal.
            assert np.isclose(counted[key], value), key
        else:
            assert counted[key] == value, key
    assert bulk[("iris_prediction_confidence_ratio_count", (("model_name", "a"),))] == (
        len(rows)
    )


def one_row_batches(
    trained: TrainedModel, count: int
) -> list[tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]]:
    """count 1-row requests over the test rows, as predict records them."""
    x = trained.split.x_test
    rows = x[np.arange(count) % len(x)]
    probabilities = trained.estimator.predict_proba(rows)
    return [
        (rows[index : index + 1].copy(), label[np.newaxis], highest[np.newaxis])
        for index, (label, highest) in enumerate(
            zip(probabilities.argmax(axis=1), probabilities.max(axis=1), strict=True)
        )
    ]


def added_in_order(values: list[float]) -> float:
    total = 0.0
    for value in values:
        total += value
    return total


def test_one_row_requests_count_exactly_across_the_pending_limit(
    trained: TrainedModel,
) -> None:
    served = metadata(trained)
    batches = one_row_batches(trained, 2 * PENDING_BATCHES + 3)
    stats = PredictionStats("a")
    stats.follow(served)
    recorded = 0
    # Scrapes with a few pending, just below, at and past the limit, and twice.
    ends = (5, PENDING_BATCHES - 1, PENDING_BATCHES, len(batches), len(batches))
    for end in ends:
        for rows, labels, confidence in batches[recorded:end]:
            stats.record(rows, labels, confidence)
        recorded = end
        found = samples(stats)

        rows = np.vstack([batch[0] for batch in batches[:recorded]])
        labels = np.concatenate([batch[1] for batch in batches[:recorded]])
        confidence = np.concatenate([batch[2] for batch in batches[:recorded]])
        in_bulk = PredictionStats("a")
        in_bulk.follow(served)
        in_bulk.record(rows, labels, confidence)
        expected = samples(in_bulk)
        # A row-by-row sum, as the rows came: what 1-row requests always added up to.
        expected[("iris_prediction_confidence_ratio_sum", (("model_name", "a"),))] = (
            added_in_order(confidence.tolist())
        )
        for column, feature in enumerate(served.feature_names):
            key = ("feature", feature), ("model_name", "a")
            expected[("iris_feature_value_centimeters_sum", key)] = added_in_order(
                rows[:, column].tolist()
            )
        assert found == expected, recorded
        assert found[
            ("iris_prediction_confidence_ratio_count", (("model_name", "a"),))
        ] == (recorded)


def test_a_version_swap_counts_pending_rows_under_the_version_they_came_from(
    trained: TrainedModel,
) -> None:
    served = metadata(trained)
    first = served.feature_names[0]
    # Other training ranges: other buckets, so a fresh series.
    wider = served.model_copy(
        update={
            "feature_stats": {
                **served.feature_stats,
                first: served.feature_stats[first].model_copy(
                    update={"max": served.feature_stats[first].max + 1}
                ),
            }
        }
    )
    batches = one_row_batches(trained, 7)
    stats = PredictionStats("a")
    stats.follow(served)
    for batch in batches[:5]:
        stats.record(*batch)
    # The same schema goes on counting, pending rows included.
    stats.follow(served.model_copy(update={"version": "20261130T000000000001Z-abcdef"}))
    stats.record(*batches[5])
    assert rows_counted(samples(stats)) == 6
    stats.record(*batches[6])
    stats.follow(wider)
    assert rows_counted(samples(stats)) == 0
    for batch in batches[:3]:
        stats.record(*batch)
    assert rows_counted(samples(stats)) == 3


def test_pending_rows_from_a_replaced_schema_are_not_counted(
    trained: TrainedModel,
) -> None:
    served = metadata(trained)
    narrower = served.model_copy(
        update={"features": served.features[:2], "classes": served.classes[:2]}
    )
    stats = PredictionStats("a")
    stats.follow(narrower)
    batches = one_row_batches(trained, 30)
    kept = 0
    for rows, labels, confidence in batches:
        # Late answers of the replaced version: its 4 features, its 3 classes.
        stats.record(rows, labels, confidence)
        if labels[0] < 2:
            stats.record(rows[:, :2], labels, confidence)
            kept += 1
        stats.record(rows[:, :2], np.full(1, 2), confidence)
    assert 0 < kept < len(batches)
    found = samples(stats)
    assert rows_counted(found) == kept
    counted = {
        dict(labels)["feature"]
        for name, labels in found
        if name == "iris_feature_value_centimeters_count"
    }
    assert counted == set(served.feature_names[:2])


def test_threads_recording_during_scrapes_count_every_row(
    trained: TrainedModel,
) -> None:
    stats = PredictionStats("a")
    stats.follow(metadata(trained))
    batches = one_row_batches(trained, PENDING_BATCHES * 10 + 1)
    recorders = 4
    finished = threading.Event()

    def record() -> None:
        for batch in batches:
            stats.record(*batch)

    def scrape() -> None:
        while not finished.is_set():
            samples(stats)

    switch_interval = sys.getswitchinterval()
    # Switch threads every few bytecodes so that appends land inside counts.
    sys.setswitchinterval(1e-6)
    try:
        scraper = threading.Thread(target=scrape)
        scraper.start()
        threads = [threading.Thread(target=record) for _ in range(recorders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        finished.set()
        scraper.join()
    finally:
        sys.setswitchinterval(switch_interval)
    found = samples(stats)
    assert rows_counted(found) == recorders * len(batches)
    classes = np.bincount(np.concatenate([batch[1] for batch in batches]))
    for index, name in enumerate(trained.card.class_names):
        key = ("iris_predictions_total", (("class", name), ("model_name", "a")))
        assert found[key] == recorders * classes[index]


def rows_counted(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return found[("iris_prediction_confidence_ratio_count", (("model_name", "a"),))]
