"""The HTTP load that bench/overload.py and bench/pipelining.py drive, from asyncio.

One-row v1 predictions over raw sockets to 127.0.0.1: a closed-loop client to find
capacity, an open-loop one that keeps the schedule whatever the server does, and
the server's memory read from /proc.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.settings import TrainingSettings
from training.store import open_store
from training.train import train

BODY = b'{"instances": [[6.8, 2.8, 4.8, 1.4]]}'
REQUEST = (
    b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
CAPACITY_CONNECTIONS = 16
GIVE_UP_SECONDS = 15


@dataclass
class Tally:
    """Answers by status, and the latency of the accepted ones (200s), in s."""

    accepted: list[float] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)
    shed: int = 0
    other: int = 0
    dropped: int = 0

    @property
    def answered(self) -> int:
        return len(self.accepted) + self.shed + self.other


def percentile_ms(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)


def memory_mb(pid: int, field_name: str = "VmHWM") -> float:
    """VmHWM is the peak resident set so far, VmRSS the current one."""
    with contextlib.suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def pid_listening(port: int) -> int:
    listening = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(listening.split("pid=")[1].split(",")[0])


@contextlib.contextmanager
def published_default_model() -> Iterator[str]:
    """A store holding the model `make run` trains, for the servers to load."""
    with tempfile.TemporaryDirectory() as scratch:
        trained = train(TrainingSettings())
        open_store(scratch).publish(trained.estimator, trained.card, 5)
        yield scratch


async def read_answer(reader: asyncio.StreamReader) -> int:
    """Read one response; return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def polite_client(
    port: int, until: float, tally: Tally, pause: float = 0.0
) -> None:
    """One request at a time on one kept-alive connection, ``pause`` s apart."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(REQUEST)
            status = await read_answer(reader)
            record(tally, status, time.perf_counter() - started)
            await asyncio.sleep(pause)
    except (ConnectionError, asyncio.IncompleteReadError):
        tally.dropped += 1
    finally:
        writer.close()


def record(tally: Tally, status: int, seconds: float) -> None:
    if status == 200:
        tally.accepted.append(seconds)
        tally.accepted_at.append(time.perf_counter())
    elif status == 503:
        tally.shed += 1
    else:
        tally.other += 1


async def closed_loop(port: int, seconds: float) -> Tally:
    """16 connections, each sending a request as soon as the last is answered."""
    until = time.perf_counter() + seconds
    tally = Tally()
    await asyncio.gather(
        *(polite_client(port, until, tally) for _ in range(CAPACITY_CONNECTIONS))
    )
    return tally


async def closed_loop_capacity(port: int, seconds: float) -> float:
    """Accepted answers per second, closed loop."""
    return len((await closed_loop(port, seconds)).accepted) / seconds


class ConnectionPool:
    """Kept-alive connections, opened as needed up to ``limit``."""

    def __init__(self, port: int, limit: int) -> None:
        self.port = port
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        self.idle = asyncio.Queue()
        self.slots = asyncio.Semaphore(limit)
        self.opened: list[asyncio.StreamWriter] = []

    async def request(self, intended: float, tally: Tally) -> None:
        """Send one request; its latency counts from when it was due to be sent."""
        async with self.slots:
            if self.idle.empty():
                connection = await asyncio.open_connection("127.0.0.1", self.port)
                self.opened.append(connection[1])
            else:
                connection = self.idle.get_nowait()
            reader, writer = connection
            try:
                writer.write(REQUEST)
                status = await read_answer(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                tally.dropped += 1
                writer.close()
                return
            record(tally, status, time.perf_counter() - intended)
            self.idle.put_nowait(connection)

    def close(self) -> None:
        for writer in self.opened:
            writer.close()


@dataclass(frozen=True)
class OpenLoopRun:
    offered_per_second: float
    accepted_per_second: float
    unanswered: int


async def open_loop(
    port: int, rate: float, seconds: float, connections: int, tally: Tally
) -> OpenLoopRun:
    """Send ``rate`` requests/s for ``seconds`` whatever the answers.

    Requests due while all connections are busy wait for one, and that wait counts
    in their latency (no coordinated omission). Throughput counts the 200s that
    came while sending; what is still unanswered 15 s after is given up.
    """
    pool = ConnectionPool(port, connections)
    started = time.perf_counter()
    due = started
    pending: set[asyncio.Task[None]] = set()
    sent = 0
    while due < started + seconds:
        now = time.perf_counter()
        while due <= now:
            task = asyncio.create_task(pool.request(due, tally))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
            due = started + sent / rate
        await asyncio.sleep(max(0.0, min(due - time.perf_counter(), 0.005)))
    sending = time.perf_counter() - started
    if pending:
        await asyncio.wait(pending, timeout=GIVE_UP_SECONDS)
    unanswered = len(pending)
    for task in list(pending):
        task.cancel()
    pool.close()
    in_window = sum(1 for at in tally.accepted_at if at <= started + sending)
    return OpenLoopRun(
        offered_per_second=sent / sending,
        accepted_per_second=in_window / sending,
        unanswered=unanswered,
    )


def ratios(
    ours: Mapping[str, Any], baseline: Mapping[str, Any], names: Sequence[str]
) -> str:
    """``name ours/baseline`` for each measure the baseline has a value for."""
    return ", ".join(
        f"{name} {float(ours[name]) / float(baseline[name]):.2f}"
        for name in names
        if float(baseline[name])
    )


def when_and_where() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores",
    }


def run_bench(
    description: str,
    measure: Callable[[int], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    results: Path,
) -> None:
    """Parse ``--seconds``/``--quick``, measure, write the JSON, print the table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=int, default=10, help="per measure")
    parser.add_argument("--quick", action="store_true", help="2 s per measure")
    args = parser.parse_args()
    measured = measure(2 if args.quick else args.seconds)
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(measured, indent=2) + "\n")
    print(table(measured))
