"""How a call from the front process is answered: its reply frame, gRPC's or HTTP's, sent with the rest of its batch.

A completion runs on the compute thread that finished the batch: it encodes the reply there (off the event loop
and off the reader thread) and hands the frame to its link, which sends one buffer per batch. The two protocols
differ only in how a result or an error becomes a frame; cancellation and recording are shared.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import grpc

from server.admission import Admission
from server.codec.grpc_tensors import encode_infer_response
from server.dataplane import DataPlane
from server.errors import ServingError
from server.transport import http_frames
from server.transport.grpc import status_of
from server.transport.grpc_frames import REPLY, pack

log = logging.getLogger("twofour.grpc.fastpath")


def code_number(code: grpc.StatusCode) -> int:
    return int(code.value[0])


class Link(Protocol):
    """What a completion needs of its FrontLink (grpc_fastpath.py)."""

    dataplane: DataPlane
    limit: int

    def forget(self, call_id: int) -> bool: ...
    def put(self, frame: bytes) -> None: ...
    def flush(self) -> None: ...


class FrameCompletion:
    """A call's Completion; subclasses say how a result and an error become its reply frame."""

    __slots__ = ("_link", "_call_id", "admission", "_cancelled")

    def __init__(self, link: Link, call_id: int, admission: Admission) -> None:
        self._link, self._call_id, self.admission = link, call_id, admission
        self._cancelled = False

    @property
    def channel(self) -> Link:
        return self._link

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled

    def resolve(self, outputs: dict[str, Any]) -> None:
        if not self._gone():
            self._link.put(self.ok_frame(outputs))

    def reject(self, error: BaseException) -> None:
        if not self._gone():
            failure = self._link.dataplane.failed(self.admission, error)
            self._link.put(self.refusal(self._call_id, failure))

    def _gone(self) -> bool:
        """True (and recorded as cancelled) when the call was cancelled before its answer: nobody waits for it."""
        if self._link.forget(self._call_id) or not self._cancelled:
            return False
        self._link.dataplane.failed(self.admission, asyncio.CancelledError())
        return True

    def ok_frame(self, outputs: dict[str, Any]) -> bytes:
        raise NotImplementedError

    @staticmethod
    def refusal(call_id: int, exc: Exception) -> bytes:
        """The reply to a call that failed, before or after admission."""
        raise NotImplementedError


class GrpcCompletion(FrameCompletion):
    """A ModelInfer call: REPLY with the response's protobuf bytes, or a gRPC status and the table's message."""

    __slots__ = ()

    def ok_frame(self, outputs: dict[str, Any]) -> bytes:
        link, call_id = self._link, self._call_id
        try:
            body = encode_infer_response(link.dataplane.respond(self.admission, outputs)).SerializeToString()
        except Exception as exc:
            return self.refusal(call_id, exc)
        if len(body) <= link.limit:
            return pack(REPLY, call_id, body)
        # over the limit it fails this call alone with RESOURCE_EXHAUSTED, as grpc does inline; sent as is, it
        # would break the connection and every other call on it
        message = (f"response of {len(body)} bytes exceeds the {link.limit}-byte gRPC message limit "
                   "(--max-request-bytes plus 64 KiB)")
        return pack(REPLY, call_id, message.encode(), code_number(grpc.StatusCode.RESOURCE_EXHAUSTED))

    @staticmethod
    def refusal(call_id: int, exc: Exception) -> bytes:
        error = exc if isinstance(exc, ServingError) else status_of(exc, "ModelInfer")
        return pack(REPLY, call_id, error.message.encode(), code_number(error.status.grpc))


class HttpCompletion(FrameCompletion):
    """An HTTP infer request from the native front: HTTP_REPLY with the body the uvicorn route would send."""

    __slots__ = ()

    def ok_frame(self, outputs: dict[str, Any]) -> bytes:
        try:
            response = self._link.dataplane.respond(self.admission, outputs)
            binary = bool(self.admission.request.parameters.get("binary_data_output", False))
            return http_frames.ok_frame(self._call_id, response, binary)
        except Exception as exc:
            return self.refusal(self._call_id, exc)

    @staticmethod
    def refusal(call_id: int, exc: Exception) -> bytes:
        if not isinstance(exc, ServingError):  # ours were logged where they arose
            log.error("HTTP inference failed", exc_info=exc)
        return http_frames.error_frame(call_id, exc)
