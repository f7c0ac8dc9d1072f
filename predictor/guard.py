"""The ASGI app uvicorn runs: it stands between every client and KServe's app.

- A POST body must be JSON (``Content-Type: application/json``), else 415; v2
  inference also takes the binary tensor extension (``application/octet-stream``, or
  no Content-Type at all, as tritonclient sends it: then a body without binary
  tensors is read as JSON). Any Content-Encoding but
  identity is 415.
- A body larger than the limit is refused with 413 before it is parsed: at once when
  ``Content-Length`` says so, or as soon as a chunked body grows past it. A body that
  ends before its Content-Length is 400, one still incomplete after
  ``body_timeout_seconds`` is 408; either way nothing is predicted.
- An inference request started while ``max_in_flight`` requests of any kind, on any
  connection, have been started and not yet answered (a pipelining connection's
  queued requests start one at a time) gets a fast 503 with
  ``Retry-After`` instead of an answer: overload sheds load rather than queueing it.
  A request accepted thus has fewer than ``max_in_flight`` others ahead of it, so its
  wait is bounded by theirs (and by the cheap 503s sent meanwhile), not by the load;
  requests the server has not yet read from their sockets are not counted.
- ``POST /v1/models/<model>:predict`` for the served model is answered here
  (``predictor.v1_predict``), without Starlette's and FastAPI's middleware and
  routing; everything else goes on to KServe's app.
- HEAD is answered wherever GET is (RFC 9110).
- Whatever escapes a handler is answered with a JSON 500 and logged, and the
  connection stays usable; left to uvicorn, the exception would close the client's
  kept-alive connection.
- Every request is counted and timed by route (``predictor.routes.label_of``), for
  the error-ratio and latency alerts.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predictor.internals import BODY_PARSED, REQUESTS_AHEAD
from predictor.metrics import HTTP_TIMINGS
from predictor.model import IrisModel
from predictor.routes import V1_PREDICT, V2_INFER, RouteLabel, label_of, route_of
from predictor.v1_predict import answer_v1_predict, send_json

# route_of is imported from here by the chart tests.
__all__ = ["RequestGuard", "route_of"]

log = logging.getLogger(__name__)

JSON_TYPES = {b"application/json"}
V2_INFER_TYPES = {b"application/json", b"application/octet-stream"}
BODY_METHODS = {"POST", "PUT", "PATCH"}
# The request headers the guard reads.
_GUARDED_HEADERS = {
    b"content-type",
    b"content-encoding",
    b"content-length",
    b"inference-header-content-length",
}


class BadBody(Exception):  # noqa: N818 - it is the client's body that is bad
    """Reading the body ended the request: answer ``status`` with ``message``."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


class _Response:
    """What has been sent of one request's response."""

    __slots__ = ("failure", "started", "status")

    def __init__(self) -> None:
        self.status = 500
        self.started = False
        # Once the body has failed, what the app makes of it is not sent.
        self.failure: BadBody | None = None


