"""The predictor's Prometheus metrics, beside KServe's request_*_seconds histograms.

Per-row statistics (classes, confidence, feature values) are counted with NumPy a
batch at a time and exposed by a collector at scrape time: observing a 1000-row
batch through prometheus_client one value at a time would cost more than the
prediction itself. Small batches are only put aside by the request and counted a
few hundred at a time, as a few NumPy calls for one row cost more than the rest of
the bookkeeping. Their labels (classes, features) and the feature buckets follow
the served model's schema; metric names stay as dashboards know them.

Request durations are counted the same way (``Durations``): KServe's step histograms
(``BatchedHistogram``, put in place of KServe's own by ``predictor.internals``) and
the HTTP and gRPC request metrics (``RequestTimings``). Each is exported with the
samples prometheus_client's Counter and Histogram of the same name would give.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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
# Batches of up to this many rows are put aside and counted many at a time.
FEW_ROWS = 8
# Counting this many small batches at once costs a fraction of a microsecond each.
PENDING_BATCHES = 512
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
# Durations put aside by one series before they are counted (and at every scrape).
PENDING_DURATIONS = 4096

_T = TypeVar("_T")
_Pending = TypeVar("_Pending", bound=tuple[NDArray[Any], ...])
# Rows, predicted labels and their confidence, as one request's batch.
_Batch = tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]


def _le_labels(edges: Sequence[float]) -> list[str]:
    """The ``le`` of each bucket, as prometheus_client writes it."""
    return [*map(floatToGoString, edges), "+Inf"]


def _cumulative(
    bounds: Sequence[str], counts: NDArray[np.int64]
) -> list[tuple[str, float]]:
    return list(zip(bounds, np.cumsum(counts).astype(float).tolist(), strict=True))


class _BatchHistograms:
    """Bucket counts and sums of one histogram per column, added a matrix at a time.

    ``edges`` is (columns, buckets): each column has its own upper bounds.
    """

    def __init__(self, edges: NDArray[np.float64]) -> None:
        self.edges = edges
        columns, slots = edges.shape[0], edges.shape[1] + 1
        self.counts = np.zeros((columns, slots), dtype=np.int64)
        # Large batches are summed each at once, small ones row after row: the two
        # sums are kept apart so that either adds up exactly as it always has.
        self.batch_totals = np.zeros(columns, dtype=np.float64)
        self.row_totals = np.zeros(columns, dtype=np.float64)

    def add(self, values: NDArray[np.float64]) -> None:
        """Count an (N, columns) matrix of one large batch."""
        self._count(values)
        self.batch_totals += values.sum(axis=0)

    def add_row_by_row(self, values: NDArray[np.float64]) -> None:
        """Count an (N, columns) matrix of small batches, summed in row order."""
        self._count(values)
        # accumulate adds one row after another, as a Python loop would.
        self.row_totals = np.add.accumulate(
            np.vstack([self.row_totals, values]), axis=0
        )[-1]

    def _count(self, values: NDArray[np.float64]) -> None:
        slots = self.counts.shape[1]
        for column, edges in enumerate(self.edges):
            # side="left": a value equal to an edge is in that edge's bucket (le).
            where = np.searchsorted(edges, values[:, column], side="left")
            self.counts[column] += np.bincount(where, minlength=slots)

    def total(self, column: int) -> float:
        return float(self.batch_totals[column]) + float(self.row_totals[column])

    def buckets(self, column: int) -> list[tuple[str, float]]:
        # These metrics' le labels are written with :g, as their series have always
        # been named, not as prometheus_client writes them (_le_labels).
        bounds = [*(f"{edge:g}" for edge in self.edges[column]), "+Inf"]
        return _cumulative(bounds, self.counts[column])


def feature_edges(metadata: ModelMetadata) -> NDArray[np.float64]:
    """Per feature, its training range in FEATURE_BUCKETS equal buckets."""
    edges = []
    for feature in metadata.features:
        stats = metadata.feature_stats[feature.name]
        edges.append(np.linspace(stats.min, stats.max, FEATURE_BUCKETS + 1))
    return np.array(edges, dtype=np.float64)


class Pending(list[_T]):
    """Values put aside by request handlers, to be counted in bulk later.

    Handlers only append, which is atomic, so they need no lock; whoever counts
    (under its own lock) takes the values it has seen, from the front, and
    leaves any appended meanwhile for the next count.
    """

    def take(self) -> list[_T]:
        taken = len(self)
        values = self[:taken]
        del self[:taken]
        return values


class PendingBatches(Pending[_Pending]):
    """Small batches, each a tuple of arrays, put aside by request handlers."""

    def take_joined(self, fits: Callable[..., bool]) -> tuple[NDArray[Any], ...] | None:
        """Take the batches and join them array by array, keeping those that fit.

        ``fits`` is asked of the joined arrays first, the usual case; only if they
        do not fit, or cannot be joined, is it asked of each batch. None when no
        batch was put aside or none fits.
        """
        batches = self.take()
        if not batches:
            return None
        with contextlib.suppress(ValueError):  # rows of widths from two schemas
            joined = tuple(map(np.concatenate, zip(*batches, strict=True)))
            if fits(*joined):
                return joined
        kept = [batch for batch in batches if fits(*batch)]
        if not kept:
            return None
        return tuple(map(np.concatenate, zip(*kept, strict=True)))


class Durations:
    """One histogram series whose observations are counted in bulk.

    prometheus_client's Histogram takes two locks per observation, and its
    ``time()`` makes a Timer: for a one-row request, the largest part of what the
    predictor added to the floor (bench/README.md, fourth round). Here an
    observation is one list append; the durations put aside are counted when
    PENDING_DURATIONS wait and at every scrape, and added to the sum in the order
    they came, as prometheus_client adds them.
    """

    __slots__ = ("_histogram", "_lock", "_pending")

    def __init__(self, edges: Sequence[float]) -> None:
        self._lock = threading.Lock()
        self._pending = Pending[float]()
        self._histogram = _BatchHistograms(np.array([edges], dtype=np.float64))

    def observe(self, seconds: float) -> None:
        pending = self._pending
        pending.append(seconds)
        if len(pending) >= PENDING_DURATIONS:
            self.counted()

    def time(self) -> _Timing:
        """Observe how long a ``with`` block takes."""
        return _Timing(self)

    def counted(self) -> tuple[NDArray[np.int64], float]:
        """Each bucket's own count (the last is +Inf's) and the sum, counted so far."""
        with self._lock:
            values = self._pending.take()
            if values:
                self._histogram.add_row_by_row(np.array(values)[:, np.newaxis])
            return self._histogram.counts[0].copy(), self._histogram.total(0)


class _Timing:
    __slots__ = ("_durations", "_started")

    def __init__(self, durations: Durations) -> None:
        self._durations = durations
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self._durations.observe(max(time.perf_counter() - self._started, 0.0))


class BatchedHistogram(Collector):
    """A labelled Histogram whose children are ``Durations``.

    ``labels()`` takes label values as prometheus_client's does, and looks each
    child up once; what ``collect`` yields is what a Histogram of the same name,
    labels and buckets, observing the same values, yields.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        edges: Sequence[float],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.edges = tuple(edges)
        self._bounds = _le_labels(self.edges)
        # By the values of the labels, and by the arguments labels() was called with.
        self._children: dict[tuple[str, ...], Durations] = {}
        self._called: dict[tuple[object, ...], Durations] = {}

    def labels(self, *values: str, **labels: str) -> Durations:
        called = (values, *labels.items())
        child = self._called.get(called)
        if child is None:
            child = self._called.setdefault(called, self._child(values, labels))
        return child

    def _child(self, values: tuple[str, ...], labels: dict[str, str]) -> Durations:
        if labels:
            if values or sorted(labels) != sorted(self.labelnames):
                raise ValueError(f"{self.name} takes the labels {self.labelnames}")
            values = tuple(labels[name] for name in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {self.labelnames}")
        key = tuple(map(str, values))
        return self._children.setdefault(key, Durations(self.edges))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            self.name, self.documentation, labels=list(self.labelnames)
        )
        for values, child in list(self._children.items()):
            counts, total = child.counted()
            family.add_metric(list(values), _cumulative(self._bounds, counts), total)
        yield family


