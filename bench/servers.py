"""Starting and stopping the servers a benchmark compares."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(
    module: str,
    args: Sequence[str],
    cpu: int | None = None,
    under: Sequence[str] = (),
    slower: float = 1,
) -> Iterator[tuple[int, float]]:
    """Run ``python -m module args --http_port P``; yield (port, seconds to ready).

    ``under`` is a command the server runs under (valgrind), which makes it
    ``slower`` times slower: its start and its stop are waited for that much longer.
    """
    port = free_port()
    command = [*under, sys.executable, "-m", module, *args, "--http_port", str(port)]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        ready_after = _wait_ready(port, process, started, command[-5:], 120 * slower)
        yield port, ready_after
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30 * slower)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(
    port: int,
    process: subprocess.Popen[bytes],
    started: float,
    name: Sequence[str],
    seconds: float,
) -> float:
    url = f"http://127.0.0.1:{port}/v1/models/iris"
    while time.perf_counter() - started < seconds:
        if process.poll() is not None:
            raise RuntimeError(f"{' '.join(name)} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"{' '.join(name)} never became ready")
