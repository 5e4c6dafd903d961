"""The framing between the gRPC front process and the server process (`--grpc-frontend native|python`;
the native front, native/grpc_front/fast_link.cc, speaks the same frames).

One Unix-socket connection carries many ModelInfer calls at once, each under its own id: the front sends `CALL`
(the request's raw protobuf bytes, never parsed there) and `CANCEL` (the client went away or its deadline
passed); the server answers each call once with `REPLY`, whose status is a gRPC status code (0 = OK, the payload
is the response's bytes; otherwise the payload is the UTF-8 error message from the one error table). The native
front also sends HTTP infer requests as `HTTP_CALL`, answered with `HTTP_REPLY` (http_frames.py); `CANCEL`
serves both.

Frame: `<u32 payload length><u32 call id><u8 kind><u8 status>` then the payload. The socket lives in a private
0700 directory of the server's, so only the server's own front process can reach it.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

HEADER = struct.Struct("<IIBB")
CALL, CANCEL, REPLY = 1, 2, 3
HTTP_CALL, HTTP_REPLY = 4, 5  # an HTTP infer request from the native front, and its answer (http_frames.py)
OK = 0


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    call_id: int
    status: int
    payload: bytes


def pack(kind: int, call_id: int, payload: bytes = b"", status: int = OK) -> bytes:
    return HEADER.pack(len(payload), call_id, kind, status) + payload


async def read_frame(reader: asyncio.StreamReader, limit: int) -> Frame | None:
    """The next frame, or None at a clean end of stream. A frame over `limit` bytes is a broken peer."""
    try:
        length, call_id, kind, status = HEADER.unpack(await reader.readexactly(HEADER.size))
        if length > limit:
            raise ConnectionError(f"frame of {length} bytes exceeds the {limit}-byte limit")
        payload = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ConnectionError("connection closed in the middle of a frame") from None
        return None
    return Frame(kind, call_id, status, payload)


class CoalescingWriter:
    """Frames written during one event-loop iteration leave together, in one send at its end.

    Used by the Python front process for its CALL and CANCEL frames. Why: each send to the other process costs a
    cross-CPU wake-up. When the server's side still ran on its event loop (sessions 3-4), one send per reply frame
    was 14% of the loop's busy time, and deferring even the first frame of an iteration measured x1.09 at c=8; the
    flush runs in the very next iteration, so a lone frame waits for nothing. The server's side now sends one
    buffer per batch from its compute thread (grpc_fastpath.py).
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: list[bytes] = []
        self._flush_scheduled = False

    def write(self, frame: bytes) -> None:
        self._pending.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._writer.is_closing():
                self._writer.write(data)

    def is_closing(self) -> bool:
        return self._writer.is_closing()
