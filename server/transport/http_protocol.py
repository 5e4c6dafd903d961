"""uvicorn's httptools protocol with a bound on the request head (request line + headers): 431 beyond it.

Why: uvicorn's httptools protocol has no header size limit (its h11 protocol stops at 16 KiB). Measured: one
20 MB header line, or 2.5 million small header lines, were accepted and answered 200, the latter leaving the
server at 660 MB RSS. The body has its own limit (`max_request_bytes`, http_body.py); this closes the other door.
The head's bytes are counted as they arrive, before the parser buffers them, and checked after each chunk is
parsed, so a chunk that completes the head (and starts a large body) is never mistaken for an oversized head.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_HEAD_BYTES = 64 * 1024


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that answers 431 and closes when a request head exceeds `max_head_bytes`."""

    max_head_bytes = DEFAULT_MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    def _refuse_head(self) -> None:
        message = (f'{{"error":"request line and headers exceed the server\'s limit of {self.max_head_bytes} '
                   'bytes"}').encode()
        if self.cycle is None or self.cycle.response_complete:  # nothing else is being written on this socket
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json"
                                 b"\r\ncontent-length: " + str(len(message)).encode() + b"\r\nconnection: close"
                                 b"\r\n\r\n" + message)
        self.transport.close()


def limited_protocol(max_head_bytes: int) -> type[LimitedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` with this server's head limit."""
    return type("LimitedHttpTools", (LimitedHttpToolsProtocol,), {"max_head_bytes": max_head_bytes})
