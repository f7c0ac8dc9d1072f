"""What clients send that the HTTP layer itself must survive: pipelining, huge headers,
overload, short bodies, odd methods and encodings, and text that would forge logs."""

from __future__ import annotations

import contextlib
import gzip
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
import tritonclient.http as triton

from tests.api.conftest import JSON, PredictorProcess, serving

PREDICT = "/v1/models/iris:predict"
GOOD_BODY = json.dumps({"instances": [[6.8, 2.8, 4.8, 1.4]]}).encode()
MIB = 1024 * 1024


def raw_request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def predict_request() -> bytes:
    return raw_request("POST", PREDICT, GOOD_BODY, Content_Type="application/json")


def status_of(sock: socket.socket) -> int:
    """The status code of the next response on ``sock`` (0 if it was closed)."""
    line = sock.makefile("rb").readline()
    return int(line.split()[1]) if line else 0


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """The next response on ``sock``: status, headers by lower-case name, JSON body."""
    return read_from(sock.makefile("rb"))


def read_from(stream: BinaryIO) -> tuple[int, dict[str, str], Any]:
    """The next response read from ``stream``, which buffers ahead of it."""
    status = int(stream.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := stream.readline().decode("latin-1").strip()) != "":
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return status, headers, json.loads(stream.read(int(headers["content-length"])))


def send_at_once(
    server: PredictorProcess,
    request: bytes,
    connections: int,
    answers: int = 1,
    accepted: bool = True,
) -> list[list[tuple[int, dict[str, str], Any]]]:
    """Send ``request`` whole on each of ``connections`` at once, then read
    ``answers`` responses from each.

    The server is stopped (SIGSTOP) while the requests are sent, so that all of
    them wait for it when it goes on, as a burst does while a server is busy. With
    ``accepted``, each connection was opened and answered once before, so the
    requests wait in sockets the server reads; else the connections are opened
    while it is stopped, and wait in its accept queue too.
    """
    clients: list[socket.socket] = []

    def connect() -> None:
        clients.extend(
            socket.create_connection(("127.0.0.1", server.port), timeout=30)
            for _ in range(connections)
        )

    try:
        if accepted:
            connect()
            for sock in clients:
                sock.sendall(raw_request("GET", "/v2/health/live"))
                assert read_response(sock)[0] == 200
        server.process.send_signal(signal.SIGSTOP)
        try:
            if not accepted:
                connect()
            for sock in clients:
                sock.sendall(request)
        finally:
            server.process.send_signal(signal.SIGCONT)
        streams = [sock.makefile("rb") for sock in clients]
        return [[read_from(stream) for _ in range(answers)] for stream in streams]
    finally:
        for sock in clients:
            sock.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def predictions_total(server: PredictorProcess) -> float:
    return sum(
        server.metric("iris_predictions_total", model_name="iris", **{"class": name})
        for name in ("setosa", "versicolor", "virginica")
    )


def test_tritonclient_binary_infer_without_content_type(
    predictor: PredictorProcess,
) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{predictor.port}")
    tensor = triton.InferInput("input-0", [1, 4], "FP32")
    tensor.set_data_from_numpy(
        np.array([[6.8, 2.8, 4.8, 1.4]], dtype=np.float32), binary_data=True
    )

    result = client.infer("iris", [tensor])

    assert result.as_numpy("predict").tolist() == [1]
    client.close()


def test_a_wrong_content_type_on_v2_infer_is_still_refused(
    predictor: PredictorProcess,
) -> None:
    status, body = predictor.request(
        "POST", "/v2/models/iris/infer", b"{}", {"Content-Type": "text/plain"}
    )
    assert (status, body) == (
        415,
        {
            "error": "Content-Type must be application/json or "
            "application/octet-stream, got text/plain"
        },
    )


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_an_encoded_body_is_refused_naming_its_encoding(
    predictor: PredictorProcess, encoding: str
) -> None:
    status, body = predictor.request(
        "POST",
        PREDICT,
        gzip.compress(GOOD_BODY),
        {**JSON, "Content-Encoding": encoding},
    )
    assert (status, body) == (
        415,
        {"error": f"Content-Encoding '{encoding}' is not supported; send identity"},
    )


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/metrics",
        "/v1/models/iris",
        "/v1/models/iris/metadata",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/iris",
        "/v2/models/iris/ready",
        "/v1/models/nothing",
    ],
)
def test_head_is_answered_wherever_get_is(
    predictor: PredictorProcess, path: str
) -> None:
    connection = predictor.connection()
    try:
        connection.request("GET", path)
        got = connection.getresponse()
        got_body = got.read()
        connection.request("HEAD", path)
        head = connection.getresponse()
        head_body = head.read()
    finally:
        connection.close()
    assert head.status == got.status
    assert head_body == b""
    if path != "/metrics":  # the metrics changed between the two requests
        assert head.getheader("content-length") == str(len(got_body))


def test_more_than_one_worker_is_refused_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "predictor", "--workers", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--workers must be 1, got 2" in result.stderr


