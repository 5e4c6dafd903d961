"""HTTP infer requests that the native front (native/grpc_front/http_front.h) sends as frames, and their replies.

Why: over uvicorn every infer request cost the event loop a parse, an ASGI cycle and a task; at concurrency 32 HTTP
served about 0.7 of gRPC's rate with the loop as the bottleneck. The native front now owns the public HTTP port and
sends each well-formed infer request here as one HTTP_CALL frame, on the same connection and reader thread as
gRPC's calls (grpc_fastpath.py); everything else it relays to uvicorn unchanged. Decoding, admission, the error
table and encoding are exactly the uvicorn route's (codec/http_infer.py, errors.py), so a request gets the same
answer either way; only the bytes' route differs.

HTTP_CALL payload: `<u16 model length><u16 version length><u16 header-length length, 0xFFFF when absent>`, the
model, the version, the Inference-Header-Content-Length value as the client sent it, then the body.
HTTP_REPLY payload: `<u16 status><u8 flags: 1 close the connection, 2 binary body><u32 JSON header length>`, then
the body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from server.codec.http_infer import decode_infer_request, encode_infer_response
from server.errors import as_serving_error
from server.transport.grpc_frames import HTTP_REPLY, pack
from server.transport.http_body import aligned_buffer, header_offset
from server.transport.http_errors import error_body
from server.types import InferRequest, InferResponse

PREFIX = struct.Struct("<HHH")
REPLY_PREFIX = struct.Struct("<HBI")
ABSENT = 0xFFFF
CLOSE, BINARY = 1, 2


class Stream(Protocol):
    """The link's buffered socket reader."""

    def read(self, size: int, /) -> bytes: ...
    def readinto(self, buffer: memoryview, /) -> int: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class HttpCall:
    model: str
    version: str
    header_length: str | None
    body: memoryview


def read_http_call(stream: Stream, length: int) -> HttpCall | None:
    """The call whose `length`-byte payload is next on `stream`; None if the stream ended inside it.

    The body lands in one writable buffer, placed so that the binary region after its JSON header starts on a
    64-byte boundary (as http_body.read_body does): tensors view the received bytes in place.
    """
    prefix = stream.read(PREFIX.size)
    if len(prefix) < PREFIX.size:
        return None
    model_size, version_size, header_size = PREFIX.unpack(prefix)
    text_size = model_size + version_size + (0 if header_size == ABSENT else header_size)
    if PREFIX.size + text_size > length:
        raise ConnectionError(f"HTTP call frame of {length} bytes is shorter than its own prefix says")
    text = stream.read(text_size)
    if len(text) < text_size:
        return None
    model = text[:model_size].decode("utf-8", "replace")
    version = text[model_size:model_size + version_size].decode("utf-8", "replace")
    header_length = None if header_size == ABSENT else text[model_size + version_size:].decode("latin-1")
    body_size = length - PREFIX.size - text_size
    buffer, pad = aligned_buffer(body_size, header_offset(header_length))
    view = memoryview(buffer)[pad:pad + body_size]
    if body_size and stream.readinto(view) < body_size:
        return None
    return HttpCall(model, version, header_length, view)


def decode(call: HttpCall, max_elements: int) -> InferRequest:
    """The request, exactly as the uvicorn route decodes the same body and headers."""
    return decode_infer_request(call.body, call.header_length, call.model, call.version, max_elements)


def ok_frame(call_id: int, response: InferResponse, binary_output: bool) -> bytes:
    payload, header_length = encode_infer_response(response, binary_output)
    flags = 0 if header_length is None else BINARY
    return pack(HTTP_REPLY, call_id, REPLY_PREFIX.pack(200, flags, header_length or 0) + payload)


def error_frame(call_id: int, exc: BaseException) -> bytes:
    """The error table's status and the uvicorn route's own error body (http_errors.error_body)."""
    error = as_serving_error(exc)
    body, close = error_body(error)
    return pack(HTTP_REPLY, call_id, REPLY_PREFIX.pack(error.status.http, CLOSE if close else 0, 0) + body)
