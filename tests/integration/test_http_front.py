"""The native front's HTTP port (`--http-frontend native`) against uvicorn's (`--http-frontend uvicorn`).

The native front answers well-formed infer requests itself (as frames to the server) and relays or tunnels
everything else to uvicorn. What a client can tell apart must not change: the same request gets the same status,
body and labels either way, a keep-alive connection may mix both kinds (in order, pipelined too), and whatever the
front does not answer natively (compressed or chunked bodies, HTTP/1.0) is still answered correctly. The rest of the
HTTP suite (protocol, limits, disconnects, fuzzing) runs against the native front too, as `auto` picks it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from server.transport.grpc_front_command import NATIVE_NAME, native_binary
from tests.support.numerics import SMALL_MLP
from tests.support.server import ServerProcess

Response = tuple[int, dict[str, str], bytes]


@pytest.fixture(scope="module")
def fronts(model_repository: tuple[Path, dict[str, torch.nn.Module]]) -> Iterator[dict[str, ServerProcess]]:
    if native_binary() is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the native HTTP front, but no {NATIVE_NAME} binary was found (make native)")
        pytest.skip(f"no {NATIVE_NAME} binary: build it with `make native`")
    servers = {name: ServerProcess(model_repository[0], "--grpc-frontend", "native", "--http-frontend", name)
               for name in ("native", "uvicorn")}
    yield servers
    for server in servers.values():
        server.stop()


def request_bytes(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                  version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}", "Host: x", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(stream: io.BufferedReader) -> Response:
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def exchange(server: ServerProcess, *requests: bytes) -> list[Response]:
    """Send every request at once on one connection (pipelined) and read one answer each, in order."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        sock.sendall(b"".join(requests))
        stream = sock.makefile("rb")
        return [read_response(stream) for _ in requests]


def json_infer(x: np.ndarray, model: str = "mlp", **extra: object) -> bytes:
    document = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
                **extra}
    return request_bytes("POST", f"/v2/models/{model}/infer", json.dumps(document).encode())


def binary_infer(x: np.ndarray, path: str = "/v2/models/mlp/infer", binary_output: bool = True, cut: int = 0
                 ) -> bytes:
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": binary_output}}]}).encode()
    body = header + x.tobytes()[:x.nbytes - cut]
    return request_bytes("POST", path, body, {"Inference-Header-Content-Length": str(len(header))})


X = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
SAME_ANSWER = {
    "json": json_infer(X),
    "json with id and binary output": json_infer(X, id="r1", parameters={"binary_data_output": True}),
    "binary in and out": binary_infer(X),
    "binary in, JSON out": binary_infer(X, binary_output=False),
    "versioned path": binary_infer(X, "/v2/models/mlp/versions/1/infer"),
    "unknown model": json_infer(X, model="nope"),
    "unknown version": binary_infer(X, "/v2/models/mlp/versions/7/infer"),
    "model not ready": json_infer(X, model="broken"),
    "wrong shape": json_infer(np.zeros((1, 15), np.float32)),
    "batch too large": json_infer(np.zeros((9, 16), np.float32)),
    "not JSON": request_bytes("POST", "/v2/models/mlp/infer", b"{nope"),
    "empty body": request_bytes("POST", "/v2/models/mlp/infer", b"", {"Content-Length": "0"}),
    "header length not a number": request_bytes("POST", "/v2/models/mlp/infer", b"{}",
                                                {"Inference-Header-Content-Length": "abc"}),
    "header length past the body": request_bytes("POST", "/v2/models/mlp/infer", b"{}",
                                                 {"Inference-Header-Content-Length": "99"}),
    "binary region too short": binary_infer(X, cut=8),
    "a 10^12-element claim": request_bytes("POST", "/v2/models/mlp/infer", b'{"inputs": [{"name": "INPUT0", '
                                           b'"datatype": "FP32", "shape": [1000000, 1000000], "data": [1]}]}'),
}


@pytest.mark.parametrize("case", list(SAME_ANSWER))
def test_an_infer_request_gets_the_same_answer_from_both_fronts(fronts: dict[str, ServerProcess], case: str) -> None:
    native, = exchange(fronts["native"], SAME_ANSWER[case])
    relayed, = exchange(fronts["uvicorn"], SAME_ANSWER[case])
    assert native[0] == relayed[0], (native, relayed)
    assert native[2] == relayed[2]
    for label in ("content-type", "inference-header-content-length", "connection"):
        assert native[1].get(label) == relayed[1].get(label), label
    assert "server" not in native[1] and relayed[1].get("server") == "uvicorn"  # answered natively, not relayed


