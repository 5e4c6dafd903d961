"""Read an HTTP request body under the size limit, into one aligned, writable buffer.

Why not `await request.body()`: it trusts no limit and returns immutable bytes, which `torch.from_numpy` cannot
share (one more copy later). Here the body lands once in a `bytearray`, placed so the binary region after the
JSON header starts on a 64-byte boundary: tensors viewing it are aligned and writable, so the model reads the
received bytes in place. The limit is checked against Content-Length up front and counted while streaming
(a chunked or lying client cannot get past it); compressed bodies (tritonclient's gzip/deflate request option)
are inflated with the same limit applied to the output, so a small bomb cannot expand past it. The whole body must
arrive within `timeout` seconds: uvicorn bounds idle keep-alive time but not a body that stalls half-way, and a
client trickling bytes would otherwise hold its connection and its buffer for ever.
"""

from __future__ import annotations

import asyncio
import ctypes
import zlib
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from server.errors import ErrorKind, ServingError, invalid, too_large

ALIGNMENT = 64


class BodyTooLarge(ServingError):
    """413 for a body cut off mid-stream; `close_connection` when unread bytes remain on the socket."""

    def __init__(self, message: str, close_connection: bool = False) -> None:
        super().__init__(ErrorKind.TOO_LARGE, message, close_connection)


class BodyTimeout(ServingError):
    """408 for a body that did not arrive in time; the rest may still be in flight, so the connection closes."""

    close_connection = True

    def __init__(self, timeout: float) -> None:
        super().__init__(ErrorKind.REQUEST_TIMEOUT, f"request body did not arrive within {timeout:g} s; "
                         "send the whole body without pausing")


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _content_length(request: Request, limit: int) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not (value.strip().isascii() and value.strip().isdigit()):
        raise invalid(f"Content-Length must be a non-negative integer, got {value[:40]!r}")
    length = int(value)
    if length > limit:
        raise too_large(f"request body of {length} bytes exceeds the server's limit of {limit} bytes")
    return length


def header_offset(value: str | None) -> int:
    """Where the binary region starts, from an Inference-Header-Content-Length value (0 if it is not a number)."""
    value = (value or "").strip()
    # Only plain ASCII digits: str.isdigit accepts '²', which int() refuses; the codec reports a bad header.
    return int(value) if value.isascii() and value.isdigit() else 0


def aligned_buffer(size: int, offset: int) -> tuple[bytearray, int]:
    """A buffer and the position in it where `size` bytes go so that their byte `offset` sits on an ALIGNMENT
    boundary in memory (the allocator promises only 16 bytes, so the address itself decides)."""
    buffer = bytearray(size + ALIGNMENT)
    address = ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))
    return buffer, (-(address + offset % ALIGNMENT)) % ALIGNMENT


async def read_body(request: Request, limit: int, timeout: float) -> memoryview:
    """The request body (inflated if compressed), at most `limit` bytes, as a view of a writable buffer."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", *_WBITS):
        raise invalid(f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    length = _content_length(request, limit)
    offset = header_offset(request.headers.get("inference-header-content-length")) if encoding == "identity" else 0
    try:
        async with asyncio.timeout(timeout):
            body = await _receive(request, limit, length, offset)
    except TimeoutError:
        raise BodyTimeout(timeout) from None
    except ClientDisconnect:
        raise ServingError(ErrorKind.CANCELLED, "client disconnected while sending the request") from None
    if encoding == "identity":
        return body
    return memoryview(_inflate(body, encoding, limit))


async def _receive(request: Request, limit: int, length: int | None, offset: int) -> memoryview:
    """The raw body, checked against Content-Length and the limit; with a Content-Length, its byte `offset` is
    aligned (a body of unknown length grows as it comes, so it is not)."""
    if length is not None:
        buffer, pad = aligned_buffer(length, offset)
        end_of_body = pad + length
        position = pad
        async for chunk in request.stream():
            end = position + len(chunk)
            if end > end_of_body:
                raise invalid(f"request body is longer than its Content-Length of {length} bytes")
            buffer[position:end] = chunk
            position = end
        if position != end_of_body:
            raise invalid(f"request body has {position - pad} bytes but Content-Length says {length}")
        return memoryview(buffer)[pad:end_of_body]
    grown = bytearray()
    stream = request.stream()
    async for chunk in stream:
        grown += chunk
        if len(grown) > limit:
            await _discard_rest(stream, limit)
    return memoryview(grown)


async def _discard_rest(stream: AsyncIterator[bytes], limit: int) -> None:
    """Read and drop the rest of an oversized streamed body, then refuse it.

    A client sends its whole body before it reads the answer; if the server stopped reading, both would wait
    (flow control pauses the socket). Up to another `limit` bytes are drained so the client gets its 413 on a
    healthy connection; a client that sends even more is answered 413 and disconnected.
    """
    message = f"request body exceeds the server's limit of {limit} bytes"
    dropped = 0
    async for chunk in stream:
        dropped += len(chunk)
        if dropped > limit:
            raise BodyTooLarge(message, close_connection=True)
    raise BodyTooLarge(message)


def _inflate(data: memoryview, encoding: str, limit: int) -> bytearray:
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise invalid(f"request body is not valid {encoding} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise too_large(f"decompressed request body exceeds the server's limit of {limit} bytes")
    if not inflater.eof:
        raise invalid(f"request body is truncated {encoding} data")
    return bytearray(out)
