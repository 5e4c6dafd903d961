"""The server side of the gRPC front process (native or python): ModelInfer calls arriving from it as frames.

Each CALL runs as its own task through `InferenceServicer.infer`, the method the in-process gRPC transport calls,
so decoding, validation, the batcher and the error table are one code path for both modes. A CANCEL cancels
that task: the request leaves the batcher queue exactly as on a gRPC cancel or an expired deadline. A failure
answers with the status and message the in-process transport would have sent, and an undecodable request with
the same INVALID_ARGUMENT text as its decode guard.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import grpc
from tritonclient.grpc import service_pb2 as pb

from server.transport.grpc import InferenceServicer, status_of
from server.transport.grpc_decode import Undecodable
from server.transport.grpc_frames import CALL, CANCEL, REPLY, CoalescingWriter, Frame, pack, read_frame

log = logging.getLogger("twofour.grpc.fastpath")

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _forget(calls: dict[int, asyncio.Task[None]], call_id: int, _: object) -> None:
    calls.pop(call_id, None)


def code_number(code: grpc.StatusCode) -> int:
    return int(code.value[0])


class FastPath:
    """Serves the front process's connections on a Unix socket (one per front process, many calls each)."""

    def __init__(self, servicer: InferenceServicer, frame_limit: int) -> None:
        self._servicer = servicer
        self._limit = frame_limit

    async def start(self, path: str) -> asyncio.AbstractServer:
        return await asyncio.start_unix_server(self._connection, path)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        calls: dict[int, asyncio.Task[None]] = {}
        loop = asyncio.get_running_loop()
        replies = CoalescingWriter(writer)
        try:
            while (frame := await read_frame(reader, self._limit)) is not None:
                if frame.kind == CALL:
                    task = loop.create_task(self._answer(frame, replies))
                    calls[frame.call_id] = task
                    task.add_done_callback(functools.partial(_forget, calls, frame.call_id))
                elif frame.kind == CANCEL and frame.call_id in calls:
                    calls[frame.call_id].cancel()
        except ConnectionError as exc:
            log.error("gRPC front connection broken: %s", exc)
        finally:
            for task in list(calls.values()):  # the front is gone, and with it every client of these calls
                task.cancel()
            writer.close()

    async def _answer(self, frame: Frame, writer: CoalescingWriter) -> None:
        try:
            request = pb.ModelInferRequest.FromString(frame.payload)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the sender's fault
            bad = Undecodable(METHOD, f"{type(exc).__name__}: {exc}"[:200])
            reply = pack(REPLY, frame.call_id, bad.message().encode(), code_number(grpc.StatusCode.INVALID_ARGUMENT))
        else:
            try:
                body = (await self._servicer.infer(request)).SerializeToString()
            except Exception as exc:  # CancelledError (a CANCEL frame) is a BaseException: no answer is owed
                error = status_of(exc, "ModelInfer")
                reply = pack(REPLY, frame.call_id, error.message.encode(), code_number(error.status.grpc))
            else:
                reply = self._within_limit(frame.call_id, body)
        if not writer.is_closing():
            writer.write(reply)

    def _within_limit(self, call_id: int, body: bytes) -> bytes:
        """A response over the message limit fails that call alone with RESOURCE_EXHAUSTED, as grpc does inline;
        sent as is, it would break the connection and every other call on it."""
        if len(body) <= self._limit:
            return pack(REPLY, call_id, body)
        message = (f"response of {len(body)} bytes exceeds the {self._limit}-byte gRPC message limit "
                   "(--max-request-bytes plus 64 KiB)")
        return pack(REPLY, call_id, message.encode(), code_number(grpc.StatusCode.RESOURCE_EXHAUSTED))