def test_a_percent_encoded_newline_cannot_forge_a_log_line(
    start_predictor: Callable[..., PredictorProcess], published_default: Path
) -> None:
    server = start_predictor(
        "--model_uri",
        str(published_default),
        "--access_log",
        "true",
        "--log_level",
        "DEBUG",
    )
    forged = "%0AFORGED%20line%0D%0AFORGED"
    assert server.request("GET", f"/v1/models/x{forged}")[0] == 404
    assert server.request("POST", f"/v1/models/x{forged}:predict", {}, JSON)[0] == 404
    assert server.request("GET", f"/v2/models/x{forged}/ready")[0] == 404
    server.stop()
    lines = server.log().splitlines()
    assert [line for line in lines if line.startswith("FORGED")] == []
    assert any("x\\x0aFORGED" in line for line in lines), server.log()


def test_a_body_shorter_than_its_content_length_is_not_predicted(
    predictor: PredictorProcess,
) -> None:
    answered = predictor.metric(
        "iris_http_requests_total", route="/v1/models/{model}:predict", code="200"
    )
    predicted = predictions_total(predictor)
    with socket.create_connection(("127.0.0.1", predictor.port), timeout=10) as sock:
        request = raw_request(
            "POST", PREDICT, GOOD_BODY, Content_Type="application/json"
        )
        sock.sendall(
            request.replace(
                f"Content-Length: {len(GOOD_BODY)}".encode(),
                f"Content-Length: {len(GOOD_BODY) + 9}".encode(),
            )
        )
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1024)
    time.sleep(0.5)
    assert (
        predictor.metric(
            "iris_http_requests_total", route="/v1/models/{model}:predict", code="200"
        )
        == answered
    )
    assert predictions_total(predictor) == predicted


@pytest.fixture(scope="module")
def limited(
    published_default: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PredictorProcess]:
    """A predictor with small limits: two requests in flight, bodies in 2 s; and
    scikit-learn's own evaluator, so that a large batch costs milliseconds of CPU."""
    with serving(
        tmp_path_factory.mktemp("limited") / "predictor.log",
        "--model_uri",
        str(published_default),
        "--evaluator",
        "sklearn",
        env={"IRIS_MAX_IN_FLIGHT": "2", "IRIS_BODY_TIMEOUT_SECONDS": "2"},
    ) as server:
        yield server


def test_an_incomplete_body_times_out_with_408(limited: PredictorProcess) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        request = raw_request(
            "POST", PREDICT, GOOD_BODY, Content_Type="application/json"
        )
        sock.sendall(request[:-5])
        started = time.monotonic()
        assert status_of(sock) == 408
        assert time.monotonic() - started < 5


def test_an_incomplete_v2_body_times_out_with_408_not_500(
    limited: PredictorProcess,
) -> None:
    # FastAPI reads the v2 body: the guard's answer must still be the one sent.
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, 4],
                    "datatype": "FP64",
                    "data": [6.8, 2.8, 4.8, 1.4],
                }
            ]
        }
    ).encode()
    request = raw_request(
        "POST", "/v2/models/iris/infer", body, Content_Type="application/json"
    )
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        sock.sendall(request[:-5])
        assert status_of(sock) == 408
    timed_out = limited.metric(
        "iris_http_requests_total", route="/v2/models/{model}/infer", code="408"
    )
    assert timed_out >= 1
    assert (
        limited.metric(
            "iris_http_requests_total", route="/v2/models/{model}/infer", code="500"
        )
        == 0
    )


def test_past_max_in_flight_inference_gets_a_fast_503(
    limited: PredictorProcess,
) -> None:
    # Two requests whose bodies are held back are in flight meanwhile.
    request = predict_request()
    waiting = [
        socket.create_connection(("127.0.0.1", limited.port), timeout=10)
        for _ in range(2)
    ]
    try:
        for sock in waiting:
            sock.sendall(request[:-5])
        time.sleep(0.2)
        connection = limited.connection()
        connection.request("POST", PREDICT, body=GOOD_BODY, headers=JSON)
        response = connection.getresponse()
        body = json.loads(response.read())
        connection.close()
        assert response.status == 503
        assert response.getheader("retry-after") == "1"
        assert body["error"].startswith("over capacity: 2 requests in flight")
        # Liveness, readiness and metrics are never shed.
        assert limited.request("GET", "/")[0] == 200
        assert limited.request("GET", "/v1/models/iris")[0] == 200
        for sock in waiting:
            sock.sendall(request[-5:])
            assert status_of(sock) == 200
    finally:
        for sock in waiting:
            sock.close()
    assert limited.predict([[6.8, 2.8, 4.8, 1.4]]) == (200, {"predictions": [1]})


