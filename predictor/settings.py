"""The predictor's settings: each is a flag (``--reload_interval_seconds``) and an
environment variable (``IRIS_RELOAD_INTERVAL_SECONDS``); a flag wins.

KServe's own flags (``--model_name``, ``--http_port``, ``--workers``, ...) come from
``kserve.model_server.parser``; these are the ones this predictor adds.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Literal

from kserve import model_server
from pydantic import Field

from training.store.cli import ProgramSettings, parse_cli

MIB = 1024 * 1024


class PredictorSettings(ProgramSettings):
    reload_interval_seconds: float = Field(
        10.0,
        gt=0,
        description="How often to check the store for a new version. Default 10.",
    )
    max_body_bytes: int = Field(
        MIB, ge=1024, description="Larger request bodies get 413. Default 1 MiB."
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="A request whose headers (and request line) grow past this many "
        "bytes gets 431 and the connection closed, before they are read whole.",
    )
    max_headers: int = Field(
        100, ge=8, description="A request with more headers gets 431."
    )
    max_in_flight: int = Field(
        64,
        ge=1,
        description="Requests of any kind started and not yet answered, server-wide, "
        "past which an inference request gets an immediate 503 with Retry-After "
        "instead of waiting behind them: an accepted request has fewer than this "
        "many ahead of it. Requests not yet read from their sockets are not counted.",
    )
    body_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A request body that has not fully arrived after this long gets "
        "408 and the connection closed.",
    )
    max_rows: int = Field(
        10_000, ge=1, description="More rows in one request get 400. Default 10000."
    )
    drain_seconds: float = Field(
        3.0,
        ge=0,
        description="After SIGTERM, answer readiness with 503 but keep serving this "
        "long before closing the listener, so load balancers stop sending first. "
        "Default 3.",
    )
    evaluator: Literal["grid", "sklearn"] = Field(
        "grid",
        description="grid: serve the exact lookup table over the model's split "
        "thresholds that training published (scikit-learn's answers, hundreds of "
        "times faster, loaded with NumPy alone); sklearn: load the model file and call "
        "scikit-learn's predict_proba, as a model without a grid always is. "
        "Default grid.",
    )
    drift_window_rows: int = Field(
        1000,
        ge=0,
        description="Recent rows each replica keeps to score drift against the "
        "training distribution (iris_feature_drift_*); 0 turns the scores off.",
    )
    access_log: bool = Field(
        False, description="Log every request (costs CPU per request). Default false."
    )
    ui: bool = Field(
        True,
        description="Serve the try-it page at /ui/, a page that calls the public API "
        "from the same origin.",
    )


def parse_settings(
    argv: Sequence[str] | None = None,
) -> tuple[PredictorSettings, argparse.Namespace]:
    """Our settings, and KServe's flags as its parser reads them."""
    parser = argparse.ArgumentParser(
        prog="python -m predictor",
        parents=[model_server.parser],
        description="Serve the published model with KServe's ModelServer.",
    )
    # This predictor's defaults for KServe flags: the model is "iris", gRPC is off
    # unless asked for, and no per-request latency log line. The event loop stays
    # KServe's "auto": uvloop, which the image installs.
    parser.set_defaults(
        model_name="iris",
        enable_grpc=False,
        enable_latency_logging=False,
    )
    return parse_cli(PredictorSettings, parser, argv)
