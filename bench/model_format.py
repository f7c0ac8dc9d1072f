"""How long it takes to load a published model: skops (safe) against joblib (pickle).

Run with ``make bench`` or ``python -m bench.model_format``. Prints file sizes and
load-time percentiles for the models training makes, and the ratio skops/joblib.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from functools import partial

import joblib

from training.settings import TrainingSettings
from training.store.model_file import dump_model, load_model
from training.train import train

MODELS = {
    "random_forest 50 trees (default)": TrainingSettings(),
    "random_forest 100 trees": TrainingSettings(n_estimators=100),
    "decision_tree": TrainingSettings(algorithm="decision_tree"),
}
REPEATS = 30


def load_joblib(data: bytes) -> object:
    return joblib.load(io.BytesIO(data))


def timings_ms(load: Callable[[], object]) -> list[float]:
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        load()
        samples.append((time.perf_counter() - start) * 1000)
    return sorted(samples)


def main() -> None:
    print(f"{'model':<34} {'format':<7} {'bytes':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, settings in MODELS.items():
        estimator = train(settings).estimator
        skops_bytes = dump_model(estimator)
        buffer = io.BytesIO()
        joblib.dump(estimator, buffer, compress=3)
        joblib_bytes = buffer.getvalue()
        results = {
            "skops": (
                skops_bytes,
                timings_ms(partial(load_model, skops_bytes, "bench")),
            ),
            "joblib": (
                joblib_bytes,
                timings_ms(partial(load_joblib, joblib_bytes)),
            ),
        }
        for fmt, (data, samples) in results.items():
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
            print(
                f"{name:<34} {fmt:<7} {len(data):>9} "
                f"{statistics.median(samples):>8.2f} {p99:>8.2f}"
            )
        ratio = statistics.median(results["skops"][1]) / statistics.median(
            results["joblib"][1]
        )
        print(f"{name:<34} skops/joblib load time ratio: {ratio:.1f}x")


if __name__ == "__main__":
    main()
