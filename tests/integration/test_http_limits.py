"""HTTP limits and control through a real server of its own: 413 (declared, streamed, decompressed), bearer
tokens on the repository API, 503 after unload, and a disconnected client's queued request never computed."""

from __future__ import annotations

import gzip
import http.client
import json
import shutil
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.models import build_slow_model, build_test_repository
from tests.support.numerics import SLOW
from tests.support.server import ServerProcess

LIMIT = 2 * 1024 * 1024
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, torch.nn.Module]]]:
    root = tmp_path_factory.mktemp("http_limits_repo")
    modules = build_test_repository(root)
    shutil.rmtree(root / "broken")
    modules["slow"] = build_slow_model(root)
    server = ServerProcess(root, "--max-request-bytes", str(LIMIT), "--repository-token", TOKEN)
    try:
        yield server, modules
    finally:
        assert server.stop() == 0, server.output()


def post(server: ServerProcess, path: str, body: bytes | Iterator[bytes], headers: dict[str, str]
         ) -> tuple[int, str]:
    connection = http.client.HTTPConnection(server.http_url, timeout=60)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload)["error"] if payload else ""
    finally:
        connection.close()


def slow_body(rows: int) -> tuple[bytes, str]:
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [rows, 1024],
                                     "parameters": {"binary_data_size": rows * 4096}}]}).encode()
    return header + np.ones((rows, 1024), np.float32).tobytes(), str(len(header))


def test_declared_content_length_over_the_limit_is_refused_before_reading(limited) -> None:  # type: ignore[no-untyped-def]
    server, _ = limited
    connection = http.client.HTTPConnection(server.http_url, timeout=30)
    try:
        connection.putrequest("POST", "/v2/models/mlp/infer")
        connection.putheader("Content-Length", str(LIMIT + 1))
        connection.endheaders()  # no body sent at all: the answer must not wait for it
        response = connection.getresponse()
        assert response.status == 413
        assert f"limit of {LIMIT} bytes" in json.loads(response.read())["error"]
    finally:
        connection.close()


def test_tritonclient_request_over_the_limit_gets_413(limited) -> None:  # type: ignore[no-untyped-def]
    server, _ = limited
    client = httpclient.InferenceServerClient(server.http_url)
    x = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
    tensor = httpclient.InferInput("INPUT0", list(x.shape), "FP32").set_data_from_numpy(x, binary_data=False)
    with pytest.raises(InferenceServerException) as err:  # 1 MiB as binary, ~5 MB as JSON text
        client.infer("slow", [tensor])
    assert err.value.status() == "413" and "exceeds the server's limit" in err.value.message()


def test_streamed_body_over_the_limit_is_cut_off(limited) -> None:  # type: ignore[no-untyped-def]
    server, _ = limited
    chunk = b"0" * 65536

    def chunks() -> Iterator[bytes]:
        for _ in range(LIMIT // len(chunk) + 2):
            yield chunk

    try:
        status, error = post(server, "/v2/models/mlp/infer", chunks(), {})  # no length: http.client chunks it
    except (ConnectionResetError, BrokenPipeError):
        pytest.fail("the server should answer 413, not drop the connection")
    assert status == 413 and "exceeds the server's limit" in error


def test_decompression_bomb_is_refused(limited) -> None:  # type: ignore[no-untyped-def]
    server, _ = limited
    bomb = gzip.compress(b"\x00" * (LIMIT + 4096))
    assert len(bomb) < 10_000
    status, error = post(server, "/v2/models/mlp/infer", bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and "decompressed request body exceeds" in error
    status, error = post(server, "/v2/models/mlp/infer", b"not gzip", {"Content-Encoding": "gzip"})
    assert status == 400 and "not valid gzip" in error


def test_repository_api_needs_the_bearer_token(limited) -> None:  # type: ignore[no-untyped-def]
    server, modules = limited
    client = httpclient.InferenceServerClient(server.http_url)
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        with pytest.raises(InferenceServerException) as err:
            client.unload_model("mixed", headers=headers)
        assert err.value.status() == "401" and "bearer token" in err.value.message()
        with pytest.raises(InferenceServerException):
            client.get_model_repository_index(headers=headers)
    assert client.is_model_ready("mixed")

    client.unload_model("mixed", headers=AUTH)
    assert not client.is_model_ready("mixed")
    states = {row["name"]: row["state"] for row in client.get_model_repository_index(headers=AUTH)}
    assert states["mixed"] == "UNAVAILABLE" and states["mlp"] == "READY"
    b = np.zeros((1, 3), np.int32)
    inputs = [httpclient.InferInput("B", [1, 3], "INT32").set_data_from_numpy(b)]
    with pytest.raises(InferenceServerException) as err:
        client.infer("mixed", inputs)
    assert err.value.status() == "503" and "not ready" in err.value.message()

    with pytest.raises(InferenceServerException) as err:
        client.load_model("mixed", headers=AUTH, config=json.dumps({"max_batch_size": 2}))
    assert err.value.status() == "501" and "config" in err.value.message()
    client.load_model("mixed", headers=AUTH)
    assert client.is_model_ready("mixed")
    status, error = post(server, "/v2/repository/models/no_such_model/load", b"", AUTH)
    assert status == 404 and "not in the model repository" in error


def slow_stats(client: httpclient.InferenceServerClient) -> dict[str, int]:
    stats = client.get_inference_statistics("slow")["model_stats"][0]
    return {"executions": stats["execution_count"], "fail": stats["inference_stats"]["fail"]["count"],
            "success": stats["inference_stats"]["success"]["count"]}


def test_client_disconnect_drops_the_queued_request(limited) -> None:  # type: ignore[no-untyped-def]
    """Four heavy requests occupy the single instance; a fifth is queued, its client hangs up, and it is never
    executed (executions grow by four, and the fifth counts as failed)."""
    server, modules = limited
    client = httpclient.InferenceServerClient(server.http_url, concurrency=4)
    before = slow_stats(client)
    x = np.random.default_rng(9).standard_normal((256, 1024)).astype(np.float32)
    busy = [client.async_infer("slow", [httpclient.InferInput("INPUT0", [256, 1024], "FP32")
                                        .set_data_from_numpy(x)]) for _ in range(4)]
    time.sleep(0.2)
    body, header_length = slow_body(1)
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                     b"Inference-Header-Content-Length: %s\r\n\r\n" % (len(body), header_length.encode()) + body)
        time.sleep(0.3)  # queued behind the heavy ones now
    results = [request.get_result(timeout=120).as_numpy("OUTPUT0") for request in busy]
    with torch.inference_mode():
        want = modules["slow"](torch.from_numpy(x)).numpy()
    SLOW.assert_close(results[0], want)
    deadline = time.monotonic() + 10
    while slow_stats(client)["fail"] == before["fail"] and time.monotonic() < deadline:
        time.sleep(0.05)
    after = slow_stats(client)
    assert after["success"] == before["success"] + 4
    assert after["fail"] == before["fail"] + 1, "the disconnected request was not cancelled"
    assert after["executions"] == before["executions"] + 4, "the disconnected request was computed"
