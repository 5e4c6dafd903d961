"""KServe v2 / Triton gRPC: `inference.GRPCInferenceService` over tritonclient's own generated stubs.

A thin adapter: decode with server.codec, call the DataPlane / RepositoryControl, encode. Every failure leaves as
a gRPC status taken from the one table in errors.py; anything unexpected becomes INTERNAL and is logged, and no
client mistake can take the server down. The proto is never compiled a second time: the messages and the
servicer base come from `tritonclient.grpc`, so the wire format is exactly what the unmodified client expects.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from server.codec import grpc_messages as messages
from server.codec.grpc_tensors import decode_infer_request, encode_infer_response, params_to_dict
from server.dataplane import DataPlane
from server.errors import ErrorKind, ServingError, as_serving_error
from server.repository_control import RepositoryControl
from server.settings import Settings
from server.transport.grpc_decode import DecodeGuard
from server.transport.grpc_health import add_health_service
from server.transport.grpc_stream import stream_infer

log = logging.getLogger("twofour.grpc")

MESSAGE_HEADROOM = 64 * 1024  # protobuf framing, names and shapes on top of the tensor bytes

Reply = TypeVar("Reply")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Reply]]


def unary(handler: Handler[Reply]) -> Handler[Reply]:
    """Translate exceptions of one unary RPC into a status; cancellation passes through untouched."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Reply:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # CancelledError is a BaseException: it reaches grpc and the dataplane as is
            error = status_of(exc, handler.__name__)
            await context.abort(error.status.grpc, error.message)
            raise  # unreachable: abort raises

    return wrapper


def status_of(exc: Exception, method: str) -> ServingError:
    """What a failed RPC answers (call inside the `except`): ours as they are, anything else INTERNAL, logged."""
    if not isinstance(exc, ServingError):  # ours were logged where they arose
        log.exception("gRPC %s failed", method)
    return as_serving_error(exc)


def bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    """The token of an `authorization: Bearer <token>` metadata entry, or None."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _unsupported(feature: str) -> Handler[Any]:
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise ServingError(ErrorKind.UNIMPLEMENTED, f"{feature} is not supported by twofour")

    return unary(handler)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService backed by one DataPlane and RepositoryControl."""

    def __init__(self, dataplane: DataPlane, control: RepositoryControl) -> None:
        self._dataplane = dataplane
        self._control = control

    # -- health and metadata -------------------------------------------------------------------------------
    @unary
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._dataplane.live())

    @unary
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._dataplane.ready())

    @unary
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._dataplane.model_ready(request.name, request.version))

    @unary
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return messages.server_metadata(self._dataplane.server_metadata())

    @unary
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return messages.model_metadata(self._dataplane.model_metadata(request.name, request.version))

    @unary
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self._dataplane.model_config(request.name, request.version))

    @unary
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest,
                              context: Any) -> pb.ModelStatisticsResponse:
        return messages.statistics_response(self._dataplane.statistics(request.name, request.version))

    # -- inference -----------------------------------------------------------------------------------------
    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """One request, decode -> dataplane -> encode; shared by the unary and the streaming RPC."""
        decoded = decode_infer_request(request, self._dataplane.settings.max_request_elements)
        return encode_infer_response(await self._dataplane.infer(decoded))

    def _preserves_ordering(self, request: pb.ModelInferRequest) -> bool:
        return self._dataplane.preserves_ordering(request.model_name, request.model_version)

    @unary
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return await self.infer(request)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # An async generator function, so grpc.aio treats it as a streaming response (not a coroutine).
        # Per-request failures are answered inside the stream; only a bug in the stream itself lands here.
        try:
            async for reply in stream_infer(self.infer, request_iterator, log, ordered=self._preserves_ordering):
                yield reply
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("gRPC ModelStreamInfer failed")
            error = as_serving_error(exc)
            await context.abort(error.status.grpc, error.message)

    # -- repository ----------------------------------------------------------------------------------------
    @unary
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest,
                              context: Any) -> pb.RepositoryIndexResponse:
        self._control.authorize(bearer_token(context))
        return messages.repository_index(self._control.index(ready_only=request.ready))

    @unary
    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: grpc.aio.ServicerContext) -> pb.RepositoryModelLoadResponse:
        overrides = sorted(params_to_dict(request.parameters))
        if overrides:
            raise ServingError(ErrorKind.UNIMPLEMENTED, f"load parameters {overrides} (config override, model "
                               "files) are not supported; put the model in the repository and load it by name")
        await self._control.load(request.model_name, bearer_token(context))
        return pb.RepositoryModelLoadResponse()

    @unary
    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: grpc.aio.ServicerContext) -> pb.RepositoryModelUnloadResponse:
        # `unload_dependents` needs no handling: twofour has no ensembles, so a model has no dependents.
        await self._control.unload(request.model_name, bearer_token(context))
        return pb.RepositoryModelUnloadResponse()

    # -- extensions twofour does not offer -----------------------------------------------------------------
    SystemSharedMemoryStatus = _unsupported("system shared memory")
    SystemSharedMemoryRegister = _unsupported("system shared memory")
    SystemSharedMemoryUnregister = _unsupported("system shared memory")
    CudaSharedMemoryStatus = _unsupported("CUDA shared memory")
    CudaSharedMemoryRegister = _unsupported("CUDA shared memory")
    CudaSharedMemoryUnregister = _unsupported("CUDA shared memory")
    TraceSetting = _unsupported("the trace extension (TraceSetting)")
    LogSettings = _unsupported("the logging extension (LogSettings); use --log-level")


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel arguments: message limits from settings, and no SO_REUSEPORT so a taken port fails loudly."""
    limit = settings.max_request_bytes + MESSAGE_HEADROOM
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        ("grpc.so_reuseport", 0),
    ]


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def create_grpc_server(dataplane: DataPlane, control: RepositoryControl, settings: Settings,
                       address: str | None = None) -> tuple[grpc.aio.Server, int]:
    """The gRPC server with both services registered and its port bound (not started); returns the bound port.

    Port 0 binds an ephemeral port (tests); whether gRPC runs at all is the app's choice (Settings.grpc_port).
    `address` overrides the public host:port, e.g. the private `unix:` socket behind the gRPC front process.
    """
    server = grpc.aio.server(options=server_options(settings), interceptors=[DecodeGuard()])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane, control), server)
    add_health_service(server, dataplane)
    address = address or bind_address(settings.host, settings.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot bind gRPC to {address}: {exc}") from None
    if port == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    return server, port

