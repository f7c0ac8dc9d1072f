"""HTTP/1.1 pipelining: what each way of keeping back-pressure costs, in one run.

Three protocols serve the same predictor, each pinned to core 0
(bench/variants.py): ``today``, uvicorn's httptools protocol, which keeps reading
while its pipeline queue grows; ``h11``, uvicorn's h11 protocol, which pauses
reading while a request is answered; ``iris``, the bounded pipeline queue the
predictor ships (at most 16 requests queued per connection, then reading stops).

For each, on one server process:

- well-behaved clients: wrk on core 1, 16 connections, one request at a time each:
  throughput, p50/p99, peak RSS; ``today``'s throughput is "capacity";
- pipelining clients: 32 connections each writing one-row predictions open-loop,
  without waiting for answers, at 4x capacity in all, while one well-behaved client
  sends a request every 10 ms on its own connection: throughput of 200s, the
  well-behaved client's p50/p99, peak RSS. A run whose server passes 2 GiB resident
  is stopped there and marked.

Ratios are against ``today``. ``python -m bench.pipelining [--seconds N | --quick]``;
only 127.0.0.1, bounded in time (about 1.5 minutes at the default 10 s). Writes
bench/results/pipelining.json and prints a table.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.http_load import (
    REQUEST,
    Tally,
    memory_mb,
    percentile_ms,
    pid_listening,
    polite_client,
    published_default_model,
    ratios,
    read_answer,
    record,
    run_bench,
    when_and_where,
)
from bench.servers import running
from bench.serving import Load, drive

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "pipelining.json"
VARIANTS = ["today", "h11", "iris"]
PIPELINING_CONNECTIONS = 32
LOAD = 4
RSS_BOUND_MB = 2048
POLITE_PAUSE_SECONDS = 0.01


@dataclass(frozen=True)
class Outcome:
    variant: str
    polite_per_second: float
    polite_p50_ms: float
    polite_p99_ms: float
    polite_peak_rss_mb: float
    pipelined_ok_per_second: float
    pipelined_shed: int
    beside_pipelining_ok: int
    beside_pipelining_shed: int
    beside_pipelining_p50_ms: float
    beside_pipelining_p99_ms: float
    pipelined_peak_rss_mb: float
    dropped_connections: int
    stopped_at_rss_bound: bool


async def pipelining_connection(
    port: int, rate: float, until: float, tally: Tally
) -> None:
    """Write ``rate`` requests/s without waiting; time each answer in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent: deque[float] = deque()

    async def read() -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                status = await read_answer(reader)
                record(tally, status, time.perf_counter() - sent.popleft())

    reading = asyncio.create_task(read())
    step = 0.01
    try:
        while time.perf_counter() < until:
            count = max(1, round(rate * step))
            sent.extend([time.perf_counter()] * count)
            writer.write(REQUEST * count)
            await asyncio.sleep(step)
    except ConnectionError:
        tally.dropped += 1
    reading.cancel()
    writer.close()


