"""uvicorn as the app runs it: no signal handling of its own, and a listener close that resets nobody.

The app owns SIGTERM and the drain order (app.py): readiness off, refuse new inference with 503 (and
`Connection: close`, so no client reuses a connection to a server that is going away), let in-flight requests
finish, keep answering 503 a moment longer, then close the listener. uvicorn's own close (`server.close()`, then
closing every connection without a request in progress) resets two kinds of connection whose request was sent:
- those the kernel has accepted into the listener's backlog but the event loop has not taken yet: closing a
  listening socket resets its backlog;
- those just taken whose request bytes have not been read yet: uvicorn sees "no request in progress".
Here the backlog is emptied (accepted by hand and handed to uvicorn's protocol) in the same step that closes the
listener, and connections get `FRESH_REQUEST_WAIT_S` to deliver their request (answered 503 + close) before
uvicorn's close runs. What remains is the race HTTP/1.1 cannot avoid: a client writing on an idle keep-alive
connection at the instant it is closed (the app's refusal window makes that unlikely: see app.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

FRESH_REQUEST_WAIT_S = 0.1


class DrainingUvicorn(uvicorn.Server):
    """uvicorn.Server without signal handlers and with a backlog-preserving shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        taken: list[tuple[Any, socket.socket]] = []
        for server, listener in zip(self.servers, sockets or [], strict=False):
            factory = server._protocol_factory  # type: ignore[attr-defined]  # uvicorn's, as create_server got it
            taken += [(factory, conn) for conn in _accept_all(listener)]
        for server in self.servers:  # no await since the last accept: the backlog is empty when it closes
            server.close()
        for listener in sockets or []:
            listener.close()
        for factory, conn in taken:
            await loop.connect_accepted_socket(factory, conn)
        if self.server_state.connections:
            await asyncio.sleep(FRESH_REQUEST_WAIT_S)
        await super().shutdown(sockets=None)


def _accept_all(listener: socket.socket) -> list[socket.socket]:
    """Every connection waiting in `listener`'s backlog, non-blocking."""
    taken: list[socket.socket] = []
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return taken
        except OSError:  # closed already
            return taken
        conn.setblocking(False)
        taken.append(conn)
