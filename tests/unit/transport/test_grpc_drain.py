"""close_public_port: the listener on the port refuses new connections, its accepted connections end (the peer
reads EOF), and sockets on other ports are left alone; descriptors stay open (they are gRPC's to close)."""

from __future__ import annotations

import os
import socket

import pytest

from server.transport.grpc_drain import close_public_port


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def test_listener_refuses_and_connections_end_on_that_port_only() -> None:
    public, other = _listener(), _listener()
    port = public.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    served, _ = public.accept()
    bystander = socket.create_connection(("127.0.0.1", other.getsockname()[1]), timeout=5)
    kept, _ = other.accept()
    try:
        assert close_public_port(port) == 1
        assert client.recv(10) == b""  # the client sees the connection end: its calls fail UNAVAILABLE
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        os.fstat(public.fileno())  # shut down, not closed: the owner's descriptor is still valid
        os.fstat(served.fileno())
        bystander.sendall(b"ping")  # another port's connection is untouched
        assert kept.recv(4) == b"ping"
    finally:
        for sock in (public, other, client, served, bystander, kept):
            sock.close()
