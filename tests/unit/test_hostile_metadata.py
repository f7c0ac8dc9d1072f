"""Files with a correct digest but hostile content are refused, with a one-line reason.

The digest chain proves only that nobody changed a file after it was published;
whoever can write the store can write any content. Each read is capped before it is
read whole, and metadata is validated for types, ranges, finiteness and sizes.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from predictor.inputs import RequestSchema
from predictor.serving import ServingModel
from tests.unit.test_watcher import new_watcher, reloads
from training.store import IntegrityError, ModelStore, Pointer, open_store
from training.store.directory import DirectoryStore
from training.store.layout import (
    MAX_METADATA_BYTES,
    MAX_MODEL_BYTES,
    MAX_POINTER_BYTES,
    METADATA_FILE,
    MODEL_FILE,
    POINTER_NAME,
    new_version,
    sha256_hex,
    version_key,
)
from training.store.model_file import dump_model
from training.train import TrainedModel

MIB = 1024 * 1024
Document = dict[str, Any]


def publish_document(
    store: ModelStore, trained: TrainedModel, change: Callable[[Document], object]
) -> str:
    """Publish a version whose metadata was changed, with every digest correct."""
    model_bytes = dump_model(trained.estimator)
    published = store.publish_file(model_bytes, trained.card, 5)
    document = published.model_dump(mode="json")
    version = new_version()
    document["version"] = version
    change(document)
    metadata = json.dumps(document).encode()
    store.write_version(version, {MODEL_FILE: model_bytes, METADATA_FILE: metadata})
    pointer = Pointer(version=version, metadata_sha256=sha256_hex(metadata))
    store.write_pointer(pointer.model_dump_json().encode())
    return version


def set_path(path: str, value: object) -> Callable[[Document], None]:
    def change(document: Document) -> None:
        *parents, last = path.split(".")
        for part in parents:
            document = document[part]
        document[last] = value

    return change


def extra_features(count: int) -> Callable[[Document], None]:
    def change(document: Document) -> None:
        stats = document["feature_stats"]["petal_length"]
        for index in range(count):
            document["feature_stats"][f"feature_{index}"] = stats

    return change


HOSTILE = {
    "NaN accuracy": (set_path("metrics.accuracy", float("nan")), "metrics.accuracy"),
    "infinite mean": (
        set_path("feature_stats.sepal_length.mean", float("inf")),
        "feature_stats.sepal_length.mean",
    ),
    "accuracy above 1": (set_path("metrics.accuracy", 1.5), "metrics.accuracy"),
    "10^30 in the confusion matrix": (
        set_path("metrics.confusion_matrix", [[10**30, 0, 0], [0, 1, 0], [0, 0, 1]]),
        "metrics.confusion_matrix.0.0",
    ),
    "a 1000-character algorithm": (set_path("algorithm", "x" * 1000), "algorithm"),
    "a 10 MB algorithm": (
        set_path("algorithm", "x" * 10_000_000),
        f"larger than the limit of {MAX_METADATA_BYTES} bytes",
    ),
    "100 extra feature_stats keys": (
        extra_features(100),
        "feature_stats must describe exactly the 4 features, 100 names differ",
    ),
    "100,000 extra feature_stats keys": (
        extra_features(100_000),
        f"larger than the limit of {MAX_METADATA_BYTES} bytes",
    ),
    "a string accuracy": (set_path("metrics.accuracy", "high"), "metrics.accuracy"),
    "a newline in a hyperparameter name": (
        set_path("hyperparameters", {"a\nb": "x" * 500}),
        "hyperparameters.a\\nb",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_metadata_is_refused_and_the_old_model_serves(
    tmp_path: Path,
    trained: TrainedModel,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    change, reason = HOSTILE[case]
    store = open_store(str(tmp_path / "models"))
    store.publish(trained.estimator, trained.card, 5)
    watcher = new_watcher(str(tmp_path / "models"))
    model = watcher.model
    watcher.check()
    serving = model.serving
    assert serving is not None

    version = publish_document(store, trained, change)
    watcher.check()

    assert model.serving is serving
    assert reloads(watcher, "failure") == 1
    (line,) = [r.getMessage() for r in caplog.records if r.name == "predictor.watcher"]
    assert "\n" not in line
    assert len(line) < 500
    assert f"{version}/metadata.json" in line
    assert reason in line
    # The metadata endpoint's document still serialises.
    assert json.dumps(model.describe())
    features = [
        sample.labels["feature"]
        for metric in REGISTRY.collect()
        if metric.name == "iris_model_training_feature_mean_centimeters"
        for sample in metric.samples
        if sample.labels["model_name"] == model.name
    ]
    assert sorted(features) == sorted(trained.card.feature_names)


def read_peak(read: Callable[[], object]) -> int:
    """The most memory Python allocated while read ran."""
    tracemalloc.start()
    try:
        read()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_500_mb_pointer_is_refused_without_being_read(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = open_store(str(tmp_path / "models"))
    store.publish(trained.estimator, trained.card, 5)
    assert isinstance(store, DirectoryStore)
    # Sparse: a valid pointer followed by 500 MB of holes costs no disk.
    os.truncate(store.root / POINTER_NAME, 500 * MIB)

    def read() -> None:
        with pytest.raises(
            IntegrityError,
            match=f"latest.json: larger than the limit of {MAX_POINTER_BYTES} bytes",
        ):
            store.load_current()

    assert read_peak(read) < MIB


def test_an_oversized_pointer_is_refused_on_both_backends(
    store: ModelStore, trained: TrainedModel
) -> None:
    metadata = store.publish(trained.estimator, trained.card, 5)
    pointer = store.read(POINTER_NAME)
    assert pointer is not None
    # Valid JSON, padded past the limit: read whole, it would load.
    store.write_pointer(pointer + b" " * MAX_POINTER_BYTES)

    def read() -> None:
        with pytest.raises(IntegrityError, match="larger than the limit"):
            store.load_current()

    assert read_peak(read) < 4 * MAX_POINTER_BYTES
    store.write_pointer(pointer)
    loaded = store.load_current()
    assert loaded is not None
    assert loaded.metadata.version == metadata.version


def test_an_oversized_model_file_is_refused_before_it_is_read(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = open_store(str(tmp_path / "models"))
    metadata = store.publish(trained.estimator, trained.card, 5)
    assert isinstance(store, DirectoryStore)
    os.truncate(
        store.root / version_key(metadata.version, MODEL_FILE), MAX_MODEL_BYTES + 1
    )

    def read() -> None:
        with pytest.raises(
            IntegrityError,
            match=f"model.skops: larger than the limit of {MAX_MODEL_BYTES} bytes",
        ):
            store.load_current()

    assert read_peak(read) < 4 * MAX_METADATA_BYTES


def test_a_fifo_in_the_store_does_not_block_a_reader(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = open_store(str(tmp_path / "models"))
    store.publish(trained.estimator, trained.card, 5)
    assert isinstance(store, DirectoryStore)
    (store.root / POINTER_NAME).unlink()
    os.mkfifo(store.root / POINTER_NAME)

    with pytest.raises(IntegrityError, match=r"latest\.json: not a regular file"):
        store.load_current()


def test_a_version_that_stops_serving_leaves_no_metric_series(
    tmp_path: Path, trained: TrainedModel
) -> None:
    model = new_watcher(str(tmp_path)).model
    current = open_store(str(tmp_path)).publish(trained.estimator, trained.card, 5)
    renamed = {f"old_{name}": stats for name, stats in current.feature_stats.items()}
    previous = current.model_copy(
        update={
            "feature_names": list(renamed),
            "feature_stats": renamed,
            "features": [
                feature.model_copy(update={"name": f"old_{feature.name}"})
                for feature in current.features
            ],
        }
    )

    for metadata in (previous, current):
        model.serve(
            ServingModel(
                metadata,
                RequestSchema.of(current),
                "sklearn",
                trained.estimator.predict_proba,
            )
        )

    features = [
        sample.labels["feature"]
        for metric in REGISTRY.collect()
        if metric.name == "iris_model_training_feature_mean_centimeters"
        for sample in metric.samples
        if sample.labels["model_name"] == model.name
    ]
    assert sorted(features) == sorted(current.feature_names)
