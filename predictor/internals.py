"""Every reach into KServe's, Starlette's and uvicorn's internals, in one place.

Written against kserve 0.21.0, fastapi 0.165.0, starlette 1.10.0, uvicorn 0.54.0 and
httptools 0.9.0. Each reach checks the assumption it makes when the server starts and
raises ``BrokenAssumptionError`` naming it, so an upgrade that changes one fails at
once, loudly, rather than quietly serving without a guarantee:

- KServe's ``ModelServer.start`` builds its REST server (``_rest_server``, holding a
  ``uvicorn.Config`` of the app ``kserve.model_server:app``) before calling
  ``setup_event_loop``: that is where the HTTP protocol below is put in, and the
  guard put around KServe's app, outside Starlette's own middleware.
- KServe adds ``TimingMiddleware`` to ``app.user_middleware``; it is dropped there.
- KServe hands its ``--event-loop`` setting (default ``auto``: uvloop when installed)
  to ``uvicorn.Config(loop=...)``, whose loop only ``uvicorn.Server.run`` makes; but
  ``ModelServer.start`` serves with ``asyncio.run``, which makes asyncio's own (the
  flag came with kserve/kserve#4971, for kserve/kserve#4931's throughput). An event
  loop policy makes ``asyncio.run``'s loop the one the config names (this
  predictor keeps KServe's default).
- ``RESTServer.start`` serves by its uvicorn ``Server``'s ``_server.serve()``; the
  socket is bound here and handed to it through several descriptors, so that uvloop
  accepts more than one connection per loop iteration.
- KServe's ``Model.__call__`` times its steps into prometheus_client histograms it
  reads from ``kserve.model``'s globals (``KSERVE_STEP_HISTOGRAMS``), which keeps
  their label names and upper bounds in ``_labelnames`` and ``_upper_bounds``; each
  is replaced, in both modules and in the registry, by a ``BatchedHistogram``
  exported the same. It also rounds each step's milliseconds with
  ``kserve.model.get_latency_ms``, for its ``enable_latency_logging`` line only;
  with that line off, the function is replaced by one that does not round.
- Starlette's router runs ``router.lifespan_context``; it is replaced.
- uvicorn installs ``Server.handle_exit`` as the SIGTERM handler while it serves; it
  is wrapped so that readiness drains first.
- Starlette matches routes in registration order: this predictor's routes
  (``predictor.routes.OWN_ENDPOINTS``) must sit ahead of KServe's for the same paths.
- uvicorn's ``HttpToolsProtocol`` keeps pipelined requests in ``self.pipeline`` and
  reads through ``self.flow``, and adds each header of the request being parsed to
  ``self.headers``; ``LimitedHttpToolsProtocol`` bounds all three.
- It starts every parsed request's task in ``_start_asgi_task(cycle, app)``, one at a
  time per connection: a pipelined one from ``on_response_complete`` of the one
  before. ``LimitedHttpToolsProtocol`` counts, server-wide, the connections whose
  request is started and not yet answered, and writes that number into each
  request's scope (``REQUESTS_AHEAD``), for the guard to shed by. Its
  ``on_message_complete`` (which sets the cycle's message event) marks the scope of
  the request parsed whole (``BODY_PARSED``): that request's reads return at once.
- A ``RequestResponseCycle`` writes through ``cycle.transport``: the head of its
  response (once ``response_started``, with ``chunked_encoding`` False when a
  Content-Length was given) and then the body. ``ResponseTransport`` sends the two
  in one write.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import signal
import socket
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from kserve import metrics as kserve_metrics
from kserve import model as kserve_model
from kserve.model import Model
from kserve.protocol.rest import server as kserve_rest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp
from uvicorn.importer import import_from_string
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    HttpToolsProtocol,
    RequestResponseCycle,
)

from predictor.metrics import BatchedHistogram
from predictor.routes import ENDPOINTS

WRITTEN_AGAINST = {
    "kserve": "0.21.0",
    "fastapi": "0.165.0",
    "starlette": "1.10.0",
    "uvicorn": "0.54.0",
    "httptools": "0.9.0",
    "prometheus_client": "0.26.0",
}

# The scope key under which each request carries the number of requests the whole
# server had parsed, and not yet answered, when it was parsed.
REQUESTS_AHEAD = "iris.requests_ahead"
# Put in a request's scope once its whole body has been parsed: reading it cannot
# wait, and needs no deadline.
BODY_PARSED = "iris.body_parsed"

SignalHandler = Callable[[int, FrameType | None], Any]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class BrokenAssumptionError(RuntimeError):
    """An upgrade of KServe, Starlette or uvicorn changed what this predictor uses."""

    def __init__(self, assumption: str) -> None:
        versions = ", ".join(f"{name} {v}" for name, v in WRITTEN_AGAINST.items())
        super().__init__(
            f"broken assumption: {assumption} (written against {versions})"
        )


def require(condition: bool, assumption: str) -> None:
    if not condition:
        raise BrokenAssumptionError(assumption)


@dataclass
class Unanswered:
    """Requests the whole server has started and not yet answered."""

    count: int = 0


@dataclass(frozen=True)
class ConnectionLimits:
    """What one HTTP/1.1 connection may make the server hold."""

    max_header_bytes: int
    max_headers: int
    max_pipelined: int


def _unloaded_config(rest_server: object) -> uvicorn.Config:
    config = getattr(rest_server, "config", None)
    if not isinstance(config, uvicorn.Config) or config.loaded:
        raise BrokenAssumptionError(
            "kserve's ModelServer.start builds _rest_server with an unloaded "
            "uvicorn.Config before setup_event_loop"
        )
    return config


def serve_wrapped(rest_server: object, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
    """Have uvicorn serve ``wrap(KServe's app)``.

    Added with ``app.add_middleware``, the guard would sit inside Starlette's
    ServerErrorMiddleware and FastAPI's telemetry and body-limit layers, which every
    request, the fast path's too, would pay for.
    """
    config = _unloaded_config(rest_server)
    require(
        config.app == "kserve.model_server:app",
        "kserve's RESTServer has uvicorn run the app 'kserve.model_server:app'",
    )
    config.app = wrap(import_from_string(config.app))


class ConfiguredLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """Makes new event loops with uvicorn's factory for the configured loop.

    ``asyncio.set_event_loop_policy`` is deprecated from Python 3.14, whose
    ``asyncio.run`` takes a ``loop_factory`` instead; the image runs 3.11.
    """

    def __init__(self, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        super().__init__()
        self._factory = factory
        self.made: asyncio.AbstractEventLoop | None = None

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        self.made = self._factory()
        return self.made


def run_on_configured_loop(rest_server: object) -> ConfiguredLoopPolicy:
    """Have ``asyncio.run`` make the loop KServe's ``--event-loop`` asks for."""
    config = _unloaded_config(rest_server)
    factory = config.get_loop_factory()
    require(factory is not None, f"uvicorn has a loop factory for {config.loop!r}")
    policy = ConfiguredLoopPolicy(factory)  # type: ignore[arg-type]
    asyncio.set_event_loop_policy(policy)
    return policy


def require_configured_loop(policy: ConfiguredLoopPolicy) -> None:
    """Called in the running server: its loop is the one the policy made."""
    require(
        policy.made is not None and asyncio.get_running_loop() is policy.made,
        "kserve's ModelServer.start serves in a loop made by asyncio's policy",
    )


def accept_on_listeners(rest_server: object, listeners: int) -> None:
    """Have uvicorn serve one bound socket through ``listeners`` descriptors of it.

    libuv, under uvloop, accepts one connection each time a listening descriptor is
    readable (libuv/libuv#3696), so a burst of new connections waits in the kernel's
    accept queue, where load shedding cannot see it. Each ``dup`` of the socket is
    watched on its own (epoll(7): a duplicate descriptor is a separate interest), so
    each loop iteration accepts up to ``listeners``. The port is bound once, by
    uvicorn's ``Config.bind_socket``: a port in use still fails the start.
    """
    server = getattr(rest_server, "_server", None)
    require(
        isinstance(server, uvicorn.Server)
        and {"_server", "serve"} <= set(kserve_rest.RESTServer.start.__code__.co_names),
        "kserve's RESTServer.start serves with its uvicorn Server _server.serve()",
    )
    config = _unloaded_config(rest_server)
    serve = server.serve  # type: ignore[union-attr]

    async def serve_on_listeners(sockets: list[socket.socket] | None = None) -> None:
        require(sockets is None, "kserve's RESTServer.start passes no sockets")
        bound = config.bind_socket()
        await serve(sockets=[bound, *(bound.dup() for _ in range(listeners - 1))])

    server.serve = serve_on_listeners  # type: ignore[union-attr]


# The histograms KServe's Model.__call__ times each step into.
KSERVE_STEP_HISTOGRAMS = (
    "PRE_HIST_TIME",
    "PREDICT_HIST_TIME",
    "POST_HIST_TIME",
    "EXPLAIN_HIST_TIME",
)


def batch_step_histograms(registry: CollectorRegistry = REGISTRY) -> None:
    """Have KServe's ``Model.__call__`` time its steps into ``BatchedHistogram``s.

    Each is exported, by ``registry``, in place of KServe's histogram of the same
    name, labels and buckets, which nothing else observes.
    """
    require(
        set(KSERVE_STEP_HISTOGRAMS) <= set(Model.__call__.__code__.co_names),
        "kserve's Model.__call__ reads "
        + ", ".join(KSERVE_STEP_HISTOGRAMS)
        + " from kserve.model's globals",
    )
    for name in KSERVE_STEP_HISTOGRAMS:
        metric = getattr(kserve_model, name, None)
        if isinstance(metric, BatchedHistogram):
            continue
        kserves = f"kserve.model.{name} is kserve.metrics' prometheus Histogram"
        if not isinstance(metric, Histogram):
            raise BrokenAssumptionError(kserves)
        require(metric is getattr(kserve_metrics, name, None), kserves)
        edges = list(getattr(metric, "_upper_bounds", []))
        labelnames = getattr(metric, "_labelnames", None)
        series = getattr(metric, "_metrics", None)
        if (
            edges[-1:] != [math.inf]
            or not isinstance(labelnames, tuple)
            or not isinstance(series, dict)
        ):
            raise BrokenAssumptionError(
                f"prometheus_client keeps {name}'s upper bounds, label names and "
                "series in _upper_bounds, _labelnames and _metrics"
            )
        # Only at start, before anything has been observed into it.
        require(not series, f"{name} has no series yet")
        (described,) = metric.describe()
        batched = BatchedHistogram(
            described.name, described.documentation, labelnames, edges[:-1]
        )
        registry.unregister(metric)
        registry.register(batched)
        setattr(kserve_model, name, batched)
        setattr(kserve_metrics, name, batched)


def round_latencies_only_when_logged(logged: bool) -> None:
    """Unless the latency log line is on, KServe's step latencies go unrounded.

    ``Model.__call__`` turns each step's time into milliseconds with
    ``get_latency_ms``, which rounds them with ``round(x, 9)`` (a large part of what
    ``Model.__call__`` costs: bench/README.md, fourth round), for numbers only its
    ``enable_latency_logging`` line prints. With that line off, the difference is
    not rounded.
    """
    require(
        {"get_latency_ms", "enable_latency_logging"}
        <= set(Model.__call__.__code__.co_names),
        "kserve's Model.__call__ reads get_latency_ms from kserve.model's globals",
    )
    current = kserve_model.get_latency_ms
    require(
        current in (_KSERVE_GET_LATENCY_MS, _unrounded_latency_ms),
        "kserve.model.get_latency_ms is KServe's own",
    )
    kserve_model.get_latency_ms = (
        _KSERVE_GET_LATENCY_MS if logged else _unrounded_latency_ms
    )


_KSERVE_GET_LATENCY_MS = kserve_model.get_latency_ms


def _unrounded_latency_ms(start: float, end: float) -> float:
    return (end - start) * 1000


def use_http_protocol(rest_server: object, limits: ConnectionLimits) -> None:
    """Serve HTTP with ``LimitedHttpToolsProtocol`` instead of uvicorn's own."""
    config = _unloaded_config(rest_server)
    require(
        all(
            hasattr(HttpToolsProtocol, name)
            for name in (
                "data_received",
                "on_headers_complete",
                "on_response_complete",
                "connection_lost",
                "_start_asgi_task",
            )
        ),
        "uvicorn's HttpToolsProtocol has data_received, on_headers_complete, "
        "on_response_complete, connection_lost and _start_asgi_task",
    )
    require(
        list(inspect.signature(HttpToolsProtocol._start_asgi_task).parameters)
        == ["self", "cycle", "app"],
        "uvicorn's HttpToolsProtocol starts each request by "
        "_start_asgi_task(cycle, app)",
    )
    require(
        {"transport", "response_started", "chunked_encoding"}
        <= set(RequestResponseCycle.__init__.__code__.co_names),
        "uvicorn's RequestResponseCycle writes through self.transport and keeps "
        "response_started and chunked_encoding",
    )
    config.http = type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {"limits": limits, "unanswered": Unanswered()},
    )


