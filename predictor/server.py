"""KServe's ModelServer, with what this predictor adds around it.

- A model that is not ready yet is registered anyway: the server starts, answers
  liveness, and says 503 on readiness until the watcher loads the first version.
- The watcher runs beside the HTTP server for the server's whole life.
- SIGTERM first turns readiness to 503 while requests are still served, then, after
  ``drain_seconds``, lets uvicorn close the listener and finish in-flight requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import logging.config
import warnings
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

from fastapi import FastAPI
from kserve import ModelServer, model_server
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.logging import KSERVE_LOG_CONFIG
from kserve.model import BaseKServeModel
from kserve.protocol.dataplane import DataPlane
from starlette.routing import BaseRoute

from predictor.grpc_v2 import GRPCServer
from predictor.guard import BadBody, RequestGuard
from predictor.inputs import decoding
from predictor.internals import (
    ConfiguredLoopPolicy,
    ConnectionLimits,
    SignalHandler,
    accept_on_listeners,
    batch_step_histograms,
    drop_request_timing,
    replace_lifespan,
    require_configured_loop,
    require_routes_first,
    round_latencies_only_when_logged,
    run_on_configured_loop,
    serve_wrapped,
    use_http_protocol,
    wrap_sigterm,
)
from predictor.routes import ServerState, install_routes
from predictor.settings import PredictorSettings
from predictor.ui import mount_ui
from predictor.watcher import ModelWatcher

log = logging.getLogger(__name__)

# Requests one connection may queue behind the one being answered (pipelining).
MAX_PIPELINED = 16
# Connections one event loop iteration may accept under uvloop: one per descriptor
# of the bound socket (internals.accept_on_listeners). As many as the default
# max_in_flight, so that a burst past it is seen, and shed, in one iteration
# (bench.overload: with 16, accepted requests' p99 was 6 to 15 times longer).
LISTENERS = 64
CLIENT_ERRORS = (InvalidInput, ModelNotFound, ModelNotReady, BadBody)


class ClientErrorFilter(logging.Filter):
    """Log KServe's handling of a client's mistake as one DEBUG line, not an ERROR.

    KServe's exception handlers log every 4xx at ERROR with a traceback: noise for
    whoever is on call, and CPU spent formatting tracebacks for bad requests. Client
    errors are counted by iris_http_requests_total{code="4xx"} instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, CLIENT_ERRORS):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg = "client error: %s: %s"
            record.args = (type(error).__name__, error)
            record.exc_info = record.exc_text = None
        return record.levelno >= logging.getLogger(record.name).getEffectiveLevel()


# Control characters, and the line breaks Unicode adds, shown as escapes in logs.
_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F, 0x85]} | {
    code: f"\\u{code:04x}" for code in (0x2028, 0x2029)
}


def escape_control(text: str) -> str:
    return text.translate(_ESCAPES)