class RequestTimings(Collector):
    """Requests answered, by ``label`` and code, and how long each took, by ``label``.

    Exported with the samples of the Counter ``<requests>{label, code}`` and the
    Histogram ``<durations>{label}`` prometheus_client would export, but a request
    is two list appends, its duration to its label's ``Durations`` (so that the sum
    adds up in the order requests came) and its code beside it, instead of an
    update of each metric under its locks.
    """

    def __init__(
        self,
        requests: tuple[str, str],
        durations: tuple[str, str],
        label: str,
        edges: Sequence[float],
    ) -> None:
        self.requests, self.durations, self.label = requests, durations, label
        self.edges = tuple(edges)
        self._bounds = _le_labels(self.edges)
        self._series: dict[str, tuple[Durations, Pending[str]]] = {}
        # Held to count the codes put aside and to read the counts.
        self._lock = threading.Lock()
        self._answered: dict[tuple[str, str], int] = {}

    def observe(self, value: str, code: str, seconds: float) -> None:
        series = self._series.get(value)
        if series is None:
            series = self._series.setdefault(
                value, (Durations(self.edges), Pending[str]())
            )
        durations, codes = series
        codes.append(code)
        if len(codes) >= PENDING_DURATIONS:
            self._count_codes(value, codes)
        durations.observe(seconds)

    def _count_codes(self, value: str, codes: Pending[str]) -> None:
        with self._lock:
            for code, count in collections.Counter(codes.take()).items():
                self._answered[value, code] = (
                    self._answered.get((value, code), 0) + count
                )

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        durations = HistogramMetricFamily(*self.durations, labels=[self.label])
        for value, (timed, codes) in list(self._series.items()):
            self._count_codes(value, codes)
            counts, total = timed.counted()
            durations.add_metric([value], _cumulative(self._bounds, counts), total)
        requests = CounterMetricFamily(*self.requests, labels=[self.label, "code"])
        with self._lock:
            answered = list(self._answered.items())
        for (value, code), count in answered:
            requests.add_metric([value, code], float(count))
        yield requests
        yield durations


