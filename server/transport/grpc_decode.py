"""Undecodable gRPC messages answer INVALID_ARGUMENT, not UNKNOWN: a server interceptor guards every deserializer.

Why: grpc.aio runs a method's protobuf deserializer itself, before any servicer code, and a `DecodeError` there
becomes `UNKNOWN: Unexpected <class DecodeError>` plus a traceback in the log, i.e. a server-side failure for
what is plainly the client's fault (truncated or garbage bytes). The interceptor wraps each method handler once
(cached per method): the deserializer returns an `Undecodable` marker instead of raising, and the behaviour aborts
with INVALID_ARGUMENT when it receives one. In a stream, a garbage message ends the stream with that status: the
framing of everything after it is as untrustworthy as the message itself.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

Deserializer = Callable[[bytes], Any]


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What the guarded deserializer hands over instead of raising."""

    method: str
    reason: str

    def message(self) -> str:
        return f"request to {self.method} is not a valid protobuf message: {self.reason}"


def guard_deserializer(method: str, deserialize: Deserializer | None) -> Deserializer | None:
    if deserialize is None:
        return None

    def safe(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the sender's fault
            return Undecodable(method, f"{type(exc).__name__}: {exc}"[:200])

    return safe


async def _abort(context: grpc.aio.ServicerContext, bad: Undecodable) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad.message())


def _unary_request(inner: Callable[..., Any]) -> Callable[..., Any]:
    """unary_unary / unary_stream: check the one request before the servicer sees it."""
    if inspect.isasyncgenfunction(inner):
        async def stream_reply(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await _abort(context, request)
            async for reply in inner(request, context):
                yield reply

        return stream_reply

    async def reply(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await _abort(context, request)
        return await inner(request, context)

    return reply


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            await _abort(context, request)
        yield request


def _stream_request(inner: Callable[..., Any]) -> Callable[..., Any]:
    """stream_unary / stream_stream: the servicer iterates a request stream that aborts on a bad message."""
    if inspect.isasyncgenfunction(inner):
        async def stream_reply(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for reply in inner(_checked(requests, context), context):
                yield reply

        return stream_reply

    async def reply(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        return await inner(_checked(requests, context), context)

    return reply


def guard_handler(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same handler with a deserializer that cannot raise and a behaviour that refuses what it could not read."""
    deserializer = guard_deserializer(method, handler.request_deserializer)
    if deserializer is None:
        return handler
    changes: dict[str, Any] = {"request_deserializer": deserializer}
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        inner = getattr(handler, kind)
        if inner is not None:
            changes[kind] = (_stream_request if kind.startswith("stream") else _unary_request)(inner)
    return handler._replace(**changes)  # RpcMethodHandler is a namedtuple (grpc ships no type hints)


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Install with `grpc.aio.server(interceptors=[DecodeGuard()])`; wraps each method's handler once."""

    def __init__(self) -> None:
        self._cache: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method in self._cache:
            return self._cache[method]
        handler = await continuation(handler_call_details)
        guarded = None if handler is None else guard_handler(method, handler)
        if handler is not None:  # unknown methods are not cached: a client could fill the cache with names
            self._cache[method] = guarded
        return guarded
