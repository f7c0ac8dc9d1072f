"""Overload: the predictor shedding past ``max_in_flight`` against the same predictor
without an in-flight limit (today's behaviour without shedding), in the same run.

Each server is pinned to core 0 (bench/variants.py: ``iris`` and ``unlimited``) and
runs ``--evaluator sklearn``, so that a one-row prediction costs milliseconds and
the client, in this process, can offer 4x what the server answers (with the grid,
one Python client cannot). First each server's capacity is measured closed-loop
(16 connections, one request at a time each); the higher of the two is "capacity".
Then each server is driven open-loop at 2x and 4x capacity: one-row predictions
sent on schedule whatever the answers, on up to 512 kept-alive connections (far
more than ``max_in_flight``, 64), a request's latency counted from when it was due.
Reported per server and load: the rate offered, throughput of 200s while sending,
share shed (503), p50/p99 of accepted requests, peak RSS, requests unanswered 15 s
after the last was sent (given up); and the ratios iris/baseline.

``python -m bench.overload [--seconds N | --quick]``; only 127.0.0.1, bounded in
time (at most about 4 minutes at the default 10 s). Writes bench/results/overload.json
and prints a table.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.http_load import (
    Tally,
    closed_loop_capacity,
    memory_mb,
    open_loop,
    percentile_ms,
    pid_listening,
    published_default_model,
    ratios,
    run_bench,
    when_and_where,
)
from bench.servers import running

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "overload.json"
SERVERS = {"baseline": "unlimited", "iris": "iris"}
LOADS = [2, 4]
CONNECTIONS = 512
EVALUATOR = ("--evaluator", "sklearn")


@dataclass(frozen=True)
class Outcome:
    server: str
    load: int
    offered_per_second: float
    ok_per_second: float
    shed_share: float
    accepted_p50_ms: float
    accepted_p99_ms: float
    peak_rss_mb: float
    dropped_connections: int
    unanswered: int


def capacity_of(variant: str, models: str, seconds: float) -> float:
    with running(
        "bench.variants", [variant, "--model_uri", models, *EVALUATOR], cpu=0
    ) as (
        port,
        _,
    ):
        return asyncio.run(closed_loop_capacity(port, seconds))


def overload(
    server: str, models: str, load: int, rate: float, seconds: float
) -> Outcome:
    variant = SERVERS[server]
    with running(
        "bench.variants", [variant, "--model_uri", models, *EVALUATOR], cpu=0
    ) as (
        port,
        _,
    ):
        tally = Tally()
        run = asyncio.run(open_loop(port, rate, seconds, CONNECTIONS, tally))
        peak = memory_mb(pid_listening(port))
    return Outcome(
        server=server,
        load=load,
        offered_per_second=round(run.offered_per_second, 1),
        ok_per_second=round(run.accepted_per_second, 1),
        shed_share=round(tally.shed / tally.answered, 3) if tally.answered else 0.0,
        accepted_p50_ms=percentile_ms(tally.accepted, 0.5),
        accepted_p99_ms=percentile_ms(tally.accepted, 0.99),
        peak_rss_mb=peak,
        dropped_connections=tally.dropped,
        unanswered=run.unanswered,
    )


def measure(seconds: int) -> dict[str, Any]:
    with published_default_model() as models:
        capacities = {
            server: round(capacity_of(variant, models, seconds), 1)
            for server, variant in SERVERS.items()
        }
        # Both serve alike; a busy machine only ever lowers a measure.
        capacity = max(capacities.values())
        outcomes = []
        for load in LOADS:
            for server in SERVERS:
                outcomes.append(
                    overload(server, models, load, load * capacity, seconds)
                )
                print(outcomes[-1], flush=True)
    return {
        **when_and_where(),
        "seconds": seconds,
        "capacity_per_second": capacities,
        "outcomes": [asdict(outcome) for outcome in outcomes],
    }


RATIOS = ("ok_per_second", "accepted_p50_ms", "accepted_p99_ms", "peak_rss_mb")


def table(results: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = results["outcomes"]
    lines = [
        f"capacity {results['capacity_per_second']} req/s, {results['date']}, "
        f"{results['machine']}",
        "server    load  offered/s   200/s   shed  p50 ms   p99 ms  peak RSS MB"
        "  unanswered",
    ]
    for row in rows:
        lines.append(
            f"{row['server']:<9} {row['load']}x  {row['offered_per_second']:>9} "
            f"{row['ok_per_second']:>7} {row['shed_share']:>6} "
            f"{row['accepted_p50_ms']:>7} {row['accepted_p99_ms']:>8} "
            f"{row['peak_rss_mb']:>12} {row['unanswered']:>11}"
        )
    for load in LOADS:
        ours, baseline = (
            next(r for r in rows if r["server"] == s and r["load"] == load)
            for s in ("iris", "baseline")
        )
        lines.append(f"iris/baseline at {load}x: {ratios(ours, baseline, RATIOS)}")
    return "\n".join(lines)


def main() -> None:
    run_bench(__doc__.splitlines()[0], measure, table, RESULTS)


if __name__ == "__main__":
    main()
