"""``POST /v1/models/<model>:predict``, answered without FastAPI's routing.

This does what KServe's ``V1Endpoints.predict`` does for a JSON body (decode, call
the ``kserve.Model``, encode) but as a plain ASGI middleware. Profiled under load
(README, "Performance"), FastAPI's route matching, dependency solving, exception
and exit-stack middleware and KServe's DataPlane took about 40% of the CPU of a
one-row request; the model itself, including KServe's request_*_seconds
histograms, still runs through ``Model.__call__`` as before. Every other request,
for another model included, goes on to KServe's routes.

CloudEvents are not supported here: the guard lets only JSON bodies through.
"""

from __future__ import annotations

import logging

import orjson
from kserve.errors import InvalidInput, ModelNotReady
from starlette.types import ASGIApp, Receive, Scope, Send

from predictor.guard import send_json
from predictor.model import IrisModel

log = logging.getLogger(__name__)


class V1Predict:
    def __init__(self, app: ASGIApp, model: IrisModel) -> None:
        self.app = app
        self.model = model
        self.path = f"/v1/models/{model.name}:predict"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != self.path
            or scope["method"] != "POST"
        ):
            await self.app(scope, receive, send)
            return
        try:
            status, body = 200, await self._predict(scope, receive)
        except InvalidInput as error:
            log.debug("client error: %s", error)
            status, body = 400, orjson.dumps({"error": str(error)})
        except ModelNotReady as error:
            status, body = 503, orjson.dumps({"error": str(error)})
        await send_json(send, status, body)

    async def _predict(self, scope: Scope, receive: Receive) -> bytes:
        if not self.model.ready:
            raise self.model.not_ready()
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            payload = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as error:
            raise InvalidInput(f"Unrecognized request format: {error}") from error
        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope["headers"]
        }
        response, _ = await self.model(payload, headers=headers)
        return orjson.dumps(response)
