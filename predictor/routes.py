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

``ENDPOINTS`` is the one list of the paths this server answers: who answers each
(the guard's fast path, this module, or KServe), and the metric ``route`` label it
is counted under. The guard, ``install_routes`` and the start-up self-check in
``predictor.internals`` all read it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import ModelNotFound, ModelNotReady, ServerNotReady
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute

from predictor.model import NOT_LOADED, IrisModel

SHUTTING_DOWN = "The server is shutting down."
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class RouteLabel:
    """A value of the metrics' ``route`` label, and the request paths it counts.

    The values are what dashboards and alerts select on: they never change.
    """

    name: str
    # Matched against the whole path, in the order of ROUTE_LABELS.
    pattern: str
    inference: bool = False


V1_PREDICT = RouteLabel(
    "/v1/models/{model}:predict", r"/v1/models/[^/]+:predict", inference=True
)
V2_INFER = RouteLabel(
    "/v2/models/{model}/infer",
    r"/v2/models/[^/]+(?:/versions/[^/]+)?/infer",
    inference=True,
)
V1_MODEL = RouteLabel("/v1/models/{model}", r"/v1/models/[^/:]+")
V2_HEALTH = RouteLabel("/v2/health", r"/v2/(?:health/\w+|models/[^/]+/ready)")
METRICS = RouteLabel("/metrics", r"/metrics")
ROOT = RouteLabel("/", r"/")
# Every other path: the label stays low-cardinality whatever clients send.
OTHER = RouteLabel("other", "")
ROUTE_LABELS = (V1_PREDICT, V2_INFER, V1_MODEL, V2_HEALTH, METRICS, ROOT)

# One regular expression for all: a request's path is matched once.
_LABEL_PATTERN = re.compile(
    "^(?:"
    + "|".join(f"(?P<label{i}>{label.pattern})" for i, label in enumerate(ROUTE_LABELS))
    + ")$"
)
_LABEL_OF_GROUP = {f"label{i}": label for i, label in enumerate(ROUTE_LABELS)}


def label_of(path: str) -> RouteLabel:
    """The route label a request for ``path`` is counted under."""
    match = _LABEL_PATTERN.match(path)
    if match is None or match.lastgroup is None:
        return OTHER
    return _LABEL_OF_GROUP[match.lastgroup]


def route_of(path: str) -> str:
    return label_of(path).name


AnsweredBy = Literal["guard", "iris", "kserve"]


@dataclass(frozen=True)
class Endpoint:
    """A path this server answers, as Starlette writes it, and who answers it."""

    path: str
    methods: tuple[str, ...]
    # "guard": the guard's fast path (for the served model); "iris": a route of
    # this module, installed ahead of KServe's; "kserve": KServe's own route.
    answered_by: AnsweredBy
    label: RouteLabel
    # A path of this form, for the self-check and the tests.
    example: str
    # For answered_by "iris": the name of its handler in install_routes.
    handler: str = ""


ENDPOINTS = (
    Endpoint("/", ("GET",), "kserve", ROOT, "/"),
    Endpoint("/metrics", ("GET",), "kserve", METRICS, "/metrics"),
    Endpoint("/v1/models", ("GET",), "kserve", OTHER, "/v1/models"),
    Endpoint(
        "/v1/models/{model_name}",
        ("GET",),
        "iris",
        V1_MODEL,
        "/v1/models/iris",
        "v1_model_ready",
    ),
    Endpoint(
        "/v1/models/{model_name}/metadata",
        ("GET",),
        "iris",
        OTHER,
        "/v1/models/iris/metadata",
        "v1_model_metadata",
    ),
    Endpoint(
        "/v1/models/{model_name}:predict",
        ("POST",),
        "guard",
        V1_PREDICT,
        "/v1/models/iris:predict",
    ),
    Endpoint(
        "/v1/models/{model_name}:explain",
        ("POST",),
        "iris",
        OTHER,
        "/v1/models/iris:explain",
        "v1_explain",
    ),
    Endpoint("/v2", ("GET",), "kserve", OTHER, "/v2"),
    Endpoint("/v2/health/live", ("GET",), "kserve", V2_HEALTH, "/v2/health/live"),
    Endpoint(
        "/v2/health/ready",
        ("GET",),
        "iris",
        V2_HEALTH,
        "/v2/health/ready",
        "v2_server_ready",
    ),
    Endpoint("/v2/models", ("GET",), "kserve", OTHER, "/v2/models"),
    Endpoint("/v2/models/{model_name}", ("GET",), "kserve", OTHER, "/v2/models/iris"),
    Endpoint(
        "/v2/models/{model_name}/ready",
        ("GET",),
        "iris",
        V2_HEALTH,
        "/v2/models/iris/ready",
        "v2_model_ready",
    ),
    Endpoint(
        "/v2/models/{model_name}/infer",
        ("POST",),
        "kserve",
        V2_INFER,
        "/v2/models/iris/infer",
    ),
    Endpoint(
        "/v2/models/{model_name}/versions/{model_version}{rest:path}",
        ALL_METHODS,
        "iris",
        OTHER,
        "/v2/models/iris/versions/1/ready",
        "v2_version_refused",
    ),
    Endpoint(
        "/v2/repository/{path:path}",
        ALL_METHODS,
        "iris",
        OTHER,
        "/v2/repository/index",
        "repository_refused",
    ),
)
OWN_ENDPOINTS = tuple(each for each in ENDPOINTS if each.answered_by == "iris")


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

    handlers: dict[str, Callable[..., Any]] = {
        handler.__name__: handler
        for handler in (
            v1_model_ready,
            v1_model_metadata,
            v1_explain,
            v2_server_ready,
            v2_model_ready,
            v2_version_refused,
            repository_refused,
        )
    }
    first = len(app.router.routes)
    for endpoint in OWN_ENDPOINTS:
        app.add_api_route(
            endpoint.path, handlers[endpoint.handler], methods=list(endpoint.methods)
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