class _BodyDeadlines:
    """Cancels the body reads that outlast their deadline, with one timer for all.

    A timer per read (``asyncio.timeout``) cost a heap push and a cancel on every
    request, nearly all of whose bodies have arrived whole; a read that is late
    here is cancelled between ``seconds`` and 1.25 times ``seconds``. A body the
    protocol has already parsed whole (``BODY_PARSED``) is read without one.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._reading: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._sweeping = False

    async def receive(self, receive: Receive) -> Message:
        task = asyncio.current_task()
        if task is None:
            return await receive()
        loop = asyncio.get_running_loop()
        self._reading[task] = loop.time() + self.seconds
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self.seconds / 4, self._sweep, loop)
        try:
            return await receive()
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise TimeoutError from None
        finally:
            del self._reading[task]

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in self._reading.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._sweeping = bool(self._reading)
        if self._sweeping:
            loop.call_later(self.seconds / 4, self._sweep, loop)


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        model: IrisModel,
        max_body_bytes: int,
        max_in_flight: int,
        body_timeout_seconds: float,
    ) -> None:
        self.app = app
        self.model = model
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.body_timeout_seconds = body_timeout_seconds
        # Inference requests in the guard: what sheds where no protocol counts ahead.
        self.in_flight = 0
        shed_body = orjson.dumps(
            {
                "error": f"over capacity: {max_in_flight} requests in flight or "
                "waiting; retry after 1 s"
            }
        )
        self._shed_start: Message = {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(shed_body)),
                (b"retry-after", b"1"),
            ],
        }
        self._shed_body: Message = {"type": "http.response.body", "body": shed_body}
        self.v1_predict_path = f"/v1/models/{model.name}:predict"
        self._v1_predict_label = label_of(self.v1_predict_path)
        self._deadlines = _BodyDeadlines(body_timeout_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        label = (
            self._v1_predict_label if path == self.v1_predict_path else label_of(path)
        )
        response = _Response()
        try:
            await self._answer(scope, label, response, receive, send)
        except BadBody as error:
            response.failure = None
            if not response.started:
                extra = [(b"connection", b"close")] if error.close else []
                await _send_error(send, response, error.status, error.message, extra)
        # The last line of defence: no exception may reach the server and drop the
        # connection.
        except Exception:
            log.exception(
                "unhandled error method=%s path=%r", scope["method"], scope["path"]
            )
            if not response.started:
                await _send_error(
                    send, response, 500, "internal error; see the server log"
                )
        finally:
            HTTP_TIMINGS.observe(
                label.name, str(response.status), time.perf_counter() - started
            )

    async def _answer(
        self,
        scope: Scope,
        label: RouteLabel,
        response: _Response,
        receive: Receive,
        send: Send,
    ) -> None:
        inference = label.inference
        if inference and (
            max(self.in_flight, scope.get(REQUESTS_AHEAD, 0)) >= self.max_in_flight
        ):
            response.status, response.started = 503, True
            await send(self._shed_start)
            await send(self._shed_body)
            return
        method = scope["method"]
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            if key in _GUARDED_HEADERS and key not in headers:
                headers[key] = bytes(value)
        refusal = self._refusal(method, label, headers)
        if refusal is not None:
            await _send_error(send, response, *refusal)
            return
        self.in_flight += inference
        try:
            limited = self._limited(scope, receive, response)
            if (
                label is V1_PREDICT
                and method == "POST"
                and scope["path"] == self.v1_predict_path
            ):
                status, body = await answer_v1_predict(self.model, scope, limited)
                response.status, response.started = status, True
                await send_json(send, status, body)
                return
            if (
                label is V2_INFER
                and method == "POST"
                and b"content-type" not in headers
                and b"inference-header-content-length" not in headers
            ):
                # tritonclient sends JSON tensors with no Content-Type at all.
                json_type = (b"content-type", b"application/json")
                scope = {**scope, "headers": [*scope["headers"], json_type]}
            if method == "HEAD":
                # RFC 9110: HEAD is GET without the body, which uvicorn leaves out.
                scope = {**scope, "method": "GET"}

            async def send_tracked(message: Message) -> None:
                if response.failure is not None:
                    return
                if message["type"] == "http.response.start":
                    response.status = message["status"]
                    response.started = True
                await send(message)

            await self.app(scope, limited, send_tracked)
            # FastAPI turns an exception from reading the body into its own 400.
            if response.failure is not None:
                raise response.failure
        finally:
            self.in_flight -= inference

    def _refusal(
        self, method: str, label: RouteLabel, headers: dict[bytes, bytes]
    ) -> tuple[int, str] | None:
        encoding = headers.get(b"content-encoding")
        if encoding is not None and encoding.strip().lower() != b"identity":
            shown = encoding.decode("latin-1")
            return 415, f"Content-Encoding {shown!r} is not supported; send identity"
        if method not in BODY_METHODS:
            return None
        content_type = headers.get(b"content-type")
        media_type = (content_type or b"").split(b";")[0].strip().lower()
        v2_infer = label is V2_INFER
        accepted = V2_INFER_TYPES if v2_infer else JSON_TYPES
        # The binary tensor extension needs no Content-Type (tritonclient sends none).
        if media_type not in accepted and not (v2_infer and content_type is None):
            shown = content_type.decode("latin-1") if content_type else "none"
            expected = " or ".join(sorted(kind.decode() for kind in accepted))
            return 415, f"Content-Type must be {expected}, got {shown}"
        length = headers.get(b"content-length")
        if (
            length is not None
            and length.isdigit()
            and int(length) > self.max_body_bytes
        ):
            return 413, self._too_large()
        return None

    def _too_large(self) -> str:
        return f"request body is larger than the limit of {self.max_body_bytes} bytes"

    def _limited(self, scope: Scope, receive: Receive, response: _Response) -> Receive:
        received = 0
        complete = False

        def fail(status: int, message: str, close: bool = False) -> BadBody:
            response.failure = BadBody(status, message, close)
            return response.failure

        async def receive_limited() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                message = await (
                    receive()
                    if BODY_PARSED in scope
                    else self._deadlines.receive(receive)
                )
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
    response: _Response,
    status: int,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    response.status, response.started = status, True
    await send_json(send, status, orjson.dumps({"error": message}), headers)
