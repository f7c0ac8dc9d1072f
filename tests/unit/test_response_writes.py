"""What the predictor's HTTP protocol writes to a connection, write by write.

A small response goes out in one write (one send(2), one TCP segment, one wake-up
of the client), where uvicorn writes its head and its body apart.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.server import ServerState

from predictor.internals import (
    BODY_PARSED,
    ConnectionLimits,
    LimitedHttpToolsProtocol,
    use_http_protocol,
)

LIMITS = ConnectionLimits(max_header_bytes=65536, max_headers=100, max_pipelined=16)
App = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]
BODY = b'{"predictions":[1]}'


class RecordingTransport(asyncio.Transport):
    """A connection that records each write, and whether and when it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[bytes | str] = []

    @property
    def writes(self) -> list[bytes]:
        return [event for event in self.events if isinstance(event, bytes)]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.events.append(bytes(data))

    def close(self) -> None:
        self.events.append("closed")

    def is_closing(self) -> bool:
        return "closed" in self.events

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def exchange(
    app: App,
    *requests: bytes,
    started: list[weakref.ref[RequestResponseCycle]] | None = None,
) -> RecordingTransport:
    """Feed the requests to the protocol on one connection; run until answered.

    ``started``, if given, gets a weak reference to each request's cycle.
    """

    async def run() -> RecordingTransport:
        class RestServer:
            config = uvicorn.Config(app, log_level="warning")

        use_http_protocol(RestServer, LIMITS)
        protocol_class = cast(type[LimitedHttpToolsProtocol], RestServer.config.http)
        protocol = protocol_class(
            config=RestServer.config, server_state=ServerState(), app_state={}
        )
        if started is not None:
            start = protocol._start_asgi_task

            def recorded(cycle: RequestResponseCycle, app: Any) -> None:
                started.append(weakref.ref(cycle))
                start(cycle, app)

            protocol._start_asgi_task = recorded  # type: ignore[method-assign]
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"".join(requests))
        for _ in range(50):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport

    return asyncio.run(run())


def request(method: str = "GET", path: str = "/", close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n".encode() + connection + b"\r\n"


async def json_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(BODY)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def test_a_response_with_a_length_is_one_write_head_and_body() -> None:
    transport = exchange(json_answer, request())
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 19" in head
    assert body == BODY


def test_pipelined_responses_are_one_write_each_in_order() -> None:
    transport = exchange(json_answer, request(path="/a"), request(path="/b"))
    assert len(transport.writes) == 2
    assert all(write.endswith(b"\r\n\r\n" + BODY) for write in transport.writes)


def test_an_answered_request_is_freed_without_the_cyclic_collector() -> None:
    """Once the next request on the connection starts, nothing refers to the one
    answered: its objects go at once. Left to the collector, every request's would
    add to its work (bench/README.md)."""
    started: list[weakref.ref[RequestResponseCycle]] = []
    gc.disable()
    try:
        exchange(json_answer, request(path="/a"), request(path="/b"), started=started)
        assert len(started) == 2
        assert started[0]() is None
    finally:
        gc.enable()


def test_a_request_parsed_whole_is_marked_so_in_its_scope() -> None:
    """The guard reads such a body without a deadline: the read cannot wait."""
    marked: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            marked.append(BODY_PARSED in scope)
            await json_answer(scope, receive, send)

    body = b'{"instances": [[1, 2, 3, 4]]}'
    post = (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    exchange(app, post, request())
    assert marked == [True, True]


def test_a_head_response_writes_its_head_alone() -> None:
    transport = exchange(json_answer, request("HEAD"))
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n")


def test_a_closing_response_is_written_before_the_close() -> None:
    transport = exchange(json_answer, request(close=True))
    assert len(transport.writes) == 1
    assert transport.events[-1] == "closed"
    assert transport.writes[0].endswith(BODY)


def test_a_streamed_response_sends_its_head_at_once() -> None:
    async def stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    transport = exchange(stream, request())
    assert transport.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert transport.writes[1:] == [b"1\r\na\r\n", b"1\r\nb\r\n0\r\n\r\n"]


def test_a_head_whose_body_never_comes_is_still_written_before_the_close() -> None:
    async def fails(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"5")],
            }
        )
        raise RuntimeError("the app failed after starting its response")

    transport = exchange(fails, request())
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.events[-1] == "closed"
