"""``POST /v1/models/<model>:predict``, answered by the guard without FastAPI.

This does what KServe's ``V1Endpoints.predict`` does for a JSON body (decode, call
the ``kserve.Model``, encode) but without Starlette's middleware, FastAPI's routing
and dependency solving, or KServe's DataPlane, which cost most of the CPU of a
one-row request (bench/README.md); the model itself, including KServe's
request_*_seconds histograms, still runs through ``Model.__call__``. A request for
another model goes on to KServe's routes.

CloudEvents are not supported here: the guard lets only JSON bodies through.
"""

from __future__ import annotations

import logging

import orjson
from kserve.errors import InvalidInput, ModelNotReady
from starlette.types import Receive, Scope, Send

from predictor.model import IrisModel

log = logging.getLogger(__name__)

_JSON = (b"content-type", b"application/json")


async def answer_v1_predict(
    model: IrisModel, scope: Scope, receive: Receive
) -> tuple[int, bytes]:
    """The status and JSON body that answer one v1 predict request."""
    try:
        return 200, await _predict(model, scope, receive)
    except InvalidInput as error:
        log.debug("client error: %s", error)
        return 400, orjson.dumps({"error": str(error)})
    except ModelNotReady as error:
        return 503, orjson.dumps({"error": str(error)})


async def _predict(model: IrisModel, scope: Scope, receive: Receive) -> bytes:
    if not model.ready:
        raise model.not_ready()
    message = await receive()
    body = message.get("body", b"")
    if message.get("more_body", False):
        chunks = [body]
        while message.get("more_body", False):
            message = await receive()
            chunks.append(message.get("body", b""))
        body = b"".join(chunks)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"Unrecognized request format: {error}") from error
    headers = {
        key.decode("latin-1"): value.decode("latin-1")
        for key, value in scope["headers"]
    }
    response, _ = await model(payload, headers=headers)
    return orjson.dumps(response)


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
                _JSON,
                (b"content-length", b"%d" % len(body)),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
