"""An ASGI middleware that stands between every client and KServe's handlers.

- A POST body must be JSON (``Content-Type: application/json``), else 415; v2
  inference also takes the binary tensor extension (``application/octet-stream``, or
  no Content-Type at all, as tritonclient sends it: then a body without binary
  tensors is read as JSON). Any Content-Encoding but
  identity is 415.
- A body larger than the limit is refused with 413 before it is parsed: at once when
  ``Content-Length`` says so, or as soon as a chunked body grows past it. A body that
  ends before its Content-Length is 400, one still incomplete after
  ``body_timeout_seconds`` is 408; either way nothing is predicted.
- Past ``max_in_flight`` inference requests at once, more get a fast 503 with
  ``Retry-After``: overload sheds load rather than growing every request's latency.
- HEAD is answered wherever GET is (RFC 9110).
- Whatever escapes a handler is answered with a JSON 500 and logged, and the
  connection stays usable; left to Starlette, the exception would reach uvicorn,
  which closes the client's kept-alive connection.
- Every request is counted and timed by route, for the error-ratio and latency alerts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predictor.metrics import HTTP_DURATION, HTTP_REQUESTS

log = logging.getLogger(__name__)

JSON_TYPES = {b"application/json"}
V2_INFER_TYPES = {b"application/json", b"application/octet-stream"}
BODY_METHODS = {"POST", "PUT", "PATCH"}
# Request paths grouped into the routes they hit, so metrics stay low-cardinality.
V2_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
ROUTES = [
    (re.compile(r"^/v1/models/[^/]+:predict$"), "/v1/models/{model}:predict"),
    (V2_INFER, "/v2/models/{model}/infer"),
    (re.compile(r"^/v1/models/[^/:]+$"), "/v1/models/{model}"),
    (re.compile(r"^/v2/(health/\w+|models/[^/]+/ready)$"), "/v2/health"),
    (re.compile(r"^/metrics$"), "/metrics"),
    (re.compile(r"^/$"), "/"),
]
INFERENCE_ROUTES = {"/v1/models/{model}:predict", "/v2/models/{model}/infer"}


class BadBody(Exception):  # noqa: N818 - it is the client's body that is bad
    """Reading the body ended the request: answer ``status`` with ``message``."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


def route_of(path: str) -> str:
    for pattern, route in ROUTES:
        if pattern.match(path):
            return route
    return "other"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _untyped_json_infer(scope: Scope) -> bool:
    """A v2 infer body with neither Content-Type nor binary tensors is JSON."""
    return (
        scope["method"] == "POST"
        and V2_INFER.match(scope["path"]) is not None
        and _header(scope, b"content-type") is None
        and _header(scope, b"inference-header-content-length") is None
    )


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_in_flight: int,
        body_timeout_seconds: float,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.body_timeout_seconds = body_timeout_seconds
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = route_of(scope["path"])
        response: dict[str, Any] = {"status": 500, "started": False, "failed": False}

        async def send_tracked(message: Message) -> None:
            # Once the body has failed, what the app makes of it is not sent.
            if response["failed"]:
                return
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["started"] = True
            await send(message)

        inference = route in INFERENCE_ROUTES
        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _send_error(send_tracked, *refusal)
                return
            if inference and self.in_flight >= self.max_in_flight:
                await _send_error(
                    send_tracked,
                    503,
                    f"over capacity: {self.in_flight} requests in flight; retry",
                    [(b"retry-after", b"1")],
                )
                return
            if _untyped_json_infer(scope):
                # tritonclient sends JSON tensors with no Content-Type at all.
                json_type = (b"content-type", b"application/json")
                scope = {**scope, "headers": [*scope["headers"], json_type]}
            if scope["method"] == "HEAD":
                # RFC 9110: HEAD is GET without the body, which uvicorn leaves out.
                scope = {**scope, "method": "GET"}
            self.in_flight += inference
            try:
                await self.app(scope, self._limited(receive, response), send_tracked)
            finally:
                self.in_flight -= inference
        except BadBody as error:
            response["failed"] = False
            if not response["started"]:
                extra = [(b"connection", b"close")] if error.close else []
                await _send_error(send_tracked, error.status, error.message, extra)
        # The last line of defence: no exception may reach the server and drop the
        # connection.
        except Exception:
            log.exception(
                "unhandled error method=%s path=%r", scope["method"], scope["path"]
            )
            if not response["started"]:
                await _send_error(
                    send_tracked, 500, "internal error; see the server log"
                )
        finally:
            HTTP_REQUESTS.labels(route, str(response["status"])).inc()
            HTTP_DURATION.labels(route).observe(time.perf_counter() - started)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        encoding = _header(scope, b"content-encoding")
        if encoding is not None and encoding.strip().lower() != b"identity":
            shown = encoding.decode("latin-1")
            return 415, f"Content-Encoding {shown!r} is not supported; send identity"
        if scope["method"] not in BODY_METHODS:
            return None
        content_type = _header(scope, b"content-type")
        media_type = (content_type or b"").split(b";")[0].strip().lower()
        v2_infer = V2_INFER.match(scope["path"])
        accepted = V2_INFER_TYPES if v2_infer else JSON_TYPES
        # The binary tensor extension needs no Content-Type (tritonclient sends none).
        if media_type not in accepted and not (v2_infer and content_type is None):
            shown = content_type.decode("latin-1") if content_type else "none"
            expected = " or ".join(sorted(kind.decode() for kind in accepted))
            return 415, f"Content-Type must be {expected}, got {shown}"
        length = _header(scope, b"content-length")
        if (
            length is not None
            and length.isdigit()
            and int(length) > self.max_body_bytes
        ):
            return 413, self._too_large()
        return None

    def _too_large(self) -> str:
        return f"request body is larger than the limit of {self.max_body_bytes} bytes"

    def _limited(self, receive: Receive, response: dict[str, Any]) -> Receive:
        received = 0
        complete = False

        def fail(status: int, message: str, close: bool = False) -> BadBody:
            response["failed"] = True
            return BadBody(status, message, close)

        async def receive_limited() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout_seconds):
                    message = await receive()
            except TimeoutError:
                raise fail(
                    408,
                    f"request body incomplete after {self.body_timeout_seconds:g} s",
                    close=True,
                ) from None
            if message["type"] == "http.disconnect":
                raise fail(400, "request body ended before its Content-Length")
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise fail(413, self._too_large())
            complete = not message.get("more_body", False)
            return message

        return receive_limited


async def _send_error(
    send: Send,
    status: int,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send_json(send, status, orjson.dumps({"error": message}), headers)


async def send_json(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A whole JSON response, headers and body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