class EscapeControlCharacters(logging.Filter):
    """No log line can be forged: paths, model names and header values come from
    clients, and a newline in one would start a line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # uvicorn's AccessFormatter reads the arguments one by one.
            record.args = tuple(
                escape_control(arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        elif isinstance(record.msg, str):
            # A record whose arguments do not fit its message is logging's to report.
            with contextlib.suppress(TypeError, ValueError):
                record.msg, record.args = escape_control(record.getMessage()), None
        return True


def configure_logging(settings: PredictorSettings) -> None:
    """KServe's log format for every logger, at our level, with client-controlled
    text escaped; per-request lines only if access_log is on."""
    config: dict[str, Any] = {
        **KSERVE_LOG_CONFIG,
        "filters": {"escape": {"()": EscapeControlCharacters}},
        "handlers": {
            name: {**handler, "filters": ["escape"]}
            for name, handler in KSERVE_LOG_CONFIG["handlers"].items()
        },
        "loggers": {
            **KSERVE_LOG_CONFIG["loggers"],
            "kserve": {
                **KSERVE_LOG_CONFIG["loggers"]["kserve"],
                "level": settings.log_level,
            },
            "kserve.trace": {
                **KSERVE_LOG_CONFIG["loggers"]["kserve.trace"],
                "level": "INFO" if settings.access_log else "WARNING",
            },
            # Without a handler uvicorn does not even format the line: it checks
            # hasHandlers() once per connection, not the level per request.
            "uvicorn.access": {
                **KSERVE_LOG_CONFIG["loggers"]["uvicorn.access"],
                "level": "INFO" if settings.access_log else "WARNING",
                "handlers": KSERVE_LOG_CONFIG["loggers"]["uvicorn.access"]["handlers"]
                if settings.access_log
                else [],
            },
            "predictor": {
                "handlers": ["kserve"],
                "level": settings.log_level,
                "propagate": False,
            },
            "training": {
                "handlers": ["kserve"],
                "level": settings.log_level,
                "propagate": False,
            },
        },
    }
    logging.config.dictConfig(config)
    logging.getLogger("kserve").addFilter(ClientErrorFilter())
    # FastAPI warns that KServe's ORJSONResponse is deprecated, on every response
    # under some warning filters; the fix is KServe's to make.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")


class StrictDataPlane(DataPlane):
    """KServe's DataPlane, but a body it cannot decode is the client's error (400).

    Decoding reads only what the client sent, yet KServe lets a KeyError from a v2
    binary body without "inputs", or a ValueError from a non-numeric
    Inference-Header-Content-Length, escape as a 500.
    """

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        with decoding("request body"):
            return super().decode(*args, **kwargs)


class IrisModelServer(ModelServer):
    def __init__(
        self, watcher: ModelWatcher, settings: PredictorSettings, **kwargs: Any
    ) -> None:
        # gRPC is ours (predictor/grpc_v2.py), run by the lifespan; never KServe's.
        enable_grpc = kwargs.pop("enable_grpc", False)
        super().__init__(enable_grpc=False, **kwargs)
        self.dataplane = StrictDataPlane(model_registry=self.registered_models)
        self.watcher = watcher
        self.settings = settings
        self.state = ServerState()
        self.own_routes: list[BaseRoute] = []
        self.loop_policy: ConfiguredLoopPolicy | None = None
        model = watcher.model
        self.grpc = (
            GRPCServer(
                self.grpc_port,
                self.dataplane,
                model,
                lambda: model.ready and not self.state.draining,
                max_message_bytes=settings.max_body_bytes,
                max_threads=self.max_threads,
            )
            if enable_grpc
            else None
        )

    def start(self, models: list[BaseKServeModel]) -> None:
        app: FastAPI = model_server.app
        model = self.watcher.model
        self.own_routes = install_routes(app, model, self.state)
        if self.settings.ui:
            mount_ui(app)
        replace_lifespan(app, self._lifespan)
        for each in models:
            self.register_model(each)
        # Registered above whether ready or not; KServe's start would refuse to run
        # with no ready model, and readiness already says 503 until one is loaded.
        super().start([])

    def setup_event_loop(self) -> None:
        # KServe's start calls this after building its REST server, before serving.
        serve_wrapped(
            self._rest_server,
            lambda app: RequestGuard(
                app,
                self.watcher.model,
                max_body_bytes=self.settings.max_body_bytes,
                max_in_flight=self.settings.max_in_flight,
                body_timeout_seconds=self.settings.body_timeout_seconds,
            ),
        )
        use_http_protocol(
            self._rest_server,
            ConnectionLimits(
                max_header_bytes=self.settings.max_header_bytes,
                max_headers=self.settings.max_headers,
                max_pipelined=MAX_PIPELINED,
            ),
        )
        accept_on_listeners(self._rest_server, LISTENERS)
        batch_step_histograms()
        round_latencies_only_when_logged(self.enable_latency_logging)
        self.loop_policy = run_on_configured_loop(self._rest_server)
        super().setup_event_loop()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        require_routes_first(app, self.own_routes)
        if self.loop_policy is not None:
            require_configured_loop(self.loop_policy)
        loop = asyncio.get_running_loop()
        log.info("event_loop=%s.%s", type(loop).__module__, type(loop).__name__)
        if not self.settings.access_log:
            drop_request_timing(app)
        # Everything loaded so far lives as long as the server: spare the collector.
        gc.freeze()
        if self.grpc is not None:
            await self.grpc.start()
        # uvicorn has installed its SIGTERM handler by now; drain before calling it.
        wrap_sigterm(self._draining)
        watching = asyncio.create_task(self.watcher.run())
        try:
            yield
        finally:
            if self.grpc is not None:
                await self.grpc.stop(self.grace_period)
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

    def _draining(self, uvicorn_exit: SignalHandler) -> SignalHandler:
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self.state.draining:
                uvicorn_exit(signum, frame)
                return
            self.state.draining = True
            log.info("draining readiness=false seconds=%s", self.settings.drain_seconds)
            loop.call_soon_threadsafe(
                loop.call_later,
                self.settings.drain_seconds,
                uvicorn_exit,
                signum,
                frame,
            )

        return on_sigterm
