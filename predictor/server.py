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
import signal
import warnings
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

from fastapi import FastAPI
from kserve import ModelServer, model_server
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.logging import KSERVE_LOG_CONFIG
from kserve.model import BaseKServeModel
from kserve.protocol.dataplane import DataPlane
from timing_asgi import TimingMiddleware

from predictor.guard import RequestGuard
from predictor.routes import ServerState, install_routes
from predictor.settings import PredictorSettings
from predictor.ui import mount_ui
from predictor.v1_predict import V1Predict
from predictor.watcher import ModelWatcher

log = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], Any]
CLIENT_ERRORS = (InvalidInput, ModelNotFound, ModelNotReady)


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


def configure_logging(settings: PredictorSettings) -> None:
    """KServe's log format for every logger, at our level; per-request lines only if
    access_log is on."""
    config: dict[str, Any] = {
        **KSERVE_LOG_CONFIG,
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
            "uvicorn.access": {
                **KSERVE_LOG_CONFIG["loggers"]["uvicorn.access"],
                "level": "INFO" if settings.access_log else "WARNING",
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
        try:
            return super().decode(*args, **kwargs)
        except InvalidInput:
            raise
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise InvalidInput(
                f"malformed request body: {type(error).__name__}: {error}"
            ) from error


def _without_request_timing(app: FastAPI) -> None:
    """Drop the TimingMiddleware that KServe adds to every app.

    All it does is write two kserve.trace lines per request, which are off unless
    access_log is on; yet it costs about a sixth of a small request's CPU (two
    getrusage calls, a scan of the routes to name the request, two f-strings). The
    middleware stack is built lazily, so it is rebuilt without it on the next request.
    """
    app.user_middleware = [
        middleware
        for middleware in app.user_middleware
        if middleware.cls is not TimingMiddleware
    ]
    app.middleware_stack = None


class IrisModelServer(ModelServer):
    def __init__(
        self, watcher: ModelWatcher, settings: PredictorSettings, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.dataplane = StrictDataPlane(model_registry=self.registered_models)
        self.watcher = watcher
        self.settings = settings
        self.state = ServerState()

    def start(self, models: list[BaseKServeModel]) -> None:
        app: FastAPI = model_server.app
        model = self.watcher.model
        install_routes(app, model, self.state)
        if self.settings.ui:
            mount_ui(app)
        # Added first, so it sits inside the guard: the guard sees every request.
        app.add_middleware(V1Predict, model=model)
        app.add_middleware(RequestGuard, max_body_bytes=self.settings.max_body_bytes)
        app.router.lifespan_context = self._lifespan
        for each in models:
            self.register_model(each)
        # Registered above whether ready or not; KServe's start would refuse to run
        # with no ready model, and readiness already says 503 until one is loaded.
        super().start([])

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        if not self.settings.access_log:
            _without_request_timing(app)
        # Everything loaded so far lives as long as the server: spare the collector.
        gc.freeze()
        watching = asyncio.create_task(self.watcher.run())
        # uvicorn has installed its SIGTERM handler by now; drain before calling it.
        uvicorn_exit = signal.getsignal(signal.SIGTERM)
        if callable(uvicorn_exit):
            signal.signal(signal.SIGTERM, self._draining(uvicorn_exit))
        try:
            yield
        finally:
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