@pytest.mark.parametrize("accepted", [True, False], ids=["open", "new"])
def test_whole_requests_past_max_in_flight_are_shed_under_cpu_overload(
    limited: PredictorProcess, accepted: bool
) -> None:
    # Each request arrives whole and costs CPU: no await ever pauses it, yet those
    # parsed behind two others must be shed, not queued; on connections opened
    # during the burst too, which uvloop would accept one per loop iteration.
    rows = 2000
    body = json.dumps({"instances": [[6.8, 2.8, 4.8, 1.4]] * rows}).encode()
    request = raw_request("POST", PREDICT, body, Content_Type="application/json")
    shed_before = limited.metric(
        "iris_http_requests_total", route="/v1/models/{model}:predict", code="503"
    )
    sent = send_at_once(limited, request, 48, accepted=accepted)
    answers = [answer for [answer] in sent]
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503}, statuses
    shed = [(headers, answer) for status, headers, answer in answers if status == 503]
    assert shed, "nothing was shed"
    assert 200 in statuses
    for headers, answer in shed:
        assert headers["retry-after"] == "1"
        assert headers["content-type"] == "application/json"
        assert answer["error"].startswith("over capacity: 2 requests in flight")
    for status, _, answer in answers:
        if status == 200:
            assert answer == {"predictions": [1] * rows}
    shed_after = limited.metric(
        "iris_http_requests_total", route="/v1/models/{model}:predict", code="503"
    )
    assert shed_after - shed_before == len(shed)


def test_pipelined_requests_count_once_each_as_they_are_answered(
    limited: PredictorProcess,
) -> None:
    # Two connections pipeline 8 requests each: uvicorn answers one at a time per
    # connection, so at most 2 are ever in flight, and with max_in_flight 2 none
    # may be shed (counting a finished request until its task is reaped shed them).
    answers = send_at_once(limited, predict_request() * 8, 2, answers=8)
    for answered in answers:
        assert [status for status, _, _ in answered] == [200] * 8, answered
        assert all(answer == {"predictions": [1]} for _, _, answer in answered)


def _send_until_refused(port: int, head: bytes, chunk: bytes, total: int) -> None:
    """Send ``head`` then ``chunk`` until ``total`` bytes: the server must refuse with
    431, or close the connection, before the end."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return
        try:
            status = status_of(sock)
        except ConnectionResetError:
            return
    assert status == 431, f"a {total}-byte header got {status}"


@pytest.mark.parametrize(
    "chunk",
    [b"a" * 65536, b"X-A: b\r\n" * 8192],
    ids=["10 MB header line", "a million headers"],
)
def test_oversized_headers_are_refused_before_they_are_read_whole(
    limited: PredictorProcess, chunk: bytes
) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
    if chunk.startswith(b"X-A"):
        head = b"GET / HTTP/1.1\r\nHost: x\r\n"
    before = rss_bytes(limited.process.pid)
    _send_until_refused(limited.port, head, chunk, 10 * MIB)
    assert rss_bytes(limited.process.pid) - before < 32 * MIB
    assert limited.request("GET", "/")[0] == 200


def test_a_websocket_upgrade_first_on_its_connection_is_refused_as_a_websocket(
    predictor: PredictorProcess,
) -> None:
    """Handed to KServe's app, which serves no WebSocket: uvicorn refuses the
    handshake with 403, not with 400 "Invalid HTTP request"."""
    upgrade = raw_request(
        "GET",
        "/",
        Upgrade="websocket",
        Connection="Upgrade",
        Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ==",
        Sec_WebSocket_Version="13",
    )
    with socket.create_connection(("127.0.0.1", predictor.port), timeout=10) as sock:
        sock.sendall(upgrade)
        assert status_of(sock) == 403
    assert predictor.request("GET", "/")[0] == 200


def test_too_many_small_headers_get_431(limited: PredictorProcess) -> None:
    headers = {f"X-{number}": "1" for number in range(150)}
    status, body = limited.request("GET", "/", headers=headers)
    assert status == 431
    assert body == "request has more than the limit of 100 headers"


def test_a_pipelining_client_cannot_grow_the_server_without_bound(
    limited: PredictorProcess,
) -> None:
    """One connection pipelines predictions far faster than they are answered, and
    reads the answers as they come, for 8 s: RSS must stay bounded."""
    request = predict_request()
    batch = request * 256
    pid = limited.process.pid
    before = rss_bytes(pid)
    peak = before
    stop = threading.Event()
    answered = 0

    with socket.create_connection(("127.0.0.1", limited.port), timeout=30) as sock:

        def read_answers() -> None:
            nonlocal answered
            with contextlib.suppress(OSError):
                while data := sock.recv(1 << 20):
                    answered += data.count(b"HTTP/1.1 200")

        def send_requests() -> None:
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    sock.sendall(batch)

        threads = [
            threading.Thread(target=work, daemon=True)
            for work in (read_answers, send_requests)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.05)
        stop.set()
        sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=10)
    assert answered > 0
    assert peak - before < 32 * MIB, f"RSS grew by {(peak - before) / MIB:.0f} MiB"
    assert limited.predict([[6.8, 2.8, 4.8, 1.4]]) == (200, {"predictions": [1]})
