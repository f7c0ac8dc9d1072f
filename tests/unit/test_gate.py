"""The fair gate: models compared only on rows neither trained on, with the noise."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pytest

from training.__main__ import main
from training.gate import (
    ExitCode,
    compare_on_shared_rows,
    compare_recorded,
    judge,
)
from training.lifecycle import compare_with_champion
from training.settings import TrainingSettings
from training.store import open_store
from training.train import train


def test_models_with_other_seeds_are_judged_on_rows_neither_trained_on() -> None:
    champion = train(TrainingSettings(n_estimators=5, random_state=42))
    challenger = train(TrainingSettings(n_estimators=5, random_state=7))

    assert champion.card.evaluation_sha256 == challenger.card.evaluation_sha256
    # Each trains on the complement of the held-out rows, so neither saw them.
    assert np.array_equal(champion.split.x_test, challenger.split.x_test)
    assert np.array_equal(champion.split.y_test, challenger.split.y_test)
    assert np.array_equal(champion.split.x_train, challenger.split.x_train)


def test_the_seed_42_champion_is_not_credited_with_rows_it_trained_on(
    tmp_path: Path,
) -> None:
    store = open_store(str(tmp_path / "models"))
    champion = train(TrainingSettings(n_estimators=5, random_state=42))
    store.publish(champion.estimator, champion.card, 5)
    challenger = train(TrainingSettings(n_estimators=5, random_state=7))

    comparison = compare_with_champion(store, store.read_pointer_state(), challenger)

    assert comparison is not None
    assert comparison.same_rows
    assert comparison.rows == 30
    # On rows it never saw, seed 42 scores what it scored when it was trained.
    assert comparison.champion_accuracy == champion.card.metrics.accuracy
    assert comparison.challenger_accuracy == challenger.card.metrics.accuracy


def test_different_evaluation_sets_are_named_and_decided_on_recorded_accuracy(
    tmp_path: Path,
) -> None:
    store = open_store(str(tmp_path / "models"))
    champion = train(TrainingSettings(n_estimators=5, test_fraction=0.4))
    store.publish(champion.estimator, champion.card, 5)
    challenger = train(TrainingSettings(n_estimators=5))

    comparison = compare_with_champion(store, store.read_pointer_state(), challenger)

    assert comparison is not None
    assert not comparison.same_rows
    assert comparison.champion_accuracy == champion.card.metrics.accuracy
    assert comparison.rows == 30
    verdict = judge(challenger.card.metrics.accuracy, 0.9, comparison, force=False)
    assert "evaluation sets differ" in verdict.reason


def test_the_paired_interval_counts_only_rows_where_the_models_disagree() -> None:
    challenger = np.array([True] * 29 + [False])
    champion = np.array([True] * 27 + [False, False, True])

    comparison = compare_on_shared_rows(challenger, champion, "v")

    # Gained 2 rows and lost 1 of 30: +1 row, and far from significant.
    assert comparison.difference == pytest.approx(1 / 30)
    spread = 1.959963984540054 * math.sqrt((3 / 30 - (1 / 30) ** 2) / 30)
    assert (comparison.low, comparison.high) == pytest.approx(
        (1 / 30 - spread, 1 / 30 + spread)
    )
    assert comparison.low < 0 < comparison.high


def test_the_unpaired_interval_is_wider_than_either_accuracy_alone() -> None:
    comparison = compare_recorded(0.9, 30, 0.9, 45, "v")

    assert comparison.difference == 0
    assert comparison.high == pytest.approx(
        1.959963984540054 * math.sqrt(0.09 / 30 + 0.09 / 45)
    )


def test_a_minimum_improvement_keeps_noise_from_churning_versions() -> None:
    one_row_better = compare_on_shared_rows(
        np.array([True] * 30), np.array([True] * 29 + [False]), "v"
    )

    assert judge(1.0, 0.9, one_row_better, False).publish
    refused = judge(1.0, 0.9, one_row_better, False, min_improvement=0.05)
    assert refused.exit_code is ExitCode.WORSE_THAN_CURRENT
    assert "at least 0.0500" in refused.reason
    assert judge(1.0, 0.9, one_row_better, True, min_improvement=0.05).publish


def test_the_job_records_the_evaluation_set_and_honours_the_minimum_improvement(
    tmp_path: Path,
) -> None:
    models = str(tmp_path / "models")
    tiny = ("--model_uri", models, "--n_estimators", "5", "--cv_folds", "2")
    first = main([*tiny, "--reason", "nightly retrain"])
    assert first == ExitCode.PUBLISHED

    tie = main([*tiny, "--min_improvement", "0.05"])

    assert tie == ExitCode.WORSE_THAN_CURRENT
    store = open_store(models)
    assert len(store.list_versions()) == 1
    current = store.load_current()
    assert current is not None
    split = train(TrainingSettings(n_estimators=5, cv_folds=2)).split
    assert current.metadata.evaluation_sha256 == split.evaluation_sha256
    (change,) = store.history()
    assert (change.action, change.version, change.previous_version) == (
        "publish",
        current.metadata.version,
        None,
    )
    assert (change.reason, change.by) == ("nightly retrain", socket.gethostname())
