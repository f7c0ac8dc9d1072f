"""The predictor's Prometheus metrics, beside KServe's request_*_seconds histograms.

Per-row statistics (classes, confidence, feature values) are counted with NumPy a
batch at a time and exposed by a collector at scrape time: observing a 1000-row
batch through prometheus_client one value at a time would cost more than the
prediction itself. Their labels (classes, features) and the feature buckets follow
the served model's schema; metric names stay as dashboards know them.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray
from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from training.store import ModelMetadata

# A *_created series beside every counter doubles what each scrape reads and stores.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
)
# Up to this many rows, a batch is counted in plain Python.
_FEW_ROWS = 8
CONFIDENCE_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
# Each feature's training range cut into this many equal buckets shows drift.
FEATURE_BUCKETS = 8

MODEL_INFO = Info("iris_model", "The model version being served.", ["model_name"])
MODEL_READY = Gauge(
    "iris_model_ready",
    "1 while a verified model is loaded and serving.",
    ["model_name"],
)
MODEL_TRAINED = Gauge(
    "iris_model_trained_timestamp_seconds",
    "When the served model was trained, as a Unix time.",
    ["model_name"],
)
MODEL_FEATURE_MEAN = Gauge(
    "iris_model_training_feature_mean_centimeters",
    "Mean of each feature in the served model's training data: the baseline for drift.",
    ["model_name", "feature"],
)
MODEL_RELOADS = Counter(
    "iris_model_reloads",
    "Attempts to load a newly published version, by result.",
    ["model_name", "result"],
)
HTTP_REQUESTS = Counter(
    "iris_http_requests",
    "HTTP requests answered, by route and status code.",
    ["route", "code"],
)
HTTP_DURATION = Histogram(
    "iris_http_request_duration_seconds",
    "Time from request to the end of the response, by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)

GRPC_REQUESTS = Counter(
    "iris_grpc_requests",
    "gRPC calls answered, by method and status code.",
    ["method", "code"],
)
GRPC_DURATION = Histogram(
    "iris_grpc_request_duration_seconds",
    "Time from call to answer, by gRPC method.",
    ["method"],
    buckets=LATENCY_BUCKETS,
)


class _BatchHistograms:
    """Bucket counts and sums of one histogram per column, added a matrix at a time.

    ``edges`` is (columns, buckets): each column has its own upper bounds.
    """

    def __init__(self, edges: NDArray[np.float64]) -> None:
        self.edges = edges
        columns, slots = edges.shape[0], edges.shape[1] + 1
        self.counts = np.zeros((columns, slots), dtype=np.int64)
        self.totals = np.zeros(columns, dtype=np.float64)
        self._offsets = np.arange(columns) * slots
        # Small batches are counted in plain lists: a bisect per value costs far
        # less than the NumPy calls a matrix needs, which dominate for one row.
        self._edge_lists = edges.tolist()
        self._few_counts = [[0] * slots for _ in range(columns)]
        self._few_totals = [0.0] * columns

    def add(self, values: NDArray[np.float64]) -> None:
        """Count an (N, columns) matrix: one comparison and one bincount in all."""
        if len(values) <= _FEW_ROWS:
            self._add_few(values.tolist())
            return
        # Edges strictly below a value: a value equal to an edge is in its bucket (le).
        slots = (values[:, :, np.newaxis] > self.edges).sum(axis=2) + self._offsets
        self.counts += np.bincount(slots.ravel(), minlength=self.counts.size).reshape(
            self.counts.shape
        )
        self.totals += values.sum(axis=0)

    def _add_few(self, rows: list[list[float]]) -> None:
        for row in rows:
            for column, value in enumerate(row):
                # bisect_left: a value equal to an edge is in that edge's bucket (le).
                self._few_counts[column][
                    bisect_left(self._edge_lists[column], value)
                ] += 1
                self._few_totals[column] += value

    def total(self, column: int) -> float:
        return float(self.totals[column]) + self._few_totals[column]

    def buckets(self, column: int) -> list[tuple[str, float]]:
        counts = self.counts[column] + np.array(self._few_counts[column])
        cumulative = np.cumsum(counts)
        bounds = [*(f"{edge:g}" for edge in self.edges[column]), "+Inf"]
        return list(zip(bounds, cumulative.astype(float).tolist(), strict=True))


def feature_edges(metadata: ModelMetadata) -> NDArray[np.float64]:
    """Per feature, its training range in FEATURE_BUCKETS equal buckets."""
    edges = []
    for feature in metadata.features:
        stats = metadata.feature_stats[feature.name]
        edges.append(np.linspace(stats.min, stats.max, FEATURE_BUCKETS + 1))
    return np.array(edges, dtype=np.float64)


class PredictionStats(Collector):
    """What the model was asked and what it answered, row by row."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._lock = threading.Lock()
        self._class_names: list[str] = []
        self._feature_names: list[str] = []
        self._classes = np.zeros(0, dtype=np.int64)
        self._few_classes: list[int] = []
        self._confidence = _BatchHistograms(np.array([CONFIDENCE_BUCKETS]))
        self._features = _BatchHistograms(np.zeros((0, FEATURE_BUCKETS + 1)))

    def follow(self, metadata: ModelMetadata) -> None:
        """Count by this model's classes and features from now on.

        A version with the same classes, features and training ranges goes on
        counting; any other starts its series afresh.
        """
        class_names = [str(name) for name in metadata.classes]
        feature_names = [feature.name for feature in metadata.features]
        edges = feature_edges(metadata)
        with self._lock:
            if (
                class_names == self._class_names
                and feature_names == self._feature_names
                and np.array_equal(edges, self._features.edges)
            ):
                return
            self._class_names, self._feature_names = class_names, feature_names
            self._classes = np.zeros(len(class_names), dtype=np.int64)
            self._few_classes = [0] * len(class_names)
            self._confidence = _BatchHistograms(np.array([CONFIDENCE_BUCKETS]))
            self._features = _BatchHistograms(edges)

    def record(
        self,
        rows: NDArray[np.float64],
        labels: NDArray[np.int64],
        confidence: NDArray[np.float64],
    ) -> None:
        few = labels.tolist() if len(labels) <= _FEW_ROWS else None
        highest = max(few) if few is not None else int(labels.max())
        with self._lock:
            # A request answered by a version being replaced by another schema.
            if rows.shape[1] != len(self._feature_names) or highest >= len(
                self._classes
            ):
                return
            if few is not None:
                for label in few:
                    self._few_classes[label] += 1
            else:
                self._classes += np.bincount(labels, minlength=len(self._classes))
            self._confidence.add(confidence[:, np.newaxis])
            self._features.add(rows)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        with self._lock:
            predictions = CounterMetricFamily(
                "iris_predictions",
                "Rows predicted, by predicted class.",
                labels=["model_name", "class"],
            )
            counts = self._classes + np.array(self._few_classes, dtype=np.int64)
            for name, count in zip(self._class_names, counts.tolist(), strict=True):
                predictions.add_metric([self.model_name, name], count)
            confidence = HistogramMetricFamily(
                "iris_prediction_confidence_ratio",
                "Probability of the predicted class, per row.",
                labels=["model_name"],
            )
            confidence.add_metric(
                [self.model_name],
                self._confidence.buckets(0),
                self._confidence.total(0),
            )
            features = HistogramMetricFamily(
                "iris_feature_value_centimeters",
                "Measurements the model was asked about, per feature: compare with "
                "the training distribution to see drift.",
                labels=["model_name", "feature"],
            )
            for column, name in enumerate(self._feature_names):
                features.add_metric(
                    [self.model_name, name],
                    self._features.buckets(column),
                    self._features.total(column),
                )
        yield predictions
        yield confidence
        yield features


_registered: dict[str, PredictionStats] = {}


def prediction_stats(model_name: str) -> PredictionStats:
    """The one PredictionStats of a model name, registered with the default registry."""
    if model_name not in _registered:
        _registered[model_name] = PredictionStats(model_name)
        REGISTRY.register(_registered[model_name])
    return _registered[model_name]
