"""The Open Inference Protocol over gRPC (``--enable_grpc true``), held to REST's rules.

KServe's gRPC servicer is used for what it does right (metadata, liveness, the
conversion of messages); this module changes what it gets wrong for a server that
serves one model that it loads itself:

- The repository API (``RepositoryModelLoad``/``Unload``) is refused with
  PERMISSION_DENIED: KServe's would let any client unload the model, leaving REST
  and gRPC broken until a restart.
- ``raw_input_contents`` (what Triton's client sends) are read as typed values, so
  raw and typed tensors go through the same checks as REST's JSON and binary ones.
- A message is at most as large as a REST body, readiness is REST's readiness, and
  every call is counted by method and status code.
- A request that cannot be decoded is INVALID_ARGUMENT, never UNKNOWN or INTERNAL.

It runs in the HTTP server's event loop, started and stopped by its lifespan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from typing import Any, TypeAlias

import grpc
import numpy as np
from grpc import aio
from grpc_interceptor import AsyncExceptionToStatusInterceptor
from grpc_interceptor.exceptions import GrpcException, NotFound, PermissionDenied
from kserve.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
    UnsupportedProtocol,
)
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import (
    add_GRPCInferenceServiceServicer_to_server,
)
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.utils.utils import to_headers

from predictor.inputs import V2_DATATYPES, decoding
from predictor.metrics import GRPC_TIMINGS
from predictor.model import IrisModel

log = logging.getLogger(__name__)

REPOSITORY_REFUSED = "the model repository API is disabled on this server"
# KServe's errors as gRPC status codes: REST's 400, 404 and 503.
STATUS_OF_ERRORS: tuple[tuple[tuple[type[Exception], ...], grpc.StatusCode], ...] = (
    ((InvalidInput, UnsupportedProtocol), grpc.StatusCode.INVALID_ARGUMENT),
    ((ModelNotFound,), grpc.StatusCode.NOT_FOUND),
    ((ModelNotReady, ServerNotReady, ServerNotLive), grpc.StatusCode.UNAVAILABLE),
)
Ready = Callable[[], bool]


class IrisServicer(InferenceServicer):
    def __init__(self, data_plane: DataPlane, model: IrisModel, ready: Ready) -> None:
        # No repository extension: its two calls are refused below.
        super().__init__(data_plane, None)
        self.model = model
        self.ready = ready

    async def ServerReady(  # noqa: N802 - the protocol's method name
        self, request: pb.ServerReadyRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready())

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        if request.name != self.model.name:
            raise ModelNotFound(request.name)
        return pb.ModelReadyResponse(ready=self.ready())

    async def RepositoryModelLoad(  # noqa: N802
        self, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> Any:
        raise PermissionDenied(REPOSITORY_REFUSED)

    async def RepositoryModelUnload(  # noqa: N802
        self, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> Any:
        raise PermissionDenied(REPOSITORY_REFUSED)

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        if request.model_version:
            raise NotFound(
                f"model versions are not addressable: leave model_version empty "
                f"(got {request.model_version!r})"
            )
        infer_request = _decoded(request)
        response, _ = await self._data_plane.infer(
            request=infer_request,
            headers=to_headers(context),
            model_name=request.model_name,
        )
        if not isinstance(response, InferResponse):
            raise TypeError(f"the model answered {type(response).__name__}")
        # Raw tensors in, raw tensors out: Triton's client reads only raw outputs.
        answer = InferResponse(
            response_id=response.id,
            model_name=response.model_name,
            model_version=response.model_version,
            infer_outputs=response.outputs,
            use_binary_outputs=infer_request.use_binary_outputs,
        )
        message: pb.ModelInferResponse = answer.to_grpc()
        return message


def _decoded(request: pb.ModelInferRequest) -> InferRequest:
    """KServe's InferRequest, with raw contents read as typed values, or a 400."""
    with decoding("request"):
        InferenceServicer.validate_grpc_request(request)
        infer_request = InferRequest.from_grpc(request)
    # Checked above: with raw contents, there is one per input.
    raw_contents = zip(infer_request.inputs, request.raw_input_contents, strict=False)
    for index, (tensor, raw) in enumerate(raw_contents):
        dtype = V2_DATATYPES.get(tensor.datatype)
        if dtype is None:
            # A datatype the checks refuse anyway, with a message naming it.
            continue
        width = np.dtype(dtype).itemsize
        if len(raw) % width:
            raise InvalidInput(
                f"raw_input_contents[{index}] has {len(raw)} bytes, not a whole "
                f"number of {tensor.datatype} values"
            )
        # The protocol's raw tensors are little-endian.
        values = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        tensor.data = values.tolist()
    return infer_request


class ErrorStatus(AsyncExceptionToStatusInterceptor):
    """A client's mistake gets its own status and message; anything else is an
    INTERNAL logged here.

    KServe's own interceptor reads a ``reason`` that ModelNotReady does not have, so
    a call to a model that is not loaded yet answered UNKNOWN with an AttributeError.
    """

    async def handle_exception(
        self,
        ex: Exception,
        request_or_iterator: Any,
        context: aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        if isinstance(ex, GrpcException):
            await context.abort(ex.status_code, ex.details)
        for kinds, code in STATUS_OF_ERRORS:
            if isinstance(ex, kinds):
                log.debug("client error method=%s error=%r", method_name, str(ex))
                await context.abort(code, str(ex))
        log.error("unhandled error method=%s", method_name, exc_info=ex)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the log")


# Generic only in the type stubs.
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class CallMetrics(aio.ServerInterceptor):
    """Count and time every call by method and status code, as REST's requests are."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[MethodHandler | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rpartition("/")[2]
        # A grpc.aio server's handlers are coroutine functions.
        inner: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary

        async def counted(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await inner(request, context)
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                GRPC_TIMINGS.observe(method, code.name, time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class GRPCServer:
    """The gRPC v2 server on its port, with REST's body limit as its message limit."""

    def __init__(
        self,
        port: int,
        data_plane: DataPlane,
        model: IrisModel,
        ready: Ready,
        max_message_bytes: int,
        max_threads: int,
    ) -> None:
        self.port = port
        self.servicer = IrisServicer(data_plane, model, ready)
        self.max_message_bytes = max_message_bytes
        self.max_threads = max_threads
        self._server: aio.Server | None = None

    async def start(self) -> None:
        server = aio.server(
            futures.ThreadPoolExecutor(max_workers=self.max_threads),
            interceptors=(CallMetrics(), ErrorStatus()),
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", -1),
            ],
        )
        add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        server.add_insecure_port(f"0.0.0.0:{self.port}")
        await server.start()
        self._server = server
        log.info(
            "grpc listening port=%d max_message_bytes=%d",
            self.port,
            self.max_message_bytes,
        )

    async def stop(self, grace_seconds: float) -> None:
        if self._server is not None:
            await self._server.stop(grace_seconds)
