"""``python -m predictor``: serve the published model with KServe's ModelServer."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from predictor.model import IrisModel
from predictor.server import IrisModelServer, configure_logging
from predictor.settings import parse_settings
from predictor.watcher import ModelWatcher
from training.store import StoreError, open_store

log = logging.getLogger("predictor")


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = parse_settings(argv)
    configure_logging(settings)
    if args.workers != 1:
        # One process holds the model, the watcher, readiness and the metrics.
        log.error("--workers must be 1, got %d: scale with replicas", args.workers)
        return 2
    try:
        store = open_store(settings.model_uri)
    except StoreError as error:
        log.error("cannot use the model store: %s", error)
        return 2
    model = IrisModel(args.model_name, settings.max_rows, settings.drift_window_rows)
    watcher = ModelWatcher(
        store, model, settings.reload_interval_seconds, settings.evaluator
    )
    # No load here: the watcher's first check runs beside the server, so the port
    # opens and liveness answers at once even if the store hangs.
    server = IrisModelServer(
        watcher,
        settings,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
    )
    log.info(
        "starting model=%s uri=%s port=%d grpc_port=%s",
        model.name,
        store.uri,
        args.http_port,
        args.grpc_port if args.enable_grpc else None,
    )
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
