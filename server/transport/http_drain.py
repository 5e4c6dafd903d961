"""uvicorn as the app runs it: no signal handling of its own, and a listener close that resets nobody.

The app owns SIGTERM and the drain order (app.py): readiness off, refuse new inference with 503 (and
`Connection: close`, so no client reuses a connection to a server that is going away), let in-flight requests
finish, keep answering 503 a moment longer, then close the listener. uvicorn's own close (`server.close()`, then
closing every connection without a request in progress) resets two kinds of connection whose request was sent:
- those the kernel has accepted into the listener's backlog but the event loop has not taken yet: closing a
  listening socket resets its backlog;
- those just taken whose request bytes have not been read yet: uvicorn sees "no request in progress".
Here the backlog is emptied (accepted by hand and handed to uvicorn's protocol) in the same step that closes the
listener, and then uvicorn's close waits until every open connection has ended by itself, for at most
`IDLE_CONNECTION_GRACE_S`: with the listener closed and every request answered 503 + `Connection: close`, each
connection a client still uses delivers one request, gets its 503 and closes, so a client that is slow to write
(a starved process on a busy machine: a fixed 0.1 s wait reset ~1 run in 12 of the drain test) is answered rather
than reset. Only a connection idle for the whole grace is closed under its client: the race HTTP/1.1 cannot avoid
(a client writing on an idle keep-alive connection at the instant it is closed), now after a second of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

IDLE_CONNECTION_GRACE_S = 1.0  # the longest a closing listener waits for its open connections to end
POLL_S = 0.02


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
        deadline = loop.time() + IDLE_CONNECTION_GRACE_S
        while self.server_state.connections and loop.time() < deadline:
            await asyncio.sleep(POLL_S)
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
