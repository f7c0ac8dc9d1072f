"""Drift scores in process: the reference training publishes, the window, the scores."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from scipy.stats import ks_2samp  # type: ignore[import-untyped]

from predictor.drift import DriftReference, DriftWindow
from predictor.metrics import PENDING_BATCHES
from training.store.layout import FeatureStats, ModelMetadata
from training.train import TrainedModel


def metadata(trained: TrainedModel) -> ModelMetadata:
    return ModelMetadata(
        **trained.card.model_dump(),
        version="20261130T000000000000Z-abcdef",
        created_at=datetime.now(UTC),
        sklearn_version="1",
        python_version="3",
        model_sha256="0" * 64,
    )


def scores(window: DriftWindow) -> dict[tuple[str, str], float]:
    """(metric name, feature or class) -> value, as Prometheus would read them."""
    registry = CollectorRegistry()
    registry.register(window)
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels.get("feature", sample.labels.get("class", ""))): (
            sample.value
        )
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def window_of(trained: TrainedModel, capacity: int = 1000) -> DriftWindow:
    window = DriftWindow("iris", capacity)
    window.use(DriftReference.of(metadata(trained)))
    return window


def test_training_publishes_the_reference(trained: TrainedModel) -> None:
    x, y = trained.split.x_train, trained.split.y_train
    for column, name in enumerate(trained.card.feature_names):
        stats = trained.card.feature_stats[name]
        assert sum(stats.bin_fractions) == pytest.approx(1)
        # No empty training bin: the PSI stays finite.
        assert min(stats.bin_fractions) > 0
        assert 5 <= len(stats.bin_edges) <= 9
        assert stats.cdf_values[0] == x[:, column].min()
        assert stats.cdf_values[-1] == x[:, column].max()
        assert stats.cdf_fractions[-1] == 1
        for value, share in zip(stats.cdf_values, stats.cdf_fractions, strict=True):
            assert share == np.mean(x[:, column] <= value)
    priors = np.bincount(y) / len(y)
    assert trained.card.class_priors == pytest.approx(priors.tolist())


def test_training_rows_score_as_no_drift(trained: TrainedModel) -> None:
    window = window_of(trained)
    x, y = trained.split.x_train, trained.split.y_train
    window.record(x, y)
    found = scores(window)
    assert found[("iris_drift_window_rows", "")] == len(x)
    for name in trained.card.feature_names:
        assert found[("iris_feature_drift_psi", name)] == pytest.approx(0, abs=1e-9)
        assert found[("iris_feature_drift_ks", name)] == pytest.approx(0, abs=1e-9)
    assert found[("iris_prediction_drift_psi", "")] == pytest.approx(0, abs=1e-9)
    for name, prior in zip(
        trained.card.class_names, trained.card.class_priors, strict=True
    ):
        assert found[("iris_prediction_window_class_ratio", name)] == pytest.approx(
            prior
        )
        assert found[("iris_model_training_class_ratio", name)] == pytest.approx(prior)


def test_shifted_rows_score_as_drift(trained: TrainedModel) -> None:
    window = window_of(trained)
    x = trained.split.x_train
    # Every row above the training maximum of every feature.
    window.record(x + np.ptp(x, axis=0) + 0.5, np.full(len(x), 2))
    found = scores(window)
    for name in trained.card.feature_names:
        assert found[("iris_feature_drift_psi", name)] > 5
        assert found[("iris_feature_drift_ks", name)] == 1
    assert found[("iris_prediction_drift_psi", "")] > 1


def test_the_ks_statistic_is_scipys(trained: TrainedModel) -> None:
    rng = np.random.default_rng(7)
    x = trained.split.x_train
    live = x[rng.integers(0, len(x), 300)] + rng.normal(0.3, 0.4, (300, x.shape[1]))
    window = window_of(trained)
    window.record(live, np.zeros(len(live), dtype=np.int64))
    found = scores(window)
    for column, name in enumerate(trained.card.feature_names):
        expected = ks_2samp(live[:, column], x[:, column]).statistic
        assert found[("iris_feature_drift_ks", name)] == pytest.approx(expected)


def test_the_window_keeps_the_latest_rows(trained: TrainedModel) -> None:
    window = window_of(trained, capacity=10)

    def batch(label: int, count: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        return trained.split.x_train[:count], np.full(count, label)

    window.record(*batch(0, 7))
    window.record(*batch(1, 7))
    found = scores(window)
    assert found[("iris_drift_window_rows", "")] == 10
    assert found[("iris_prediction_window_class_ratio", "setosa")] == pytest.approx(0.3)
    window.record(*batch(2, 25))
    found = scores(window)
    assert found[("iris_prediction_window_class_ratio", "virginica")] == 1
    window.record(*batch(0, 4))
    assert scores(window)[
        ("iris_prediction_window_class_ratio", "setosa")
    ] == pytest.approx(0.4)


def test_a_new_version_starts_an_empty_window(trained: TrainedModel) -> None:
    window = window_of(trained)
    window.record(trained.split.x_train, trained.split.y_train)
    window.use(DriftReference.of(metadata(trained)))
    found = scores(window)
    assert found[("iris_drift_window_rows", "")] == 0
    assert ("iris_feature_drift_psi", "petal_length") not in found


def test_metadata_without_a_reference_loads_and_scores_nothing(
    trained: TrainedModel,
) -> None:
    published = metadata(trained).model_dump(mode="json")
    published.pop("class_priors")
    for stats in published["feature_stats"].values():
        for field in ("bin_edges", "bin_fractions", "cdf_values", "cdf_fractions"):
            stats.pop(field)
    older = ModelMetadata.model_validate(published)
    assert DriftReference.of(older) is None
    window = DriftWindow("iris", 10)
    window.use(None)
    window.record(trained.split.x_train, trained.split.y_train)
    assert scores(window)[("iris_drift_window_rows", "")] == 0


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"bin_edges": [1.0, 2.0], "bin_fractions": [0.5, 0.5]}, "one more entry"),
        ({"cdf_values": [1.0, 2.0], "cdf_fractions": [1.0]}, "one entry per"),
        ({"cdf_values": [2.0, 1.0], "cdf_fractions": [0.5, 1.0]}, "ascending"),
        ({"bin_edges": [1.0], "bin_fractions": [1.5, -0.5]}, r"\[0, 1\]"),
    ],
)
def test_an_inconsistent_reference_is_refused(
    reference: dict[str, list[float]], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        FeatureStats(min=0, max=1, mean=0.5, std=0.1, **reference)


def test_a_window_of_zero_rows_turns_the_scores_off(trained: TrainedModel) -> None:
    window = window_of(trained, capacity=0)
    window.record(trained.split.x_train, trained.split.y_train)
    found = scores(window)
    assert found[("iris_drift_window_rows", "")] == 0
    assert ("iris_model_training_class_ratio", "setosa") not in found


def one_row_requests(
    trained: TrainedModel, labels: list[int]
) -> list[tuple[NDArray[np.float64], NDArray[np.int64]]]:
    x = trained.split.x_train
    return [
        (x[index % len(x)][np.newaxis].copy(), np.full(1, label))
        for index, label in enumerate(labels)
    ]


def test_one_row_requests_fill_the_window_as_one_batch_does(
    trained: TrainedModel,
) -> None:
    labels = [index % 3 for index in range(PENDING_BATCHES + 8)]
    requests = one_row_requests(trained, labels)
    one_by_one, in_bulk = window_of(trained, capacity=10), window_of(trained, 10)
    for rows, label in requests[:3]:
        one_by_one.record(rows, label)
    assert scores(one_by_one)[("iris_drift_window_rows", "")] == 3
    # Past the limit of rows put aside, and a scrape after it.
    for rows, label in requests[3:]:
        one_by_one.record(rows, label)
    latest = requests[-10:]
    in_bulk.record(
        np.vstack([rows for rows, _ in latest]),
        np.concatenate([label for _, label in latest]),
    )
    assert scores(one_by_one) == scores(in_bulk)
    assert scores(one_by_one)[("iris_drift_window_rows", "")] == 10


def test_rows_put_aside_come_before_a_larger_batch(trained: TrainedModel) -> None:
    window = window_of(trained, capacity=10)
    for rows, label in one_row_requests(trained, [0] * 5):
        window.record(rows, label)
    window.record(trained.split.x_train[:9], np.ones(9, dtype=np.int64))
    assert scores(window)[
        ("iris_prediction_window_class_ratio", "setosa")
    ] == pytest.approx(0.1)


def test_a_new_version_drops_the_rows_put_aside(trained: TrainedModel) -> None:
    window = window_of(trained)
    requests = one_row_requests(trained, [0, 1, 2, 0, 1])
    for rows, label in requests:
        window.record(rows, label)
    window.use(DriftReference.of(metadata(trained)))
    assert scores(window)[("iris_drift_window_rows", "")] == 0
    for rows, label in requests[:2]:
        window.record(rows, label)
    assert scores(window)[("iris_drift_window_rows", "")] == 2


def test_rows_of_a_replaced_schema_stay_out_of_the_window(
    trained: TrainedModel,
) -> None:
    served = metadata(trained)
    narrower = served.model_copy(update={"feature_names": served.feature_names[:2]})
    window = DriftWindow("iris", 100)
    window.use(DriftReference.of(narrower))
    for rows, label in one_row_requests(trained, [0, 1, 2]):
        # A late answer of the replaced version, with its 4 features.
        window.record(rows, label)
        window.record(rows[:, :2], label)
    found = scores(window)
    assert found[("iris_drift_window_rows", "")] == 3
    assert {feature for name, feature in found if name == "iris_feature_drift_ks"} == {
        *served.feature_names[:2]
    }
