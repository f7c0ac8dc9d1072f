"""Pipelining and overload: the predictor as it ships against today's behaviour and
uvicorn's h11 protocol, in the same run (bench/variants.py).

The server is pinned to core 0; the client runs in this process. First the
predictor's capacity is measured closed-loop (16 connections, one request each at a
time). Then, per variant and per load (2x and 4x that capacity), 64 connections
pipeline one-row predictions open-loop at the target rate, without waiting for
answers, while one well-behaved client sends one request at a time on its own
connection. Reported: peak RSS of the server (from /proc), throughput of 200s, share
shed (503), the p99 of accepted requests, and the well-behaved client's p99.

``python -m bench.overload [--seconds N]``; only 127.0.0.1, bounded in time. Writes
bench/results/overload.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench.servers import running
from training.settings import TrainingSettings
from training.store import open_store
from training.train import train

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "overload.json"
BODY = b'{"instances": [[6.8, 2.8, 4.8, 1.4]]}'
REQUEST = (
    b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
VARIANTS = ["today", "h11", "iris"]
LOADS = [2, 4]
CONNECTIONS = 64


@dataclass(frozen=True)
class Outcome:
    variant: str
    load: int
    peak_rss_mb: float
    ok_per_second: float
    shed_share: float
    accepted_p99_ms: float
    polite_p99_ms: float
    dropped_connections: int


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def rss_mb(pid: int) -> float:
    with contextlib.suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.shed = 0
        self.latencies: list[float] = []
        self.dropped = 0


async def pipelining_connection(
    port: int, rate: float, until: float, tally: Tally
) -> None:
    """Send ``rate`` requests/s without waiting; time each answer in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent: deque[float] = deque()

    async def read() -> None:
        buffer = b""
        while data := await reader.read(1 << 16):
            buffer += data
            *answers, buffer = buffer.split(b"HTTP/1.1 ")
            for answer in answers:
                if not answer:
                    continue
                started = sent.popleft()
                if answer.startswith(b"200"):
                    tally.ok += 1
                    tally.latencies.append(time.perf_counter() - started)
                else:
                    tally.shed += 1

    reading = asyncio.create_task(read())
    step = 0.01
    try:
        while time.perf_counter() < until:
            count = max(1, round(rate * step))
            now = time.perf_counter()
            sent.extend([now] * count)
            writer.write(REQUEST * count)
            await asyncio.sleep(step)
    except ConnectionError:
        tally.dropped += 1
    await asyncio.sleep(1)
    reading.cancel()
    writer.close()


async def polite_client(port: int, until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.perf_counter() < until:
        started = time.perf_counter()
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    writer.close()


async def closed_loop_capacity(port: int, seconds: float) -> float:
    until = time.perf_counter() + seconds
    latencies: list[float] = []
    await asyncio.gather(*(polite_client(port, until, latencies) for _ in range(16)))
    return len(latencies) / seconds


async def overload(
    port: int, pid: int, rate: float, seconds: float
) -> tuple[Tally, list[float], float]:
    until = time.perf_counter() + seconds
    tally = Tally()
    polite: list[float] = []
    peak = 0.0

    async def sample() -> None:
        nonlocal peak
        while time.perf_counter() < until + 1:
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.1)

    await asyncio.gather(
        sample(),
        polite_client(port, until, polite),
        *(
            pipelining_connection(port, rate / CONNECTIONS, until, tally)
            for _ in range(CONNECTIONS)
        ),
    )
    return tally, polite, peak


def pid_listening(port: int) -> int:
    listening = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(listening.split("pid=")[1].split(",")[0])


def run_overload(variant: str, models: Path, rate: float, seconds: float) -> Outcome:
    with running("bench.variants", [variant, "--model_uri", str(models)], cpu=0) as (
        port,
        _,
    ):
        tally, polite, peak = asyncio.run(
            overload(port, pid_listening(port), rate, seconds)
        )
    answered = tally.ok + tally.shed
    return Outcome(
        variant=variant,
        load=0,
        peak_rss_mb=round(peak, 1),
        ok_per_second=round(tally.ok / seconds, 1),
        shed_share=round(tally.shed / answered, 3) if answered else 0.0,
        accepted_p99_ms=round(1000 * percentile(tally.latencies, 0.99), 1),
        polite_p99_ms=round(1000 * percentile(polite, 0.99), 1),
        dropped_connections=tally.dropped,
    )


def measure(seconds: float) -> dict[str, object]:
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory() as scratch:
        trained = train(TrainingSettings())
        open_store(scratch).publish(trained.estimator, trained.card, 5)
        models = Path(scratch)
        with running("bench.variants", ["iris", "--model_uri", scratch], cpu=0) as (
            port,
            _,
        ):
            capacity = asyncio.run(closed_loop_capacity(port, seconds))
        for variant in VARIANTS:
            for load in LOADS:
                outcome = run_overload(variant, models, load * capacity, seconds)
                outcomes.append(replace(outcome, load=load))
                print(outcomes[-1], flush=True)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores",
        "seconds": seconds,
        "capacity_per_second": round(capacity, 1),
        "outcomes": [asdict(outcome) for outcome in outcomes],
    }


def table(results: dict[str, object]) -> str:
    lines = [
        f"capacity {results['capacity_per_second']} req/s, {results['date']}",
        "variant  load  peak RSS MB  200/s  shed  accepted p99 ms  polite p99 ms",
    ]
    for row in results["outcomes"]:  # type: ignore[attr-defined]
        lines.append(
            f"{row['variant']:<8} {row['load']}x   {row['peak_rss_mb']:>9}  "
            f"{row['ok_per_second']:>6}  {row['shed_share']:>4}  "
            f"{row['accepted_p99_ms']:>15}  {row['polite_p99_ms']:>13}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    results = measure(parser.parse_args().seconds)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