def drop_request_timing(app: FastAPI) -> None:
    """Drop the TimingMiddleware that KServe adds to every app.

    All it does is write two kserve.trace lines per request; yet it costs about a
    sixth of a small request's CPU. The middleware stack is built lazily, so it is
    rebuilt without it on the next request.
    """
    timing = kserve_rest.TimingMiddleware
    require(
        any(middleware.cls is timing for middleware in app.user_middleware),
        "kserve adds timing_asgi's TimingMiddleware to app.user_middleware",
    )
    app.user_middleware = [
        middleware for middleware in app.user_middleware if middleware.cls is not timing
    ]
    app.middleware_stack = None


def replace_lifespan(app: FastAPI, lifespan: Lifespan) -> None:
    require(
        hasattr(app.router, "lifespan_context"),
        "starlette's Router runs router.lifespan_context",
    )
    app.router.lifespan_context = lifespan


def wrap_sigterm(wrap: Callable[[SignalHandler], SignalHandler]) -> None:
    """Put ``wrap(uvicorn's handler)`` in place of uvicorn's SIGTERM handler."""
    handler = signal.getsignal(signal.SIGTERM)
    if (
        not callable(handler)
        or getattr(handler, "__func__", None) is not uvicorn.Server.handle_exit
    ):
        raise BrokenAssumptionError(
            "uvicorn installs Server.handle_exit for SIGTERM before the lifespan starts"
        )
    signal.signal(signal.SIGTERM, wrap(handler))