def test_one_connection_mixes_native_and_relayed_requests_in_order(fronts: dict[str, ServerProcess],
                                                                   modules: dict[str, torch.nn.Module]) -> None:
    with torch.inference_mode():
        want = modules["mlp"](torch.from_numpy(X)).numpy()
    answers = exchange(fronts["native"], request_bytes("GET", "/v2/health/ready"), binary_infer(X),
                       request_bytes("GET", "/v2/models/mlp"), json_infer(X, model="nope"), json_infer(X))
    assert [status for status, _, _ in answers] == [200, 200, 200, 404, 200]
    header_length = int(answers[1][1]["inference-header-content-length"])
    SMALL_MLP.assert_close(np.frombuffer(answers[1][2][header_length:], np.float32).reshape(want.shape), want)
    assert json.loads(answers[2][2])["name"] == "mlp"
    SMALL_MLP.assert_close(np.array(json.loads(answers[4][2])["outputs"][0]["data"]).reshape(want.shape), want)


def test_requests_the_front_does_not_answer_itself_are_still_answered(fronts: dict[str, ServerProcess],
                                                                      modules: dict[str, torch.nn.Module]) -> None:
    """gzip (uvicorn inflates), chunked (tunnelled: later requests on that connection still work), HTTP/1.0."""
    with torch.inference_mode():
        want = modules["mlp"](torch.from_numpy(X)).numpy()
    plain = json_infer(X)
    body = plain[plain.index(b"\r\n\r\n") + 4:]
    compressed = request_bytes("POST", "/v2/models/mlp/infer", gzip.compress(body), {"Content-Encoding": "gzip"})
    chunked = request_bytes("POST", "/v2/models/mlp/infer", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
                            {"Transfer-Encoding": "chunked"})
    answers = exchange(fronts["native"], compressed, chunked, plain, request_bytes("GET", "/v2/health/live"))
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    for _, _, payload in answers[:3]:
        SMALL_MLP.assert_close(np.array(json.loads(payload)["outputs"][0]["data"]).reshape(want.shape), want)
    old, = exchange(fronts["native"], plain.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    assert old[0] == 200 and json.loads(old[2])["model_name"] == "mlp"


def front_pid(server: ServerProcess) -> int:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    for pid in children:
        if Path(f"/proc/{pid}/comm").read_text().strip().startswith("twofour-grpc"):
            return int(pid)
    raise AssertionError(f"no native front among the server's children {children}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_head_that_stalls_is_handed_to_uvicorn_and_still_answered(fronts: dict[str, ServerProcess]) -> None:
    """A head still incomplete after a second goes to uvicorn (tunnel) with what came so far; the rest follows."""
    request = json_infer(X)
    with socket.create_connection(("127.0.0.1", fronts["native"].http_port), timeout=30) as sock:
        sock.sendall(request[:20])
        time.sleep(2.5)  # the front hands it over after 1 s, at its next 100 ms sweep: ample margin on a busy box
        sock.sendall(request[20:])
        status, headers, body = read_response(sock.makefile("rb"))
    assert status == 200 and headers.get("server") == "uvicorn"  # answered by uvicorn, through the tunnel
    assert json.loads(body)["model_name"] == "mlp"


def test_an_idle_keep_alive_connection_is_closed(fronts: dict[str, ServerProcess]) -> None:
    with socket.create_connection(("127.0.0.1", fronts["native"].http_port), timeout=30) as sock:
        sock.sendall(json_infer(X))
        stream = sock.makefile("rb")
        assert read_response(stream)[0] == 200
        start = time.monotonic()
        assert stream.read() == b""  # the front closes it: 5 s idle, as uvicorn's default
        assert 4 < time.monotonic() - start < 15


def test_out_of_descriptors_the_front_neither_spins_nor_stops_accepting(fronts: dict[str, ServerProcess]) -> None:
    pid = front_pid(fronts["native"])
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 4, hard))
    try:
        held = [socket.create_connection(("127.0.0.1", fronts["native"].http_port), timeout=30) for _ in range(12)]
        time.sleep(0.3)
        before = cpu_seconds(pid)
        time.sleep(1.0)
        assert cpu_seconds(pid) - before < 0.3, "the front spins while it cannot accept"
        for sock in held:
            sock.close()
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    answer, = exchange(fronts["native"], json_infer(X))  # accepting again once descriptors are free
    assert answer[0] == 200


@pytest.mark.parametrize("grpc_front", ["inline", "python"])
def test_http_frontend_native_without_the_native_front_refuses_to_start(
        model_repository: tuple[Path, dict[str, torch.nn.Module]], tmp_path: Path, grpc_front: str) -> None:
    with pytest.raises(RuntimeError) as failed:
        ServerProcess(model_repository[0], "--grpc-frontend", grpc_front, "--http-frontend", "native",
                      env={"TMPDIR": str(tmp_path)})
    assert "--http-frontend native needs the native gRPC front" in str(failed.value)
    assert not list(tmp_path.glob("twofour-grpc-*"))  # nothing left behind
