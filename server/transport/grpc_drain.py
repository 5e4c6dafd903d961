"""The last step of a gRPC drain: stop accepting and close the public connections *before* gRPC's own shutdown.

Why: gRPC core's `Server::Shutdown` answers CANCELLED to every call it has received but not yet handed to the
application, and to every new stream that reaches a connection between the shutdown and the client's reading of
the GOAWAY (grpc/grpc#41785, open; grpc.aio hands calls over one at a time, so under load many are waiting).
CANCELLED tells the client nothing: it cannot know whether the call ran, and retry policies do not retry it. gRPC
core has no "GOAWAY now, shut down later" (grpc-go's GracefulStop), and the listener is its own.

So, once the dataplane has drained (every admitted request answered; anything since got UNAVAILABLE), the server
and the front processes call `close_public_port(port)` first: `shutdown(SHUT_RD)` on the listening socket (new
connections are refused: the client's channel reports UNAVAILABLE, nothing was sent) and `shutdown(SHUT_RDWR)` on
every accepted connection (the client sees the connection end: pending calls fail UNAVAILABLE, which is true,
as none of them can run any more). gRPC's own shutdown then finds no connection that could deliver a CANCELLED.
The sockets are found by their local port among this process's descriptors and shut down, never closed: the
descriptors stay gRPC's. native/grpc_front/port_close.cc does the same in the native front.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket

log = logging.getLogger("twofour.grpc")


def _sockets_on_port(port: int) -> list[tuple[socket.socket, bool]]:
    """Duplicates of this process's TCP sockets whose local port is `port`, each with "is it listening"."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = os.dup(int(name))
        except OSError:
            continue  # gone meanwhile, or the directory's own descriptor
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # not a socket
            os.close(fd)
            continue
        try:
            if (sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
                    and sock.getsockname()[1] == port):
                found.append((sock, bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))))
                continue
        except OSError:
            pass
        sock.close()  # closes only our duplicate
    return found


def close_public_port(port: int) -> int:
    """Refuse new connections on `port` and end the accepted ones; returns how many connections were ended."""
    ended = 0
    for sock, listening in _sockets_on_port(port):
        with contextlib.suppress(OSError):  # a connection the peer closed meanwhile
            sock.shutdown(socket.SHUT_RD if listening else socket.SHUT_RDWR)
            ended += not listening
        sock.close()
    log.info("gRPC port %d: stopped accepting, ended %d connection(s)", port, ended)
    return ended
