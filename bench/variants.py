"""``python -m bench.variants <variant> <predictor args>``: the predictor with its HTTP
protection swapped for what a benchmark compares it with.

- ``today``: uvicorn's own httptools protocol and no in-flight limit, as the
  predictor was before it bounded pipelining, headers and load.
- ``h11``: uvicorn's h11 protocol, which pauses reading while a request is answered
  and caps an incomplete event at 16 KiB; no in-flight limit.
- ``unlimited``: the predictor as it ships, but with no in-flight limit: nothing
  is shed.
- ``iris``: the predictor as it ships.
"""

from __future__ import annotations

import os
import sys

import predictor.server
from predictor.__main__ import main

UNLIMITED = str(10**9)


def _uvicorn_protocol(name: str) -> None:
    def use(rest_server: object, limits: object) -> None:
        rest_server.config.http = name  # type: ignore[attr-defined]

    predictor.server.use_http_protocol = use  # type: ignore[attr-defined]
    os.environ["IRIS_MAX_IN_FLIGHT"] = UNLIMITED


if __name__ == "__main__":
    variant, *arguments = sys.argv[1:]
    if variant in ("today", "h11"):
        _uvicorn_protocol("httptools" if variant == "today" else "h11")
    elif variant == "unlimited":
        os.environ["IRIS_MAX_IN_FLIGHT"] = UNLIMITED
    elif variant != "iris":
        raise SystemExit(f"unknown variant {variant!r}: today, h11, unlimited or iris")
    sys.exit(main(arguments))