async def pipelined(
    port: int, pid: int, rate: float, seconds: float
) -> tuple[Tally, Tally, bool]:
    """Pipelining connections and one polite client; stop early past the RSS bound."""
    until = time.perf_counter() + seconds
    piped, polite = Tally(), Tally()
    clients = asyncio.gather(
        polite_client(port, until, polite, POLITE_PAUSE_SECONDS),
        *(
            pipelining_connection(port, rate / PIPELINING_CONNECTIONS, until, piped)
            for _ in range(PIPELINING_CONNECTIONS)
        ),
    )
    bounded = False
    while not clients.done():
        if memory_mb(pid, "VmRSS") > RSS_BOUND_MB:
            bounded = True
            clients.cancel()
            break
        await asyncio.sleep(0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await clients
    return piped, polite, bounded


def run_variant(
    variant: str, models: str, capacity: float | None, seconds: int, scratch: Path
) -> Outcome:
    """One variant; with no capacity given, its own well-behaved throughput is it."""
    with running("bench.variants", [variant, "--model_uri", models], cpu=0) as (
        port,
        _,
    ):
        pid = pid_listening(port)
        alone = drive(port, Load("1 row, c=16", 1, 16), seconds, scratch)
        polite_peak = memory_mb(pid)
        rate = LOAD * (capacity or alone.requests_per_second)
        piped, polite, bounded = asyncio.run(pipelined(port, pid, rate, seconds))
        pipelined_peak = memory_mb(pid)
    return Outcome(
        variant=variant,
        polite_per_second=round(alone.requests_per_second, 1),
        polite_p50_ms=round(alone.p50_ms, 1),
        polite_p99_ms=round(alone.p99_ms, 1),
        polite_peak_rss_mb=polite_peak,
        pipelined_ok_per_second=round(len(piped.accepted) / seconds, 1),
        pipelined_shed=piped.shed,
        beside_pipelining_ok=len(polite.accepted),
        beside_pipelining_shed=polite.shed,
        beside_pipelining_p50_ms=percentile_ms(polite.accepted, 0.5),
        beside_pipelining_p99_ms=percentile_ms(polite.accepted, 0.99),
        pipelined_peak_rss_mb=pipelined_peak,
        dropped_connections=piped.dropped + polite.dropped,
        stopped_at_rss_bound=bounded,
    )


def measure(seconds: int) -> dict[str, Any]:
    outcomes: list[Outcome] = []
    with published_default_model() as models, tempfile.TemporaryDirectory() as bodies:
        for variant in VARIANTS:
            capacity = outcomes[0].polite_per_second if outcomes else None
            outcomes.append(
                run_variant(variant, models, capacity, seconds, Path(bodies))
            )
            print(outcomes[-1], flush=True)
    capacity = outcomes[0].polite_per_second
    return {
        **when_and_where(),
        "seconds": seconds,
        "capacity_per_second": capacity,
        "outcomes": [asdict(outcome) for outcome in outcomes],
    }


RATIOS = (
    "polite_per_second",
    "polite_p99_ms",
    "pipelined_ok_per_second",
    "beside_pipelining_p99_ms",
    "pipelined_peak_rss_mb",
)


def table(results: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = results["outcomes"]
    lines = [
        f"capacity (today) {results['capacity_per_second']} req/s; pipelining at "
        f"{LOAD}x on {PIPELINING_CONNECTIONS} connections; {results['date']}, "
        f"{results['machine']}",
        "          well-behaved only            | with pipelining clients: theirs,"
        " then the well-behaved client's beside them",
        "variant   req/s  p50 ms  p99 ms  RSS MB |  200/s  RSS MB | 200s  503s"
        "  p50 ms  p99 ms",
    ]
    for row in rows:
        bound = "  (stopped at the RSS bound)" if row["stopped_at_rss_bound"] else ""
        lines.append(
            f"{row['variant']:<8} {row['polite_per_second']:>6} "
            f"{row['polite_p50_ms']:>7} {row['polite_p99_ms']:>7} "
            f"{row['polite_peak_rss_mb']:>7} | {row['pipelined_ok_per_second']:>6} "
            f"{row['pipelined_peak_rss_mb']:>7} | {row['beside_pipelining_ok']:>4} "
            f"{row['beside_pipelining_shed']:>5} "
            f"{row['beside_pipelining_p50_ms']:>7} "
            f"{row['beside_pipelining_p99_ms']:>7}{bound}"
        )
    today = next(row for row in rows if row["variant"] == "today")
    for row in rows:
        if row is today:
            continue
        lines.append(f"{row['variant']}/today: {ratios(row, today, RATIOS)}")
    return "\n".join(lines)


def main() -> None:
    run_bench(__doc__.splitlines()[0], measure, table, RESULTS)


if __name__ == "__main__":
    main()
