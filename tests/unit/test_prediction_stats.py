"""The per-row statistics count the same whether rows come one at a time or in bulk."""

from __future__ import annotations

import numpy as np

from predictor.metrics import PredictionStats
from training.settings import TrainingSettings
from training.store import ModelMetadata, open_store
from training.train import train


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
