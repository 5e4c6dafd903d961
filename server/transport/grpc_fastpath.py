"""The server side of the gRPC front process (native or python): ModelInfer calls arriving from it as frames.

Why threads and not the event loop: a call that went through asyncio paid one loop iteration per hand-off
(frame read, task start, batcher wake-up, compute hand-off, delivery, encode, send: about seven, each an epoll
round and often a cross-CPU wake-up). Here each front connection has a reader thread that decodes and admits a
call and submits it to the model's scheduler at once; the compute thread that ran the batch encodes the replies
and sends them, one send per batch. The loop is not on the path at all.

Decoding, validation, the scheduler and the error table are the dataplane's, as for every transport. A CANCEL
withdraws the call's request from the scheduler's queue (or drops its answer if it is already computing), exactly
as a gRPC cancel does inline. A failure answers with the status and message the in-process transport would have
sent, and an undecodable request with the same INVALID_ARGUMENT text as its decode guard.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable

import grpc
from tritonclient.grpc import service_pb2 as pb

from server.admission import Admission
from server.codec.grpc_tensors import decode_infer_request
from server.dataplane import DataPlane
from server.transport import http_frames
from server.transport.front_completions import FrameCompletion, GrpcCompletion, HttpCompletion, code_number
from server.transport.grpc_decode import Undecodable
from server.transport.grpc_frames import CALL, CANCEL, HEADER, HTTP_CALL, REPLY, pack
from server.types import InferRequest

log = logging.getLogger("twofour.grpc.fastpath")

METHOD = "/inference.GRPCInferenceService/ModelInfer"
READ_BUFFER = 256 * 1024


class FastPath:
    """Accepts the front process's connections on a Unix socket (on the loop: rare); each gets a FrontLink."""

    def __init__(self, dataplane: DataPlane, frame_limit: int) -> None:
        self.dataplane = dataplane
        self._limit = frame_limit
        self._listener: socket.socket | None = None
        self._links: set[FrontLink] = set()

    async def start(self, path: str) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(8)
        listener.setblocking(False)
        asyncio.get_running_loop().add_reader(listener, self._accept)
        self._listener = listener

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            connection, _ = self._listener.accept()
        except BlockingIOError:
            return
        connection.setblocking(True)
        link = FrontLink(connection, self.dataplane, self._limit, self._links.discard)
        self._links.add(link)
        threading.Thread(target=link.serve, name="twofour-grpc-link", daemon=True).start()

    def close(self) -> None:
        """Stop accepting and end every connection (their calls are cancelled)."""
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener)
            self._listener.close()
            self._listener = None
        for link in list(self._links):
            link.shut()


class FrontLink:
    """One connection from the front: its reader thread, its calls in flight, and its reply channel."""

    def __init__(self, connection: socket.socket, dataplane: DataPlane, limit: int,
                 forget: Callable[[FrontLink], None]) -> None:
        self._socket = connection
        self.dataplane = dataplane
        self.limit = limit
        self._forget = forget
        self._max_elements = dataplane.settings.max_request_elements
        self._calls: dict[int, FrameCompletion] = {}
        self._lock = threading.Lock()  # guards _pending
        self._send_lock = threading.Lock()  # keeps each flush's bytes together on the socket
        self._pending: list[bytes] = []

    def serve(self) -> None:
        """The reader thread: frames until the front closes the connection, then every open call is cancelled."""
        stream: http_frames.Stream = self._socket.makefile("rb", buffering=READ_BUFFER)  # type: ignore[assignment]
        try:
            while True:
                header = stream.read(HEADER.size)
                if len(header) < HEADER.size:
                    if header:
                        log.error("gRPC front connection broken: closed in the middle of a frame")
                    return
                length, call_id, kind, _ = HEADER.unpack(header)
                if length > self.limit:
                    log.error("gRPC front connection broken: frame of %d bytes exceeds the %d-byte limit",
                              length, self.limit)
                    return
                if kind == HTTP_CALL:  # read apart: its body lands aligned, in a buffer of its own
                    call = http_frames.read_http_call(stream, length)
                    if call is None:
                        log.error("gRPC front connection broken: closed in the middle of a frame")
                        return
                    self._http_call(call_id, call)
                    continue
                payload = stream.read(length) if length else b""
                if len(payload) < length:
                    log.error("gRPC front connection broken: closed in the middle of a frame")
                    return
                if kind == CALL:
                    self._call(call_id, payload)
                elif kind == CANCEL:
                    self.cancel(call_id)
        except OSError as exc:
            log.error("gRPC front connection broken: %s", exc)
        finally:
            for call_id in list(self._calls):  # the front is gone, and with it every client of these calls
                self.cancel(call_id)
            stream.close()
            self._socket.close()
            self._forget(self)

    def shut(self) -> None:
        """Wake the reader thread with an end of stream (server stop)."""
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _call(self, call_id: int, payload: bytes) -> None:
        try:
            request = pb.ModelInferRequest.FromString(payload)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the sender's fault
            bad = Undecodable(METHOD, f"{type(exc).__name__}: {exc}"[:200])
            self.send(pack(REPLY, call_id, bad.message().encode(), code_number(grpc.StatusCode.INVALID_ARGUMENT)))
            return
        self._admit(call_id, lambda: decode_infer_request(request, self._max_elements), GrpcCompletion)

    def _http_call(self, call_id: int, call: http_frames.HttpCall) -> None:
        self._admit(call_id, lambda: http_frames.decode(call, self._max_elements), HttpCompletion)

    def _admit(self, call_id: int, decode: Callable[[], InferRequest], kind: type[FrameCompletion]) -> None:
        """Decode, admit and submit a call; a refusal is answered at once and the reader goes on."""
        admission: Admission | None = None
        try:
            admission = self.dataplane.admit(decode())
            completion = kind(self, call_id, admission)
            admission.item.completion = completion
            self._calls[call_id] = completion
            admission.scheduler.submit(admission.item)
        except Exception as exc:  # refused at once: answer now, keep reading
            self._calls.pop(call_id, None)
            if admission is not None:  # admitted, then refused by the scheduler (e.g. its queue is full)
                exc = self.dataplane.failed(admission, exc)
            self.send(kind.refusal(call_id, exc))

    def cancel(self, call_id: int) -> None:
        completion = self._calls.pop(call_id, None)
        if completion is None:
            return  # answered already (its reply and this cancel crossed), or never known
        if completion.admission.scheduler.cancel(completion.admission.item):  # still queued: it never runs
            self.dataplane.failed(completion.admission, asyncio.CancelledError())
        else:  # taken for a batch already: its answer is dropped, and recorded as cancelled, when it comes
            completion.cancel()

    def forget(self, call_id: int) -> bool:
        """Whether the call was still open (not cancelled); it is closed either way."""
        return self._calls.pop(call_id, None) is not None

    def put(self, frame: bytes) -> None:
        with self._lock:
            self._pending.append(frame)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            with self._send_lock:
                try:
                    self._socket.sendall(b"".join(pending))
                except OSError as exc:  # the front is gone: its reader thread cancels what is left
                    log.warning("gRPC front connection lost while replying: %s", exc)

    def send(self, frame: bytes) -> None:
        self.put(frame)
        self.flush()
