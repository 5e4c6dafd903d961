"""uvicorn's httptools protocol with a bound on the request head (request line + headers): 431 beyond it.

Why: uvicorn's httptools protocol has no header size limit (its h11 protocol stops at 16 KiB). Measured: one
20 MB header line, or 2.5 million small header lines, were accepted and answered 200, the latter leaving the
server at 660 MB RSS. The body has its own limit (`max_request_bytes`, http_body.py); this closes the other door.
Two checks: bytes are counted as they arrive and checked after each chunk is parsed (a head still incomplete
beyond the limit is refused before the parser buffers more), and the parsed request line and headers are summed
exactly and checked when the head completes (a head that arrived whole in one read).
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
        self._parsed = 0  # bytes of request line + headers as parsed (exact)
        self._oversized = False

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed = 0

    def on_url(self, url: bytes) -> None:
        self._parsed += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._parsed > self.max_head_bytes:  # a head that arrived whole in one read: exact check here
            self._oversized = True
            raise ValueError("request head too large")  # httptools turns it into HttpParserError -> below
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._oversized:
            self._refuse_head()
        else:
            super().send_400_response(msg)

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
