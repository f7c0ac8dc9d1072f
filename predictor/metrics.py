"""The predictor's Prometheus metrics, beside KServe's request_*_seconds histograms.

Per-row statistics (classes, confidence, feature values) are counted with NumPy a
batch at a time and exposed by a collector at scrape time: observing a 1000-row
batch through prometheus_client one value at a time would cost more than the
prediction itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

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

from training.data import CLASS_NAMES, FEATURE_NAMES

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
CONFIDENCE_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
# Iris measurements run from 0.1 to 7.9 cm; half-centimetre buckets show drift.
FEATURE_BUCKETS_CM = tuple(float(edge) for edge in np.arange(0.5, 8.01, 0.5))

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
    """Bucket counts and sums of one histogram per column, added a matrix at a time."""

    def __init__(self, edges: Sequence[float], columns: int) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        slots = len(edges) + 1
        self.counts = np.zeros((columns, slots), dtype=np.int64)
        self.totals = np.zeros(columns, dtype=np.float64)
        self._offsets = np.arange(columns) * slots

    def add(self, values: NDArray[np.float64]) -> None:
        """Count an (N, columns) matrix: one searchsorted and one bincount in all."""
        # side="left": a value equal to an edge belongs to that edge's bucket (le).
        slots = np.searchsorted(self.edges, values, side="left") + self._offsets
        self.counts += np.bincount(slots.ravel(), minlength=self.counts.size).reshape(
            self.counts.shape
        )
        self.totals += values.sum(axis=0)

    def buckets(self, column: int) -> list[tuple[str, float]]:
        cumulative = np.cumsum(self.counts[column])
        bounds = [*(f"{edge:g}" for edge in self.edges), "+Inf"]
        return list(zip(bounds, cumulative.astype(float).tolist(), strict=True))


class PredictionStats(Collector):
    """What the model was asked and what it answered, row by row."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._lock = threading.Lock()
        self._classes = np.zeros(len(CLASS_NAMES), dtype=np.int64)
        self._confidence = _BatchHistograms(CONFIDENCE_BUCKETS, 1)
        self._features = _BatchHistograms(FEATURE_BUCKETS_CM, len(FEATURE_NAMES))

    def record(
        self,
        rows: NDArray[np.float64],
        labels: NDArray[np.int64],
        confidence: NDArray[np.float64],
    ) -> None:
        with self._lock:
            self._classes += np.bincount(labels, minlength=len(CLASS_NAMES))
            self._confidence.add(confidence[:, np.newaxis])
            self._features.add(rows)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        with self._lock:
            predictions = CounterMetricFamily(
                "iris_predictions",
                "Rows predicted, by predicted class.",
                labels=["model_name", "class"],
            )
            for name, count in zip(CLASS_NAMES, self._classes.tolist(), strict=True):
                predictions.add_metric([self.model_name, name], count)
            confidence = HistogramMetricFamily(
                "iris_prediction_confidence_ratio",
                "Probability of the predicted class, per row.",
                labels=["model_name"],
            )
            confidence.add_metric(
                [self.model_name],
                self._confidence.buckets(0),
                float(self._confidence.totals[0]),
            )
            features = HistogramMetricFamily(
                "iris_feature_value_centimeters",
                "Measurements the model was asked about, per feature: compare with "
                "the training distribution to see drift.",
                labels=["model_name", "feature"],
            )
            for column, name in enumerate(FEATURE_NAMES):
                features.add_metric(
                    [self.model_name, name],
                    self._features.buckets(column),
                    float(self._features.totals[column]),
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
