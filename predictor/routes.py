"""Routes this predictor answers itself, ahead of KServe's, and its error format.

- Readiness (``GET /v1/models/iris``, ``/v2/health/ready``, ``/v2/models/iris/ready``)
  is 200 only while a verified model is loaded and the server is not draining.
  KServe's ``/v2/health/ready`` says ready even with no model at all.
- ``GET /v1/models/iris/metadata`` returns the served version's metadata.
- The v2 model repository extension (``/v2/repository/...``) is refused: it would let
  any client unload the model. So are ``:explain`` (there is no explainer) and v2's
  versioned paths, which KServe would answer with 501s.
- Every error is ``{"error": "..."}``, as KServe's own errors are, and FastAPI's
  request validation failures are 400s, not 422s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import ModelNotFound, ModelNotReady, ServerNotReady
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute

from predictor.model import NOT_LOADED, IrisModel

SHUTTING_DOWN = "The server is shutting down."
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass
class ServerState:
    """What readiness needs to know beyond the model: whether we are shutting down."""

    draining: bool = False


def install_routes(
    app: FastAPI, model: IrisModel, state: ServerState
) -> list[BaseRoute]:
    """Add this predictor's routes; return them, to check they are matched first."""

    def require(name: str) -> IrisModel:
        if name != model.name:
            raise ModelNotFound(name)
        return model

    def require_ready(name: str) -> IrisModel:
        require(name)
        if state.draining:
            raise ModelNotReady(name, SHUTTING_DOWN)
        if not model.ready:
            raise model.not_ready()
        return model

    async def v1_model_ready(model_name: str) -> dict[str, Any]:
        name, _, verb = model_name.partition(":")
        if verb:
            raise HTTPException(405, f"use POST for :{verb}", headers={"Allow": "POST"})
        return {"name": require_ready(name).name, "ready": True}

    async def v1_model_metadata(model_name: str) -> dict[str, Any]:
        return require(model_name).describe()

    async def v2_server_ready() -> dict[str, bool]:
        if state.draining or not model.ready:
            raise ServerNotReady(SHUTTING_DOWN if state.draining else NOT_LOADED)
        return {"ready": True}

    async def v2_model_ready(model_name: str) -> dict[str, Any]:
        return {"name": require_ready(model_name).name, "ready": True}

    async def v1_explain(model_name: str) -> None:
        raise HTTPException(404, f"model {require(model_name).name} has no explainer")

    async def v2_version_refused(
        model_name: str, model_version: str, rest: str
    ) -> None:
        raise HTTPException(
            404,
            f"model versions are not addressable: use /v2/models/{model_name}{rest}",
        )

    async def repository_refused(path: str) -> None:
        raise HTTPException(403, "the model repository API is disabled on this server")

    first = len(app.router.routes)
    app.add_api_route("/v1/models/{model_name}", v1_model_ready, methods=["GET"])
    app.add_api_route(
        "/v1/models/{model_name}/metadata", v1_model_metadata, methods=["GET"]
    )
    app.add_api_route("/v1/models/{model_name}:explain", v1_explain, methods=["POST"])
    app.add_api_route("/v2/health/ready", v2_server_ready, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/ready", v2_model_ready, methods=["GET"])
    app.add_api_route(
        "/v2/models/{model_name}/versions/{model_version}{rest:path}",
        v2_version_refused,
        methods=ALL_METHODS,
    )
    app.add_api_route(
        "/v2/repository/{path:path}", repository_refused, methods=ALL_METHODS
    )
    # Starlette types handlers as taking any Exception; each of these gets its own.
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, request_invalid)  # type: ignore[arg-type]
    return app.router.routes[first:]


async def http_error(_: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse(
        {"error": str(error.detail)},
        status_code=error.status_code,
        headers=error.headers,
    )


async def request_invalid(_: Request, error: RequestValidationError) -> JSONResponse:
    # KServe's v2 body is "InferenceRequest | bytes"; only the JSON reading matters.
    problems = "; ".join(
        f"{_location(problem['loc'])}: {problem['msg']}"
        for problem in error.errors()
        if "bytes" not in problem["loc"]
    )
    return JSONResponse({"error": f"invalid request: {problems}"}, status_code=400)


def _location(parts: Sequence[object]) -> str:
    return ".".join(
        str(part) for part in parts if part not in ("body", "InferenceRequest")
    )
