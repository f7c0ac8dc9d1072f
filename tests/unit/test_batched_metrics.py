"""Durations counted in bulk are exported as prometheus_client's metrics would be."""

from __future__ import annotations

import random
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from predictor import metrics
from predictor.metrics import (
    LATENCY_BUCKETS,
    PENDING_DURATIONS,
    BatchedHistogram,
    RequestTimings,
)

EDGES = Histogram.DEFAULT_BUCKETS[:-1]
# On the edges, just past them, far beyond the last, and zero.
AWKWARD = [0.0, 0.005, 0.0050000001, 1e-9, 0.75, 10.0, 10.5, 1e9]


@pytest.fixture
def few_pending(monkeypatch: pytest.MonkeyPatch) -> int:
    """Values are counted 64 at a time: each series passes the threshold many times."""
    monkeypatch.setattr(metrics, "PENDING_DURATIONS", 64)
    return 64


def samples(registry: CollectorRegistry) -> list[tuple[str, tuple[object, ...], str]]:
    """Each sample as the exposition writes it: name, labels and value, sorted."""
    text = generate_latest(registry).decode()
    return sorted(
        (sample.name, tuple(sorted(sample.labels.items())), repr(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


def test_a_batched_histogram_exports_what_a_histogram_would(few_pending: int) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("step_seconds", "a step", ["model_name"], registry=theirs)
    batched = BatchedHistogram("step_seconds", "a step", ["model_name"], EDGES)
    ours.register(batched)
    draw = random.Random(7)  # noqa: S311 - a repeatable draw
    values = AWKWARD + [draw.expovariate(50) for _ in range(few_pending * 50 + 9)]
    for index, value in enumerate(values):
        name = "a" if index % 3 else "b"
        histogram.labels(model_name=name).observe(value)
        # Both ways of naming the label reach the same series.
        (
            batched.labels(model_name=name) if index % 2 else batched.labels(name)
        ).observe(value)
    assert generate_latest(ours) == generate_latest(theirs)
    # Counted twice, nothing is counted twice.
    assert generate_latest(ours) == generate_latest(theirs)


def test_time_observes_how_long_the_block_took() -> None:
    batched = BatchedHistogram("step_seconds", "a step", ["model_name"], EDGES)
    child = batched.labels(model_name="a")
    with child.time():
        threading.Event().wait(0.02)
    with pytest.raises(KeyError), child.time():
        raise KeyError("an error is timed too")
    counts, total = child.counted()
    assert counts.sum() == 2
    assert 0.02 <= total < 1


def test_a_batched_histogram_refuses_labels_it_does_not_have() -> None:
    batched = BatchedHistogram("step_seconds", "a step", ["model_name"], EDGES)
    with pytest.raises(ValueError, match="model_name"):
        batched.labels(model="a")
    with pytest.raises(ValueError, match="model_name"):
        batched.labels("a", "b")


def test_request_timings_export_what_a_counter_and_a_histogram_would(
    few_pending: int,
) -> None:
    """The same samples, each sum added in the order requests came; the series come
    route by route, where prometheus_client writes them in the order first seen."""
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    requests = Counter("web_requests", "requests", ["route", "code"], registry=theirs)
    durations = Histogram(
        "web_seconds", "durations", ["route"], buckets=LATENCY_BUCKETS, registry=theirs
    )
    timings = RequestTimings(
        ("web_requests", "requests"),
        ("web_seconds", "durations"),
        "route",
        LATENCY_BUCKETS,
    )
    ours.register(timings)
    draw = random.Random(11)  # noqa: S311 - a repeatable draw
    for _ in range(few_pending * 50 + 5):
        route, code = draw.choice(["/a", "/b"]), draw.choice(["200", "400", "503"])
        seconds = draw.expovariate(100)
        requests.labels(route, code).inc()
        durations.labels(route).observe(seconds)
        timings.observe(route, code, seconds)
    assert samples(ours) == samples(theirs)
    assert samples(ours) == samples(theirs)


def test_observations_from_many_threads_are_all_counted() -> None:
    timings = RequestTimings(("r", "r"), ("d", "d"), "route", LATENCY_BUCKETS)
    threads, each = 4, PENDING_DURATIONS * 3

    def observe() -> None:
        for _ in range(each):
            timings.observe("/a", "200", 0.001)

    started = [threading.Thread(target=observe) for _ in range(threads)]
    for thread in started:
        thread.start()
    while any(thread.is_alive() for thread in started):
        list(timings.collect())
    for thread in started:
        thread.join()
    families = {family.name: family for family in timings.collect()}
    (count,) = (s.value for s in families["r"].samples if s.name == "r_total")
    assert count == threads * each