def require_routes_first(app: FastAPI, ours: Sequence[BaseRoute]) -> None:
    """Each of our routes must win over any later route answering the same path."""
    examples = {endpoint.path: endpoint.example for endpoint in ENDPOINTS}
    for route in ours:
        path = getattr(route, "path", "")
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            scope = {"type": "http", "method": method, "path": examples[path]}
            winner = next(
                (
                    each
                    for each in app.router.routes
                    if each.matches(scope)[0] is Match.FULL
                ),
                None,
            )
            require(
                winner is route,
                f"starlette matches routes in registration order: {method} {path} "
                "is answered by this predictor's route, not KServe's",
            )


class _PipelineFlowControl(FlowControl):
    """uvicorn's FlowControl, but reading stays paused while requests are queued.

    uvicorn resumes reading after every response and on every body read, while a
    pipelining client's queue only grows: https://github.com/Kludex/uvicorn/issues/2000
    """

    def __init__(self, transport: asyncio.Transport, protocol: Any) -> None:
        super().__init__(transport)
        self._protocol = protocol

    def resume_reading(self) -> None:
        if self._protocol.pipeline or self._protocol.unparsed:
            return
        super().resume_reading()


class ResponseTransport:
    """The transport as one response writes to it: the head goes with the body.

    uvicorn writes a response's head, then its body, in two writes: two send(2)
    calls, two TCP segments and two wake-ups of the client, for a small response
    that is sent whole. Here the head of a response with a Content-Length waits for
    the first body write and goes out with it. A HEAD response has no body write,
    so it is not wrapped; a chunked one's head goes out at once, as before.
    """

    __slots__ = ("_cycle", "_head", "_transport")

    def __init__(self, cycle: RequestResponseCycle, transport: asyncio.Transport):
        # Kept until the head is written: the cycle refers to this transport, and a
        # cycle of references would leave the request's objects to the collector.
        self._cycle: RequestResponseCycle | None = cycle
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif self._cycle is not None and self._cycle.response_started:
            # The first write of a started response is its head.
            cycle, self._cycle = self._cycle, None
            if cycle.chunked_encoding is False:
                self._head = data
                return
        self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        # Whatever else a later uvicorn asks of the transport: the real one answers.
        return getattr(self._transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on what one connection can queue.

    - Headers: more than ``max_header_bytes`` before the end of a request's headers,
      or more than ``max_headers`` of them, get 431 and the connection closed once
      the piece of at most FEED_BYTES in which the limit was passed is parsed, not
      after httptools has parsed them whole.
    - Pipelining: at most ``max_pipelined`` requests are queued; the rest of what was
      read stays unparsed, and nothing more is read, until the queue drains.
    - Each request's scope gets ``BODY_PARSED`` once its body has been parsed.
    - Each request's scope carries ``REQUESTS_AHEAD``: how many requests, on every
      connection, had been started and not answered when it was. A request that
      arrived whole never pauses at an await, so only this counts the ones that
      wait in the event loop's queue. A request counts from its start to its
      response's end or its connection's loss, not until its task is reaped: a
      pipelined request starts while the one before it is still finishing.
    """

    FEED_BYTES = 8192
    limits: ConnectionLimits
    unanswered: Unanswered

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unparsed = b""
        # The headers of the request being parsed, as uvicorn's on_message_begin
        # starts them; none before the first request.
        self.headers = []
        self._in_headers = True
        self._header_bytes = 0
        self._headers_ended = False
        self._refusal: str | None = None
        self._answering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _PipelineFlowControl(transport, self)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        ahead = self.unanswered.count
        cycle.scope[REQUESTS_AHEAD] = ahead  # type: ignore[literal-required]
        self._set_answering(True)
        if cycle.scope["method"] != "HEAD":
            cycle.transport = ResponseTransport(cycle, cycle.transport)  # type: ignore[assignment]
        super()._start_asgi_task(cycle, app)

    def _set_answering(self, answering: bool) -> None:
        if answering != self._answering:
            self._answering = answering
            self.unanswered.count += 1 if answering else -1

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_answering(False)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.unparsed += data
        self._feed()

    def _feed(self) -> None:
        while self.unparsed and not self.transport.is_closing():
            if len(self.pipeline) >= self.limits.max_pipelined:
                self.flow.pause_reading()
                return
            piece = self.unparsed[: self.FEED_BYTES]
            self.unparsed = self.unparsed[self.FEED_BYTES :]
            self._headers_ended = False
            super().data_received(piece)
            if self._in_headers and not self.transport.is_closing():
                # Only pieces in which no headers ended count; bounded by one piece.
                self._header_bytes = 0 if self._headers_ended else self._header_bytes
                self._header_bytes += 0 if self._headers_ended else len(piece)
                if self._header_bytes > self.limits.max_header_bytes:
                    self._refuse_headers(
                        "request headers are larger than the limit of "
                        f"{self.limits.max_header_bytes} bytes"
                    )
                    return
                if len(self.headers) > self.limits.max_headers:
                    self._refuse_headers(self._too_many_headers())
                    return

    def _too_many_headers(self) -> str:
        return f"request has more than the limit of {self.limits.max_headers} headers"

    # Headers are counted in self.headers, which uvicorn's on_header appends to, when
    # a piece has been parsed or they end: bounded by what one piece holds, and
    # without a Python call of ours for each header.

    def on_headers_complete(self) -> None:
        if len(self.headers) > self.limits.max_headers:
            self._refusal = self._too_many_headers()
            # httptools turns this into an HttpParserError: uvicorn's 400 path.
            raise ValueError(self._refusal)
        self._in_headers = False
        self._headers_ended = True
        self._header_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_headers = True
        self._headers_ended = True
        super().on_message_complete()
        # Marked once uvicorn has set the cycle's more_body False and the event its
        # receive waits on: not for an upgrade (which has no cycle of its own: the
        # one here, if any, is the request before it, already marked) nor for a
        # request already answered.
        if self.cycle is not None and not self.cycle.more_body:
            self.cycle.scope[BODY_PARSED] = True  # type: ignore[literal-required]

    def on_response_complete(self) -> None:
        self._set_answering(False)
        super().on_response_complete()
        if self.unparsed and not self.transport.is_closing():
            self._feed()
        self.flow.resume_reading()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._refuse_headers(self._refusal)
        else:
            super().send_400_response(msg)

    def _refuse_headers(self, message: str) -> None:
        self.unparsed = b""
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
