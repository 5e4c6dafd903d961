"""KServe v2 HTTP against the real server with the real tritonclient.http: every endpoint, outputs equal to the
torch model's, error rows with messages, and garbage that leaves the server serving."""

from __future__ import annotations

import http.client
import json
import socket

import ml_dtypes
import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.numerics import SMALL_MLP
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url)


def raw(server: ServerProcess, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(server.http_url, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def mlp_input(x: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    return httpclient.InferInput("INPUT0", list(x.shape), "FP32").set_data_from_numpy(x, binary_data=binary)


def expected(module: torch.nn.Module, *inputs: np.ndarray) -> object:
    with torch.inference_mode():
        return module(*(torch.from_numpy(np.ascontiguousarray(i)) for i in inputs))


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to GEMM summation order (batching and thread count differ from this process: numerics.py)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    SMALL_MLP.assert_close(got, want)


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "twofour" and "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_ready_config(client: httpclient.InferenceServerClient) -> None:
    for version in ("", "1"):
        metadata = client.get_model_metadata("mlp", version)
        assert metadata["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]}]
        assert metadata["versions"] == ["1"]
        assert client.is_model_ready("mlp", version)
        config = client.get_model_config("mlp", version)
        assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [16]
    assert not client.is_model_ready("no_such_model")
    assert not client.is_model_ready("mlp", "7")
    assert not client.is_model_ready("broken")
    batched = client.get_model_config("mlp_batched")  # int64/uint64 fields as JSON numbers, as Triton writes them
    delay = batched["dynamic_batching"]["max_queue_delay_microseconds"]
    assert type(delay) is int and delay == 2000
    assert all(type(d) is int for t in batched["input"] + batched["output"] for d in t["dims"])


@pytest.mark.parametrize("binary", [True, False])
def test_mlp_outputs_equal_the_torch_model(client: httpclient.InferenceServerClient,
                                           modules: dict[str, torch.nn.Module], binary: bool) -> None:
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    result = client.infer("mlp", [mlp_input(x, binary)], request_id="req-7",
                          outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)])
    assert_same(result.as_numpy("OUTPUT0"), expected(modules["mlp"], x).numpy())
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == "mlp" and response["model_version"] == "1"
    assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) == binary


def test_versioned_infer_and_default_binary_outputs(client: httpclient.InferenceServerClient,
                                                    modules: dict[str, torch.nn.Module]) -> None:
    x = np.ones((2, 16), np.float32)
    result = client.infer("mlp_batched", [mlp_input(x)], model_version="1")  # no outputs: all, as binary
    assert_same(result.as_numpy("OUTPUT0"), expected(modules["mlp_batched"], x).numpy())


def test_every_datatype_binary_and_json(client: httpclient.InferenceServerClient,
                                        modules: dict[str, torch.nn.Module]) -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3)).astype(np.float16)
    b = rng.integers(-1000, 1000, (2, 3)).astype(np.int32)
    c = rng.integers(0, 2, (2, 3)).astype(bool)
    d = rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16)
    json_ok = {"B", "C"}
    inputs = []
    for name, array, datatype in (("A", a, "FP16"), ("B", b, "INT32"), ("C", c, "BOOL"), ("D", d, "BF16")):
        inputs.append(httpclient.InferInput(name, [2, 3], datatype)
                      .set_data_from_numpy(array, binary_data=name not in json_ok))
    outputs = [httpclient.InferRequestedOutput(n, binary_data=n not in {"B1", "NOTC"})
               for n in ("A2", "B1", "NOTC", "D")]
    result = client.infer("mixed", inputs, outputs=outputs)
    torch_d = torch.from_numpy(d.view(np.uint16).copy()).view(torch.bfloat16)
    with torch.inference_mode():
        want = modules["mixed"](torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c), torch_d)
    assert result.as_numpy("A2").tobytes() == want["A2"].numpy().tobytes()
    np.testing.assert_array_equal(result.as_numpy("B1"), want["B1"].numpy())
    np.testing.assert_array_equal(result.as_numpy("NOTC"), want["NOTC"].numpy())
    assert result.as_numpy("D").view(np.uint16).tobytes() == want["D"].view(torch.uint16).numpy().tobytes()


def test_statistics_count_inferences(client: httpclient.InferenceServerClient) -> None:
    """Exactly what this test sent, as deltas (the server is shared): 3 requests of 3 rows, one of 5, one bad."""
    before = client.get_inference_statistics("mlp")["model_stats"][0]
    for rows in (3, 3, 3, 5):
        client.infer("mlp", [mlp_input(np.ones((rows, 16), np.float32), binary=rows != 5)])
    with pytest.raises(InferenceServerException):
        client.infer("mlp", [mlp_input(np.ones((3, 15), np.float32))])
    after = client.get_inference_statistics("mlp", "1")["model_stats"][0]
    assert (after["name"], after["version"]) == ("mlp", "1")
    assert after["inference_count"] - before["inference_count"] == 14
    assert after["execution_count"] - before["execution_count"] == 4
    now, then = after["inference_stats"], before["inference_stats"]
    for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert type(now[key]["count"]) is int and type(now[key]["ns"]) is int, (key, now[key])
    assert now["success"]["count"] - then["success"]["count"] == 4 and now["success"]["ns"] > then["success"]["ns"]
    assert now["fail"]["count"] - then["fail"]["count"] == 1
    assert now["compute_infer"]["count"] - then["compute_infer"]["count"] == 4
    assert now["compute_infer"]["ns"] > then["compute_infer"]["ns"]
    batches = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    batches_before = {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}
    assert batches[3] - batches_before.get(3, 0) == 3 and batches[5] - batches_before.get(5, 0) == 1
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0
    names = {(s["name"], s["version"]) for s in client.get_inference_statistics()["model_stats"]}
    assert ("mlp", "1") in names and ("mixed", "1") in names


