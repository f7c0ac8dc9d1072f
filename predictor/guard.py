"""An ASGI middleware that stands between every client and KServe's handlers.

- A POST body must be JSON (``Content-Type: application/json``), else 415; v2
  inference also takes the binary tensor extension (``application/octet-stream``).
- A body larger than the limit is refused with 413 before it is parsed: at once when
  ``Content-Length`` says so, or as soon as a chunked body grows past it.
- Whatever escapes a handler is answered with a JSON 500 and logged, and the
  connection stays usable; left to Starlette, the exception would reach uvicorn,
  which closes the client's kept-alive connection.
- Every request is counted and timed by route, for the error-ratio and latency alerts.
"""

from __future__ import annotations

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


class BodyTooLarge(Exception):  # noqa: N818 - it is the client's body that is too large
    pass


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


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        response: dict[str, Any] = {"status": 500, "started": False}

        async def send_tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["started"] = True
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _send_error(send_tracked, *refusal)
                return
            await self.app(scope, self._limited(receive), send_tracked)
        except BodyTooLarge:
            if not response["started"]:
                await _send_error(send_tracked, 413, self._too_large())
        # The last line of defence: no exception may reach the server and drop the
        # connection.
        except Exception:
            log.exception(
                "unhandled error method=%s path=%s", scope["method"], scope["path"]
            )
            if not response["started"]:
                await _send_error(
                    send_tracked, 500, "internal error; see the server log"
                )
        finally:
            route = route_of(scope["path"])
            HTTP_REQUESTS.labels(route, str(response["status"])).inc()
            HTTP_DURATION.labels(route).observe(time.perf_counter() - started)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        if scope["method"] not in BODY_METHODS:
            return None
        content_type = _header(scope, b"content-type")
        media_type = (content_type or b"").split(b";")[0].strip().lower()
        accepted = V2_INFER_TYPES if V2_INFER.match(scope["path"]) else JSON_TYPES
        if media_type not in accepted:
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

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        return receive_limited


async def _send_error(send: Send, status: int, message: str) -> None:
    await send_json(send, status, orjson.dumps({"error": message}))


async def send_json(send: Send, status: int, body: bytes) -> None:
    """A whole JSON response, headers and body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
