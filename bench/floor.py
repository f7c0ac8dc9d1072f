"""The floor: what any server keeping KServe's ``Model.__call__`` pays for a 1-row
prediction. A bare ASGI app under uvicorn, as the ceiling, that answers every POST
with the predictor's own v1 answer (``predictor.v1_predict``: orjson, then
``IrisModel`` through ``Model.__call__``, with KServe's three histograms (counted in
bulk, as the predictor counts them), our checks,
grid and per-row statistics); nothing else: no guard, no limits, no HTTP metrics, no
other route.

``python -m bench.floor --http_port PORT --model_uri URI``
"""

from __future__ import annotations

import argparse
import gc

import uvicorn
from starlette.types import Receive, Scope, Send

from predictor.internals import batch_step_histograms
from predictor.model import IrisModel
from predictor.v1_predict import answer_v1_predict, send_json
from predictor.watcher import ModelWatcher
from training.store import open_store

MODEL = IrisModel("iris", max_rows=10_000)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        # Readiness, for bench.servers: the model was loaded before the port opened.
        await send_json(send, 200, b'{"ready": true}')
        return
    await send_json(send, *await answer_v1_predict(MODEL, scope, receive))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http_port", type=int, required=True)
    parser.add_argument("--model_uri", required=True)
    args, _ = parser.parse_known_args()
    batch_step_histograms()
    ModelWatcher(open_store(args.model_uri), MODEL, 60, "grid").check()
    if not MODEL.ready:
        raise SystemExit(f"no model could be served from {args.model_uri}")
    gc.freeze()
    uvicorn.run(app, port=args.http_port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