def test_repository_index_and_sparsity_report(client: httpclient.InferenceServerClient,
                                              server: ServerProcess) -> None:
    rows = {row["name"]: row["state"] for row in client.get_model_repository_index()}
    assert rows["mlp"] == "READY" and rows["broken"] == "UNAVAILABLE"
    status, _, body = raw(server, "POST", "/v2/repository/index", json.dumps({"ready": True}).encode())
    assert status == 200 and "broken" not in {row["name"] for row in json.loads(body)}
    status, _, body = raw(server, "GET", "/v2/models/mlp/versions/1/sparsity")
    report = json.loads(body)
    assert status == 200 and report["versions"][0]["sparse_layers"] == ["hidden.weight"]


@pytest.mark.parametrize(("model", "inputs", "status", "message"), [
    ("no_such_model", [("INPUT0", [1, 16], "FP32")], "404", "unknown model"),
    ("mlp", [("INPUT0", [1, 15], "FP32")], "400", "shape"),
    ("mlp", [("INPUT0", [1, 16], "FP64")], "400", "datatype FP64"),
    ("mlp", [("WRONG", [1, 16], "FP32")], "400", "unexpected input 'WRONG'"),
    ("mlp", [("INPUT0", [9, 16], "FP32")], "400", "batch size 9"),
    ("broken", [("INPUT0", [1, 16], "FP32")], "503", "not ready"),
])
def test_error_rows(client: httpclient.InferenceServerClient, model: str, inputs: list[tuple[str, list[int], str]],
                    status: str, message: str) -> None:
    tensors = []
    for name, shape, datatype in inputs:
        dtype = {"FP32": np.float32, "FP64": np.float64}[datatype]
        tensors.append(httpclient.InferInput(name, shape, datatype).set_data_from_numpy(np.zeros(shape, dtype)))
    with pytest.raises(InferenceServerException) as err:
        client.infer(model, tensors)
    assert err.value.status() == status and message in err.value.message()


def test_unknown_output_and_version(client: httpclient.InferenceServerClient) -> None:
    x = mlp_input(np.zeros((1, 16), np.float32))
    with pytest.raises(InferenceServerException, match="unknown output 'NOPE'"):
        client.infer("mlp", [x], outputs=[httpclient.InferRequestedOutput("NOPE")])
    with pytest.raises(InferenceServerException, match="no loaded version 4") as err:
        client.infer("mlp", [x], model_version="4")
    assert err.value.status() == "404"


def test_unknown_routes_and_methods_answer_json_errors(server: ServerProcess) -> None:
    status, _, body = raw(server, "GET", "/v2/nothing/here")
    assert status == 404 and "/v2/nothing/here" in json.loads(body)["error"]
    status, _, body = raw(server, "GET", "/v2/models/mlp/infer")
    assert status == 405 and "error" in json.loads(body)
    status, _, body = raw(server, "GET", "/v2/models/no_such_model/config")
    assert status == 404 and "unknown model" in json.loads(body)["error"]


def test_garbage_and_lying_sizes_then_a_valid_request_on_the_same_connection(
        server: ServerProcess, modules: dict[str, torch.nn.Module]) -> None:
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                                     "parameters": {"binary_data_size": 64}}]}).encode()
    good = header + x.tobytes()
    bad = [
        (b"\x00\xff garbage", {}, "not valid JSON"),
        (good, {"Inference-Header-Content-Length": str(len(good) + 5)}, "exceeds"),
        (good, {"Inference-Header-Content-Length": "abc"}, "non-negative integer"),
        (header + x.tobytes()[:60], {"Inference-Header-Content-Length": str(len(header))}, "holds only 60 bytes"),
        (good + b"tail", {"Inference-Header-Content-Length": str(len(header))}, "follow the JSON header"),
        (b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, -16], "data": []}]}', {}, "negative"),
        (b'{"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}', {},
         "datatype BYTES does not match the model's FP32"),
        (json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                                 "data": [[1] * 15]}]}).encode(), {}, "holds 15 elements"),
    ]
    connection = http.client.HTTPConnection(server.http_url, timeout=30)
    try:
        for body, headers, message in bad:
            connection.request("POST", "/v2/models/mlp/infer", body=body, headers=headers)
            response = connection.getresponse()
            error = json.loads(response.read())["error"]
            assert response.status == 400 and message in error, error
        connection.request("POST", "/v2/models/mlp/infer", body=good,
                           headers={"Inference-Header-Content-Length": str(len(header))})
        response = connection.getresponse()
        result = json.loads(response.read())
        assert response.status == 200
    finally:
        connection.close()
    got = np.asarray(result["outputs"][0]["data"], np.float32).reshape(1, 4)
    assert_same(got, expected(modules["mlp"], x).numpy())


def test_non_http_bytes_do_not_hurt_the_server(server: ServerProcess,
                                               client: httpclient.InferenceServerClient) -> None:
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01 this is not http at all\r\n\r\n")
        sock.recv(1024)  # whatever it answers (or closes), the server must go on
    assert client.is_server_live()
    assert client.infer("mlp", [mlp_input(np.zeros((1, 16), np.float32))]).as_numpy("OUTPUT0").shape == (1, 4)
    assert server.alive()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client: httpclient.InferenceServerClient, modules: dict[str, torch.nn.Module],
                             algorithm: str) -> None:
    x = np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32)
    result = client.infer("mlp", [mlp_input(x)], request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)
    assert_same(result.as_numpy("OUTPUT0"), expected(modules["mlp"], x).numpy())
