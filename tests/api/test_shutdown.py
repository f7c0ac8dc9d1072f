"""SIGTERM: readiness turns false first, requests in flight finish, then the exit."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from tests.api.conftest import JSON, send

ROW = [6.8, 2.8, 4.8, 1.4]


def test_sigterm_drains_then_exits(
    start_predictor: Any, published_default: Path
) -> None:
    server = start_predictor(
        "--model_uri", str(published_default), "--drain_seconds", "2"
    )
    server.wait_until("/v1/models/iris", 200)
    connection = server.connection()

    server.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()

    server.wait_until("/v1/models/iris", 503, timeout=1)
    assert server.request("GET", "/v2/health/ready")[0] == 503
    # Still serving during the drain, on new and on kept-alive connections.
    assert server.predict([ROW]) == (200, {"predictions": [1]})
    assert (
        send(connection, "POST", "/v1/models/iris:predict", {"instances": [ROW]}, JSON)[
            0
        ]
        == 200
    )
    connection.close()
    assert server.process.wait(timeout=30) == 0
    assert time.monotonic() - sent >= 2
    assert "draining readiness=false seconds=2.0" in server.log()


def test_a_request_in_flight_when_sigterm_arrives_is_answered(
    start_predictor: Any, published_default: Path
) -> None:
    rows = 200_000
    server = start_predictor(
        "--model_uri",
        str(published_default),
        "--drain_seconds",
        "0",
        "--max_rows",
        str(rows),
        "--max_body_bytes",
        str(64 * 1024 * 1024),
    )
    server.wait_until("/v1/models/iris", 200)
    body = {"instances": [ROW] * rows, "parameters": {"probabilities": True}}
    answer: dict[str, Any] = {}
    sent = threading.Event()

    def slow_request() -> None:
        connection = server.connection()
        connection.request("POST", "/v1/models/iris:predict", json.dumps(body), JSON)
        sent.set()
        response = connection.getresponse()
        answer["status"], answer["body"] = response.status, json.loads(response.read())
        answer["at"] = time.monotonic()
        connection.close()

    client = threading.Thread(target=slow_request)
    client.start()
    assert sent.wait(timeout=30)
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    client.join(timeout=60)

    assert answer["status"] == 200
    assert len(answer["body"]["predictions"]) == rows
    assert answer["at"] > signalled, (
        "the request finished before SIGTERM: not in flight"
    )
    assert server.process.wait(timeout=30) == 0
