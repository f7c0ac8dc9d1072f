"""Serving throughput and latency: the predictor against the baseline, same run.

For each model (the default 50-tree forest, a 100-tree forest, the decision tree),
the baseline (bench/baseline.py: a plain kserve.Model calling scikit-learn, as
KServe's sklearnserver does, quiet logging) and then the predictor are started
pinned to core 0, and wrk, pinned to core 1, drives them: 1-row requests at
concurrency 1 and 16, and 1000-row requests. A bare ASGI app (bench/ceiling.py)
shows the ceiling, and the same app answering through the predictor's model and
KServe's ``Model.__call__`` (bench/floor.py) the floor that keeping them sets: both
run beside the predictor, on core 0 too, and the three are loaded in turn at 1 row,
c=16 over several rounds (``--rounds``), so that a busy neighbour hurts all alike;
each share is the median of the rounds. Cold start and
RSS after the load are measured too.

``make bench`` or ``python -m bench.serving [--seconds N] [--models rf50 ...]``.
Needs wrk (``apt-get install wrk``). Writes bench/results/serving.json and prints a
table with the ratio predictor/baseline for every measure, and the predictor's
1-row c=16 throughput, and the floor's, as a share of the ceiling's.

``--drift`` measures instead what the drift window costs the request path: the
predictor with its default window and with ``--drift_window_rows 0`` (off), both
running on core 0 and loaded in turn, 1-row requests, over several rounds so that
a busy neighbour hurts both alike. Writes bench/results/drift.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import timeit
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.servers import running
from predictor.drift import DriftReference, DriftWindow
from training.settings import TrainingSettings
from training.store import open_store
from training.store.layout import ModelMetadata, new_version
from training.train import TrainedModel, train

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "serving.json"
ROW = [6.8, 2.8, 4.8, 1.4]
MODELS = {
    "rf50 (default)": TrainingSettings(),
    "rf100": TrainingSettings(n_estimators=100),
    "dt": TrainingSettings(algorithm="decision_tree"),
}
SERVERS = {"baseline": "bench.baseline", "iris": "predictor"}


@dataclass(frozen=True)
class Load:
    name: str
    rows: int
    connections: int


LOADS = [
    Load("1 row, c=1", 1, 1),
    Load("1 row, c=16", 1, 16),
    Load("1000 rows, c=4", 1000, 4),
]


@dataclass(frozen=True)
class Measured:
    requests_per_second: float
    rows_per_second: float
    p50_ms: float
    p99_ms: float


def drive(port: int, load: Load, seconds: int, body_dir: Path) -> Measured:
    """Run wrk on core 1 against the server; every answer must be a 200."""
    body = body_dir / f"rows-{load.rows}.json"
    body.write_text(json.dumps({"instances": [ROW] * load.rows}))
    command = [
        "wrk",
        "-t1",
        f"-c{load.connections}",
        f"-d{seconds}s",
        "-s",
        str(HERE / "wrk.lua"),
        f"http://127.0.0.1:{port}/v1/models/iris:predict",
    ]
    output = subprocess.run(
        pinned(1, command),
        env={**os.environ, "WRK_BODY": str(body)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    summary = json.loads(output.strip().splitlines()[-1])
    if summary["socket_errors"] or summary["status_errors"]:
        raise RuntimeError(f"{load.name}: failed requests: {summary}")
    rate = summary["requests"] / (summary["duration_us"] / 1e6)
    return Measured(
        requests_per_second=rate,
        rows_per_second=rate * load.rows,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
    )


def pinned(cpu: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if shutil.which("taskset") else command


def rss_mb(port: int) -> float:
    """Resident memory of the process listening on port, in MB."""
    listening = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    pid = listening.split("pid=")[1].split(",")[0]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def measure(seconds: int, models: list[str], rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}",
        "seconds_per_load": seconds,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as ceiling:
        bodies = Path(scratch)
        ceiling_port = ceiling.enter_context(running("bench.ceiling", [], cpu=0))[0]
        drive(ceiling_port, LOADS[1], 2, bodies)
        results["ceiling"] = asdict(drive(ceiling_port, LOADS[1], seconds, bodies))
        for model, settings in MODELS.items():
            if model.split()[0] not in models:
                continue
            store = bodies / model.split()[0]
            trained = train(settings)
            open_store(str(store)).publish(trained.estimator, trained.card, 5)
            per_server: dict[str, Any] = {}
            for server, module in SERVERS.items():
                with running(module, ["--model_uri", str(store)], cpu=0) as (
                    port,
                    ready,
                ):
                    drive(port, LOADS[1], 2, bodies)
                    per_server[server] = {
                        "cold_start_s": ready,
                        **{
                            load.name: asdict(drive(port, load, seconds, bodies))
                            for load in LOADS
                        },
                        "rss_mb": rss_mb(port),
                    }
                    if server == "iris":
                        per_server[server]["against_ceiling"] = against_ceiling(
                            {"ceiling": ceiling_port, "iris": port},
                            store,
                            seconds,
                            rounds,
                            bodies,
                        )
                print(f"measured {model} {server}", flush=True)
            results["models"][model] = per_server
    return results


def against_ceiling(
    ports: dict[str, int], store: Path, seconds: int, rounds: int, bodies: Path
) -> list[dict[str, float]]:
    """1-row c=16 req/s of each server and of the floor, loaded in turn, per round."""
    with running("bench.floor", ["--model_uri", str(store)], cpu=0) as (floor, _):
        drive(floor, LOADS[1], 2, bodies)
        ports = {**ports, "floor": floor}
        return [
            {
                name: drive(port, LOADS[1], seconds, bodies).requests_per_second
                for name, port in ports.items()
            }
            for _ in range(rounds)
        ]


def table(results: dict[str, Any]) -> str:
    """A Markdown table: each measure for baseline and predictor, and their ratio."""
    lines = [
        f"{results['date']}, {results['machine']}, "
        f"{results['seconds_per_load']} s per load",
        "",
        "| model | measure | baseline | iris | iris/baseline |",
        "|---|---|---:|---:|---:|",
    ]
    for model, servers in results["models"].items():
        base, ours = servers["baseline"], servers["iris"]
        for load in LOADS:
            b, o = base[load.name], ours[load.name]
            rate = "requests_per_second" if load.rows == 1 else "rows_per_second"
            unit = "req/s" if load.rows == 1 else "rows/s"
            lines += [
                _row(model, f"{load.name} {unit}", b[rate], o[rate], "{:,.0f}"),
                _row(model, f"{load.name} p50 ms", b["p50_ms"], o["p50_ms"]),
                _row(model, f"{load.name} p99 ms", b["p99_ms"], o["p99_ms"]),
            ]
        lines += [
            _row(model, "cold start s", base["cold_start_s"], ours["cold_start_s"]),
            _row(model, "RSS MB", base["rss_mb"], ours["rss_mb"], "{:.0f}"),
        ]
    ceiling = results["ceiling"]
    lines += [
        "",
        f"Ceiling (bare ASGI app, constant answer), 1 row, c=16: "
        f"{ceiling['requests_per_second']:,.0f} req/s, p99 {ceiling['p99_ms']:.2f} ms",
    ]
    for model, servers in results["models"].items():
        for server in ("floor", "iris"):
            shares = [
                each[server] / each["ceiling"]
                for each in servers["iris"]["against_ceiling"]
            ]
            lines.append(
                f"{model}, {LOADS[1].name}, {server}/ceiling: "
                f"{statistics.median(shares):.0%} (median of {len(shares)} rounds: "
                + ", ".join(f"{share:.0%}" for share in shares)
                + ")"
            )
    return "\n".join(lines)


def _row(
    model: str, measure: str, base: float, ours: float, form: str = "{:.2f}"
) -> str:
    return (
        f"| {model} | {measure} | {form.format(base)} | {form.format(ours)} | "
        f"{ours / base:.2f}x |"
    )


DRIFT_VARIANTS = {"off": ["--drift_window_rows", "0"], "on": []}


def measure_drift(seconds: int, rounds: int) -> dict[str, Any]:
    """1-row loads against the predictor with and without its drift window."""
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}",
        "seconds_per_load": seconds,
        "rounds": [],
    }
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as servers:
        bodies = Path(scratch)
        trained = train(MODELS["rf50 (default)"])
        open_store(str(bodies / "store")).publish(trained.estimator, trained.card, 5)
        ports = {}
        for variant, extra in DRIFT_VARIANTS.items():
            args = ["--model_uri", str(bodies / "store"), *extra]
            ports[variant] = servers.enter_context(running("predictor", args, cpu=0))[0]
            drive(ports[variant], LOADS[1], 2, bodies)
        for _ in range(rounds):
            results["rounds"].append(
                {
                    load.name: {
                        variant: asdict(drive(port, load, seconds, bodies))
                        for variant, port in ports.items()
                    }
                    for load in LOADS[:2]
                }
            )
            print(f"measured drift round {len(results['rounds'])}", flush=True)
        results["in_process_us"] = drift_in_process(trained)
    return results


def drift_in_process(trained: TrainedModel) -> dict[str, float]:
    """What the window costs without HTTP around it: a 1-row record, and a scrape of
    a full window, in microseconds (the median of 7 repeats)."""
    metadata = ModelMetadata(
        **trained.card.model_dump(),
        version=new_version(),
        created_at=datetime.now(UTC),
        sklearn_version="-",
        python_version="-",
        model_sha256="0" * 64,
    )
    window = DriftWindow("bench", 1000)
    window.use(DriftReference.of(metadata))
    row, label = trained.split.x_train[:1], trained.split.y_train[:1]
    window.record(trained.split.x_train[np.arange(1000) % 120], np.zeros(1000, int))
    records = timeit.repeat(lambda: window.record(row, label), number=10_000, repeat=7)
    scrapes = timeit.repeat(lambda: list(window.collect()), number=20, repeat=7)
    return {
        "record_1_row_us": statistics.median(records) / 10_000 * 1e6,
        "scrape_full_window_us": statistics.median(scrapes) / 20 * 1e6,
    }


def drift_table(results: dict[str, Any]) -> str:
    """Per 1-row load: the median over rounds of req/s and p99, off and on."""
    lines = [
        f"{results['date']}, {results['machine']}, "
        f"{results['seconds_per_load']} s per load, {len(results['rounds'])} rounds",
        "",
        "| load | measure | drift off | drift on | on/off |",
        "|---|---|---:|---:|---:|",
    ]
    for load in LOADS[:2]:
        for measure, form in (("requests_per_second", "{:,.0f}"), ("p99_ms", "{:.2f}")):
            off, on = (
                statistics.median(
                    r[load.name][variant][measure] for r in results["rounds"]
                )
                for variant in DRIFT_VARIANTS
            )
            lines.append(
                f"| {load.name} | {measure} | {form.format(off)} | "
                f"{form.format(on)} | {on / off:.3f}x |"
            )
    spread = {
        load.name: [
            r[load.name]["on"]["requests_per_second"]
            / r[load.name]["off"]["requests_per_second"]
            for r in results["rounds"]
        ]
        for load in LOADS[:2]
    }
    lines += ["", "on/off req/s per round (the noise):"]
    lines += [
        f"- {name}: " + ", ".join(f"{ratio:.3f}" for ratio in ratios)
        for name, ratios in spread.items()
    ]
    cost = results["in_process_us"]
    lines += [
        "",
        f"In process: recording a 1-row request {cost['record_1_row_us']:.2f} us, "
        f"scoring a full window at a scrape {cost['scrape_full_window_us']:.0f} us.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each load")
    names = [model.split()[0] for model in MODELS]
    parser.add_argument(
        "--models", nargs="+", choices=names, default=names, help="models to measure"
    )
    parser.add_argument(
        "--drift",
        action="store_true",
        help="measure the drift window's cost: the predictor with it and without",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds of the ceiling against the predictor, or of --drift",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench.serving needs wrk: apt-get install wrk")
    if args.drift:
        drift = measure_drift(args.seconds, args.rounds)
        written = RESULTS.with_name("drift.json")
        written.parent.mkdir(exist_ok=True)
        written.write_text(json.dumps(drift, indent=2))
        print(drift_table(drift))
        print(f"\nwritten to {written}")
        return
    results = measure(args.seconds, args.models, args.rounds)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
