"""Settings-bounded resources through a real server: requests in flight (shed with UNAVAILABLE/503, admitted ones
correct), HTTP request heads (431), a request body that stalls (408, connection closed), and a 10^12-element claim
that never moves RSS; plus the gRPC channel limits the settings turn into."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from server.settings import Settings
from server.transport.grpc import MESSAGE_HEADROOM, server_options
from tests.hardening.soak_probe import rss_mib
from tests.hardening.wire import Http, error_text, raw_exchange
from tests.support.models import build_slow_model
from tests.support.numerics import SLOW
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, torch.nn.Module, Path]]:
    root = tmp_path_factory.mktemp("limits_repo")
    module = build_slow_model(root)
    server = ServerProcess(root, "--max-inflight-requests", "2", "--max-header-bytes", "8192",
                           "--body-timeout-secs", "1")
    try:
        yield server, module, root
    finally:
        assert server.stop() == 0, server.output()


def _infer(protocol: str, server: ServerProcess, x: np.ndarray) -> np.ndarray | str:
    try:
        if protocol == "grpc":
            g = grpcclient.InferenceServerClient(server.grpc_url)
            t = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
            t.set_data_from_numpy(x)
            return g.infer("slow", [t]).as_numpy("OUTPUT0")
        h = httpclient.InferenceServerClient(server.http_url, network_timeout=120)
        t = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        t.set_data_from_numpy(x, binary_data=True)
        return h.infer("slow", [t]).as_numpy("OUTPUT0")
    except Exception as exc:  # noqa: BLE001 - returned for classification
        return str(exc)


def test_requests_beyond_the_in_flight_bound_are_shed_and_admitted_ones_are_correct(bounded) -> None:  # type: ignore[no-untyped-def]
    server, module, _ = bounded
    x = np.random.default_rng(1).standard_normal((64, 1024)).astype(np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: _infer(p, server, x), ["grpc", "http"] * 4))
    shed = [r for r in results if isinstance(r, str)]
    done = [r for r in results if not isinstance(r, str)]
    assert done and shed, results
    for message in shed:
        assert "limit of 2 requests in flight" in message, message
        assert "UNAVAILABLE" in message or "503" in message or "retry later" in message
    for out in done:
        SLOW.assert_close(out, expected)
    assert not isinstance(_infer("grpc", server, x[:1]), str)  # capacity is back once the burst is over


def test_request_heads_beyond_the_limit_get_431(bounded) -> None:  # type: ignore[no-untyped-def]
    server, _, root = bounded
    answer = raw_exchange(server.http_port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" +
                          b"X-Pad: " + b"a" * 20_000 + b"\r\n\r\n")  # all read at once: no reset
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
    assert b"8192 bytes" in answer
    http = Http(server)
    status, _ = http.request("GET", "/v2/health/live", headers={"X-Pad": "a" * 4000})
    assert status == 200  # a big but legal head is fine
    http.close()


def test_a_body_that_stalls_gets_408_and_its_connection_closed(bounded) -> None:  # type: ignore[no-untyped-def]
    server, module, _ = bounded
    x = np.ones((1, 1024), np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n" + b" " * 100)
        start = time.monotonic()
        SLOW.assert_close(_infer("http", server, x), expected)  # others are served
        chunks = []
        while chunk := sock.recv(65536):  # until the server closes; a hang raises socket.timeout
            chunks.append(chunk)
        elapsed = time.monotonic() - start
    answer = b"".join(chunks)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert b"did not arrive within 1 s" in answer and b"connection: close" in answer.lower()
    assert elapsed < 8


def test_a_10_to_the_12_element_claim_is_refused_without_allocating(bounded) -> None:  # type: ignore[no-untyped-def]
    server, _, root = bounded
    http = Http(server)
    before = rss_mib(server.process.pid)
    for _ in range(20):
        body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [10**6, 10**6],
                                       "data": [1.0]}]}).encode()
        status, payload = http.request("POST", "/v2/models/slow/infer", body)
        assert status == 413 and "limit" in error_text(status, payload, root)
        header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [10**6, 10**6],
                                         "parameters": {"binary_data_size": 4 * 10**12}}]}).encode()
        status, payload = http.request("POST", "/v2/models/slow/infer", header + b"\0" * 64,
                                       {"Inference-Header-Content-Length": str(len(header))})
        assert status == 413, payload
    http.close()
    assert rss_mib(server.process.pid) - before < 50  # 10^12 FP32 would be 4 TB


def test_grpc_limits_come_from_settings() -> None:
    settings = Settings(max_request_bytes=2048, grpc_max_concurrent_streams=7)
    options = dict(server_options(settings))
    assert options["grpc.max_receive_message_length"] == 2048 + MESSAGE_HEADROOM
    assert options["grpc.max_concurrent_streams"] == 7
    defaults = Settings()
    assert defaults.max_inflight_requests == 1024 and defaults.max_header_bytes == 64 * 1024
    assert defaults.max_request_bytes == 64 * 1024 * 1024 and defaults.max_request_elements == 64 * 1024 * 1024
