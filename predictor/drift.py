"""Drift scores: how the rows a replica answered lately compare with training.

Each request puts its rows and predicted classes aside, and nothing more; they are
copied into a fixed-size NumPy ring buffer many requests at a time, and the scores
are computed from that window only when Prometheus scrapes, so their cost is per
scrape, not per request. Each replica scores its own window, and a new model
version starts an empty one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from predictor.metrics import FEW_ROWS, PENDING_BATCHES, PendingBatches
from training.store.layout import ModelMetadata
from training.store.reference import bin_counts

log = logging.getLogger(__name__)

# A bin with no live rows would make the PSI's logarithm infinite; count it as this
# share instead, the usual floor.
PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class FeatureReference:
    name: str
    bin_edges: NDArray[np.float64]
    bin_fractions: NDArray[np.float64]
    cdf_values: NDArray[np.float64]
    cdf_fractions: NDArray[np.float64]


@dataclass(frozen=True)
class DriftReference:
    """The training distribution of one model version, as arrays."""

    features: tuple[FeatureReference, ...]
    class_names: tuple[str, ...]
    class_priors: NDArray[np.float64] | None

    @classmethod
    def of(cls, metadata: ModelMetadata) -> DriftReference | None:
        """The reference published with a model; None if it was published without."""
        features = []
        for name in metadata.feature_names:
            stats = metadata.feature_stats.get(name)
            if stats is None or not stats.bin_edges or not stats.cdf_values:
                return None
            features.append(
                FeatureReference(
                    name,
                    np.asarray(stats.bin_edges, dtype=np.float64),
                    np.asarray(stats.bin_fractions, dtype=np.float64),
                    np.asarray(stats.cdf_values, dtype=np.float64),
                    np.asarray(stats.cdf_fractions, dtype=np.float64),
                )
            )
        priors = metadata.class_priors
        return cls(
            tuple(features),
            tuple(str(name) for name in metadata.class_names),
            np.asarray(priors) if len(priors) == len(metadata.class_names) else None,
        )


def psi(live_counts: NDArray[np.int64], expected: NDArray[np.float64]) -> float:
    """Population stability index: sum of (live - expected) * ln(live / expected)."""
    live = np.maximum(live_counts / live_counts.sum(), PSI_FLOOR)
    floored = np.maximum(expected, PSI_FLOOR)
    return float(np.sum((live - floored) * np.log(live / floored)))


def ks_statistic(column: NDArray[np.float64], feature: FeatureReference) -> float:
    """Largest distance between the live and the training CDF (Kolmogorov-Smirnov).

    Both CDFs are steps, so the distance is largest at one of their jump points:
    the live values and the recorded training percentiles.
    """
    ordered = np.sort(column)
    points = np.concatenate([feature.cdf_values, ordered])
    live = np.searchsorted(ordered, points, side="right") / len(ordered)
    step = np.searchsorted(feature.cdf_values, points, side="right") - 1
    training = np.where(step >= 0, feature.cdf_fractions[np.maximum(step, 0)], 0.0)
    return float(np.max(np.abs(live - training)))


class DriftWindow(Collector):
    """The last rows a model answered, and their drift scores at scrape time."""

    def __init__(self, model_name: str, capacity: int) -> None:
        self.model_name = model_name
        self.capacity = capacity
        # Held to write and read the window; not to put a small batch aside.
        self._lock = threading.Lock()
        self._pending = PendingBatches[tuple[NDArray[np.float64], NDArray[np.int64]]]()
        self._reference: DriftReference | None = None
        self._rows = np.empty((capacity, 0), dtype=np.float64)
        self._labels = np.empty(capacity, dtype=np.int64)
        self._next = 0
        self._filled = 0

    def use(self, reference: DriftReference | None) -> None:
        """Score against this reference from now on, starting from an empty window."""
        if self.capacity == 0:
            reference = None
        elif reference is None:
            log.warning("no drift reference model=%s scores=off", self.model_name)
        columns = len(reference.features) if reference else 0
        with self._lock:
            # Rows put aside so far belong to the window being emptied.
            self._pending.take()
            self._reference = reference
            self._rows = np.empty((self.capacity, columns), dtype=np.float64)
            self._next = 0
            self._filled = 0

    def record(self, rows: NDArray[np.float64], labels: NDArray[np.int64]) -> None:
        """Add a batch; a small one is kept until written, so it must not change."""
        if len(labels) <= FEW_ROWS:
            pending = self._pending
            pending.append((rows, labels))
            if len(pending) >= PENDING_BATCHES:
                with self._lock:
                    self._write_pending()
            return
        with self._lock:
            # The window keeps the latest rows: those put aside come first.
            self._write_pending()
            self._write(rows, labels)

    def _write_pending(self) -> None:
        if self._reference is None:
            # No scores (the window is off, or the model has no reference): what
            # was put aside is dropped without being joined.
            self._pending.take()
            return
        columns = self._rows.shape[1]
        joined = self._pending.take_joined(
            lambda rows, _labels: rows.shape[1] == columns
        )
        if joined is not None:
            self._write(*joined)

    def _write(self, rows: NDArray[np.float64], labels: NDArray[np.int64]) -> None:
        if self._reference is None or rows.shape[1] != self._rows.shape[1]:
            return
        count = len(rows)
        if count >= self.capacity:
            self._rows[:] = rows[-self.capacity :]
            self._labels[:] = labels[-self.capacity :]
            self._next, self._filled = 0, self.capacity
            return
        start, end = self._next, self._next + count
        if end <= self.capacity:
            self._rows[start:end] = rows
            self._labels[start:end] = labels
        else:
            head = self.capacity - start
            self._rows[start:] = rows[:head]
            self._labels[start:] = labels[:head]
            self._rows[: count - head] = rows[head:]
            self._labels[: count - head] = labels[head:]
        self._next = end % self.capacity
        if self._filled < self.capacity:
            self._filled = min(self.capacity, self._filled + count)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            self._write_pending()
            reference = self._reference
            rows = self._rows[: self._filled].copy()
            labels = self._labels[: self._filled].copy()
        name = [self.model_name]
        window = GaugeMetricFamily(
            "iris_drift_window_rows",
            "Rows in this replica's drift window: the scores mean little while few.",
            labels=["model_name"],
        )
        window.add_metric(name, len(rows))
        feature_psi = GaugeMetricFamily(
            "iris_feature_drift_psi",
            "Population stability index of each feature in the window against its "
            "training deciles: above 0.25, the distribution has moved.",
            labels=["model_name", "feature"],
        )
        feature_ks = GaugeMetricFamily(
            "iris_feature_drift_ks",
            "Kolmogorov-Smirnov statistic of each feature in the window against its "
            "training distribution: the largest gap between the two CDFs, 0 to 1.",
            labels=["model_name", "feature"],
        )
        prediction_psi = GaugeMetricFamily(
            "iris_prediction_drift_psi",
            "Population stability index of the predicted classes in the window "
            "against the training class priors.",
            labels=["model_name"],
        )
        window_classes = GaugeMetricFamily(
            "iris_prediction_window_class_ratio",
            "Share of each predicted class in the drift window.",
            labels=["model_name", "class"],
        )
        priors = GaugeMetricFamily(
            "iris_model_training_class_ratio",
            "Share of each class in the served model's training rows.",
            labels=["model_name", "class"],
        )
        if reference is not None and len(rows):
            for column, feature in enumerate(reference.features):
                values = rows[:, column]
                counts = bin_counts(feature.bin_edges, values)
                feature_psi.add_metric(
                    [*name, feature.name], psi(counts, feature.bin_fractions)
                )
                feature_ks.add_metric(
                    [*name, feature.name], ks_statistic(values, feature)
                )
            classes = len(reference.class_names)
            counts = np.bincount(labels, minlength=classes)[:classes]
            for class_name, share in zip(
                reference.class_names, (counts / len(labels)).tolist(), strict=True
            ):
                window_classes.add_metric([*name, class_name], share)
            if reference.class_priors is not None:
                prediction_psi.add_metric(name, psi(counts, reference.class_priors))
        if reference is not None and reference.class_priors is not None:
            for class_name, share in zip(
                reference.class_names, reference.class_priors.tolist(), strict=True
            ):
                priors.add_metric([*name, class_name], share)
        yield window
        yield feature_psi
        yield feature_ks
        yield prediction_psi
        yield window_classes
        yield priors


_registered: dict[str, DriftWindow] = {}


def drift_window(model_name: str, capacity: int) -> DriftWindow:
    """The one DriftWindow of a model name, registered with the default registry."""
    if model_name not in _registered:
        _registered[model_name] = DriftWindow(model_name, capacity)
        REGISTRY.register(_registered[model_name])
    return _registered[model_name]
