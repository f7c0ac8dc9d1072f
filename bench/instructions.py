"""Instructions per 1-row request, counted by callgrind: the ceiling, the floor and
the predictor in one run.

wrk's requests per second spread by several points from round to round on a shared
machine, more than most single changes to the request path are worth; the
instructions a request costs repeat to within about 1%. Each server runs under
``valgrind --tool=callgrind`` with counting off until it is ready and has been
warmed up, then on for ``--seconds`` of 1-row requests at c=16 (wrk, as
bench/serving.py drives it); the instructions counted, divided by the requests wrk
completed, are the user-space instructions of one request: the kernel's work for
each socket read and write is not in them. Under valgrind a server runs about 50
times slower, so the counts, not the rates, are the result.

``python -m bench.instructions [--seconds 20]``; needs valgrind and wrk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.http_load import published_default_model
from bench.servers import free_port
from bench.serving import Load, drive

SERVERS = {"ceiling": "bench.ceiling", "floor": "bench.floor", "iris": "predictor"}
LOAD = Load("1 row, c=16", 1, 16)


def instructions_per_request(module: str, store: str, seconds: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        counts = Path(scratch) / "callgrind.out"
        port = free_port()
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={counts}",
            sys.executable,
            "-m",
            module,
            "--model_uri",
            store,
            "--http_port",
            str(port),
        ]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
        server = subprocess.Popen(
            command,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(port, server)
            drive(port, LOAD, 3, Path(scratch))  # warm-up, not counted
            callgrind_control("--instr=on", server.pid)
            measured = drive(port, LOAD, seconds, Path(scratch))
            callgrind_control("--instr=off", server.pid)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=300)
        # wrk's rate times its duration: the requests it completed, to within one.
        requests = measured.requests_per_second * seconds
        return total_instructions(counts) / requests


def wait_ready(port: int, server: subprocess.Popen[bytes]) -> None:
    """Under valgrind, start-up takes minutes."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/v1/models/iris", timeout=5
            ):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError("the server never became ready under valgrind")


def callgrind_control(switch: str, pid: int) -> None:
    subprocess.run(
        ["callgrind_control", switch, str(pid)], capture_output=True, check=True
    )


def total_instructions(counts: Path) -> int:
    """The ``totals:`` line of the callgrind output the server wrote as it exited."""
    for line in counts.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"{counts} has no totals line")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=20, help="length of the load")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench.instructions needs {tool}: apt-get install {tool}")
    counted: dict[str, float] = {}
    with published_default_model() as store:
        for name, module in SERVERS.items():
            counted[name] = instructions_per_request(module, store, args.seconds)
            print(
                f"{name}: {counted[name] / 1000:,.1f} thousand instructions per request"
            )
    for name in ("floor", "iris"):
        print(f"ceiling/{name}: {counted['ceiling'] / counted[name]:.1%}")


if __name__ == "__main__":
    main()
