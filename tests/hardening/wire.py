"""Helpers for talking to a real server at the wire level: raw HTTP, raw sockets, and a correctness probe."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.support.numerics import SMALL_MLP
from tests.support.server import ServerProcess


class Http:
    """One keep-alive connection that reconnects when the server closed it (as it may after a bad request)."""

    def __init__(self, server: ServerProcess) -> None:
        self._url = server.http_url
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
                ) -> tuple[int, bytes]:
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._url, timeout=30)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                response = self._conn.getresponse()
                payload = response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.close()
                return response.status, payload
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def error_text(status: int, payload: bytes, root: Path) -> str:
    """The `{"error": ...}` message of a non-200 answer, checked for shape and for leaked paths."""
    document = json.loads(payload)
    assert isinstance(document, dict) and isinstance(document.get("error"), str) and document["error"], payload
    message = document["error"]
    assert str(root) not in message and str(root.resolve()) not in message, f"path leaked: {message}"
    return message


def raw_exchange(port: int, data: bytes, half_close: bool = True, timeout: float = 10.0) -> bytes:
    """Send raw bytes, optionally half-close, and read until the server answers and/or closes.

    Raises socket.timeout when the server neither answers nor closes: that is a hang.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server refused early and closed (reset, broken pipe, not connected): read its answer
            pass
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not half_close and b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def assert_still_correct(server: ServerProcess, mlp: torch.nn.Module, rows: int = 3) -> None:
    """A valid request on each transport returns exactly what the real model computes."""
    x = np.random.default_rng(rows).standard_normal((rows, 16)).astype(np.float32)
    with torch.inference_mode():
        expected = mlp(torch.from_numpy(x)).numpy()
    h = httpclient.InferenceServerClient(server.http_url)
    t = httpclient.InferInput("INPUT0", [rows, 16], "FP32")
    t.set_data_from_numpy(x, binary_data=True)
    SMALL_MLP.assert_close(h.infer("mlp", [t]).as_numpy("OUTPUT0"), expected)
    g = grpcclient.InferenceServerClient(server.grpc_url)
    t = grpcclient.InferInput("INPUT0", [rows, 16], "FP32")
    t.set_data_from_numpy(x)
    SMALL_MLP.assert_close(g.infer("mlp", [t]).as_numpy("OUTPUT0"), expected)
    h.close()
    g.close()
