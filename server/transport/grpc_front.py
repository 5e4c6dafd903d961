"""The Python gRPC front process (`--grpc-frontend python`, and `auto` where the native front is not built): the
public gRPC port, in a process (and GIL) of its own. native/grpc_front/ is the same front in C++, for less CPU.

Why a process: in one process, grpc.aio's completion events, the event loop's decode/batch/encode work and the
compute thread all queue for one GIL, and gRPC throughput stalled at ~0.4 of Triton's while HTTP reached ~0.9
with the same dataplane (bench/RESULTS.md, docs/grpc_frontend.md). This process runs grpc.aio and nothing else:
it never parses a message. ModelInfer, the hot path, goes to the server as raw bytes over a framed Unix socket
(grpc_frames.py, grpc_fastpath.py). Every other method of every service the server offers is relayed, also as
raw bytes, to the server's own grpc.aio server on a private Unix socket, with the caller's metadata (the bearer
token of repository control), deadline and cancellation, so those keep exactly the in-process semantics.

Run by the server (grpc_front_process.py), never by hand: `python -m server.transport.grpc_front --address ...`.
It prints one JSON line, `{"port": N}` once bound or `{"error": "..."}`, and exits when told (SIGTERM, sent after
the server's drain: stop accepting, end the clients' connections so nothing can end CANCELLED, then stop gRPC
within the grace) or when its parent server process is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc

from server.transport.grpc_drain import close_public_port
from server.transport.grpc_frames import CALL, CANCEL, OK, REPLY, CoalescingWriter, pack, read_frame

FAST_METHOD = "/inference.GRPCInferenceService/ModelInfer"
CODES = {int(code.value[0]): code for code in grpc.StatusCode}
DROPPED_METADATA = ("user-agent", "content-type", "te", "host")  # set by the relay channel itself


def service_methods() -> dict[str, tuple[bool, bool]]:
    """Every method the server serves: path -> (client streams, server streams), read off the protos' descriptors
    so that a method added to a service is relayed without touching this file."""
    from grpc_health.v1 import health_pb2
    from tritonclient.grpc import service_pb2

    from server.proto import sparsity_pb2

    services = [service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
                health_pb2.DESCRIPTOR.services_by_name["Health"],
                sparsity_pb2.DESCRIPTOR.services_by_name["SparsityService"]]
    return {f"/{service.full_name}/{method.name}": (method.client_streaming, method.server_streaming)
            for service in services for method in service.methods}


class FastClient:
    """ModelInfer over the framed socket: many calls in flight on one connection, matched by id."""

    def __init__(self, path: str, frame_limit: int) -> None:
        self._path, self._limit = path, frame_limit
        self._writer: CoalescingWriter | None = None
        self._waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._receiver: asyncio.Task[None] | None = None  # held: the loop keeps only weak references to tasks

    async def _connect(self) -> CoalescingWriter:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            return writer  # the hot path: no lock once connected
        async with self._lock:
            if self._writer is None or self._writer.is_closing():
                reader, stream = await asyncio.open_unix_connection(self._path)
                self._writer = CoalescingWriter(stream)
                self._receiver = asyncio.get_running_loop().create_task(self._receive(reader))
            return self._writer

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        try:
            while (frame := await read_frame(reader, self._limit)) is not None:
                future = self._waiting.pop(frame.call_id, None)
                if frame.kind == REPLY and future is not None and not future.done():
                    future.set_result((frame.status, frame.payload))
        except ConnectionError:
            pass
        finally:  # the server went away: every call waiting on it fails now rather than at its deadline
            self._writer = None
            for future in self._waiting.values():
                if not future.done():
                    future.set_result((int(grpc.StatusCode.UNAVAILABLE.value[0]), b"the server process is gone"))
            self._waiting.clear()

    async def call(self, payload: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            writer = await self._connect()
        except OSError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the server process is not reachable: {exc}")
            raise  # unreachable: abort raises
        call_id = next(self._ids) & 0xFFFFFFFF
        future = self._waiting[call_id] = asyncio.get_running_loop().create_future()
        writer.write(pack(CALL, call_id, payload))
        try:
            status, body = await future
        except asyncio.CancelledError:  # the client cancelled or its deadline passed: drop it from the queue too
            self._waiting.pop(call_id, None)
            if not writer.is_closing():
                writer.write(pack(CANCEL, call_id))
            raise
        if status != OK:
            await context.abort(CODES.get(status, grpc.StatusCode.UNKNOWN), body.decode("utf-8", "replace"))
        return body


class Relay:
    """Any other method, relayed as raw bytes to the server's gRPC socket."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    @staticmethod
    def _options(context: grpc.aio.ServicerContext) -> dict[str, Any]:
        metadata = tuple((key, value) for key, value in (context.invocation_metadata() or ())
                         if not key.startswith((":", "grpc-")) and key.lower() not in DROPPED_METADATA)
        return {"metadata": metadata, "timeout": context.time_remaining()}

    async def unary_unary(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        call = self._channel.unary_unary(method)(request, **self._options(context))
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
            raise  # unreachable: abort raises

    async def streaming(self, method: str, request: Any, context: grpc.aio.ServicerContext,
                        client_streams: bool) -> AsyncIterator[bytes]:
        if client_streams:
            call: Any = self._channel.stream_stream(method)(request, **self._options(context))
        else:
            call = self._channel.unary_stream(method)(request, **self._options(context))
        try:
            async for reply in call:
                yield reply
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        finally:
            call.cancel()  # a no-op once finished; ends the server's side when our client left early


class FrontHandler(grpc.GenericRpcHandler):
    """Routes each known method to the fast path or the relay; unknown methods stay UNIMPLEMENTED."""

    def __init__(self, fast: FastClient, relay: Relay) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method, (client_streams, server_streams) in service_methods().items():
            self._handlers[method] = self._handler(method, client_streams, server_streams, fast, relay)

    @staticmethod
    def _handler(method: str, client_streams: bool, server_streams: bool, fast: FastClient,
                 relay: Relay) -> grpc.RpcMethodHandler:
        if method == FAST_METHOD:
            return grpc.unary_unary_rpc_method_handler(fast.call)
        if not client_streams and not server_streams:
            async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                return await relay.unary_unary(method, request, context)

            return grpc.unary_unary_rpc_method_handler(unary)

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            async for reply in relay.streaming(method, request, context, client_streams):
                yield reply

        if client_streams:
            return grpc.stream_stream_rpc_method_handler(streaming)
        return grpc.unary_stream_rpc_method_handler(streaming)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


async def serve(args: argparse.Namespace) -> int:
    options = [("grpc.max_receive_message_length", args.max_message_bytes),
               ("grpc.max_send_message_length", args.max_message_bytes),
               ("grpc.max_concurrent_streams", args.max_concurrent_streams),
               ("grpc.so_reuseport", 0)]
    channel = grpc.aio.insecure_channel(f"unix:{args.relay_socket}", options=options[:2])
    try:  # connected before the port is reported: a client's first relayed call never waits on (or meets) the
        # relay's first connection, and a relay that cannot be reached fails the start instead of that call
        await asyncio.wait_for(channel.channel_ready(), args.relay_connect_secs)
    except TimeoutError:
        print(json.dumps({"error": f"cannot reach the server's gRPC socket {args.relay_socket}"}), flush=True)
        await channel.close()
        return 1
    fast = FastClient(args.fast_socket, args.max_message_bytes + 1024)
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((FrontHandler(fast, Relay(channel)),))
    try:
        port = server.add_insecure_port(args.address)
    except RuntimeError as exc:
        port, reason = 0, str(exc)
    else:
        reason = "the address is taken or invalid"
    if port == 0:
        print(json.dumps({"error": f"cannot bind gRPC to {args.address}: {reason}"}), flush=True)
        return 1
    await server.start()
    print(json.dumps({"port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # Ctrl-C reaches the whole group: the server decides
    parent = os.getppid()
    while not stop.is_set() and os.getppid() == parent:  # an orphan must not keep the port
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            pass
    close_public_port(port)  # the server has drained: end the clients' connections first (grpc_drain.py)
    await server.stop(grace=args.grace_secs)
    await channel.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", required=True, help="public host:port to bind")
    parser.add_argument("--fast-socket", required=True, help="the server's framed ModelInfer socket")
    parser.add_argument("--relay-socket", required=True, help="the server's own gRPC Unix socket")
    parser.add_argument("--max-message-bytes", type=int, required=True)
    parser.add_argument("--max-concurrent-streams", type=int, required=True)
    parser.add_argument("--grace-secs", type=float, default=1.0)
    parser.add_argument("--relay-connect-secs", type=float, default=10.0,
                        help="how long to wait for the relay socket's connection before failing the start")
    return asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