HTTP_TIMINGS = RequestTimings(
    ("iris_http_requests", "HTTP requests answered, by route and status code."),
    (
        "iris_http_request_duration_seconds",
        "Time from request to the end of the response, by route.",
    ),
    "route",
    LATENCY_BUCKETS,
)
GRPC_TIMINGS = RequestTimings(
    ("iris_grpc_requests", "gRPC calls answered, by method and status code."),
    (
        "iris_grpc_request_duration_seconds",
        "Time from call to answer, by gRPC method.",
    ),
    "method",
    LATENCY_BUCKETS,
)
REGISTRY.register(HTTP_TIMINGS)
REGISTRY.register(GRPC_TIMINGS)


class PredictionStats(Collector):
    """What the model was asked and what it answered, row by row.

    ``record`` puts a small batch aside; the batches put aside are counted in bulk
    when PENDING_BATCHES wait, before a version swap and at scrape time, so a 1-row
    request costs a list append instead of a dozen NumPy calls.
    """

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        # Held to count and to read the counts; not to put a small batch aside.
        self._lock = threading.Lock()
        self._pending = PendingBatches[_Batch]()
        self._class_names: list[str] = []
        self._feature_names: list[str] = []
        self._classes = np.zeros(0, dtype=np.int64)
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
            # Batches put aside so far were answered by the version being replaced.
            self._count_pending()
            if (
                class_names == self._class_names
                and feature_names == self._feature_names
                and np.array_equal(edges, self._features.edges)
            ):
                return
            self._class_names, self._feature_names = class_names, feature_names
            self._classes = np.zeros(len(class_names), dtype=np.int64)
            self._confidence = _BatchHistograms(np.array([CONFIDENCE_BUCKETS]))
            self._features = _BatchHistograms(edges)

    def record(
        self,
        rows: NDArray[np.float64],
        labels: NDArray[np.int64],
        confidence: NDArray[np.float64],
    ) -> None:
        """Count a batch; a small one is kept until then, so it must not change."""
        if len(labels) <= FEW_ROWS:
            pending = self._pending
            pending.append((rows, labels, confidence))
            if len(pending) >= PENDING_BATCHES:
                with self._lock:
                    self._count_pending()
            return
        with self._lock:
            if self._fits(rows, labels):
                self._classes += np.bincount(labels, minlength=len(self._classes))
                self._confidence.add(confidence[:, np.newaxis])
                self._features.add(rows)

    def _fits(self, rows: NDArray[np.float64], labels: NDArray[np.int64]) -> bool:
        """False for rows answered by a version being replaced by another schema."""
        return rows.shape[1] == len(self._feature_names) and (
            len(labels) == 0 or int(labels.max()) < len(self._classes)
        )

    def _count_pending(self) -> None:
        joined = self._pending.take_joined(
            lambda rows, labels, _confidence: self._fits(rows, labels)
        )
        if joined is None:
            return
        rows, labels, confidence = joined
        self._classes += np.bincount(labels, minlength=len(self._classes))
        self._confidence.add_row_by_row(confidence[:, np.newaxis])
        self._features.add_row_by_row(rows)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        with self._lock:
            self._count_pending()
            predictions = CounterMetricFamily(
                "iris_predictions",
                "Rows predicted, by predicted class.",
                labels=["model_name", "class"],
            )
            for name, count in zip(
                self._class_names, self._classes.tolist(), strict=True
            ):
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
