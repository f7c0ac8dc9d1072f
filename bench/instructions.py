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
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.http_load import pid_listening, published_default_model
from bench.servers import running
from bench.serving import Load, drive

SERVERS = {"ceiling": "bench.ceiling", "floor": "bench.floor", "iris": "predictor"}
LOAD = Load("1 row, c=16", 1, 16)


def instructions_per_request(module: str, store: str, seconds: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        counts = Path(scratch) / "callgrind.out"
        callgrind = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={counts}",
        ]
        # Under valgrind a server starts in minutes and writes its counts as it stops:
        # both are waited for ten times as long as usual.
        with running(module, ["--model_uri", store], under=callgrind, slower=10) as (
            port,
            _,
        ):
            pid = pid_listening(port)
            drive(port, LOAD, 3, Path(scratch))  # warm-up, not counted
            callgrind_control("--instr=on", pid)
            measured = drive(port, LOAD, seconds, Path(scratch))
            callgrind_control("--instr=off", pid)
        # wrk's rate times its duration: the requests it completed, to within one.
        requests = measured.requests_per_second * seconds
        return total_instructions(counts) / requests


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
