"""Each gRPC error row through the real server and tritonclient: the right status, a message naming the cause,
and the server still answering a valid request afterwards. Repository control (bearer token) and the size limits
run on a second server started with a token and tiny limits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.support.numerics import SMALL_MLP
from tests.support.server import ServerProcess

TOKEN = "s3cret-token"


def fp32_input(data: np.ndarray, name: str = "INPUT0", datatype: str = "FP32") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


def fails(call: Callable[[], Any], status: str, *fragments: str) -> str:
    """Run `call`, expect an InferenceServerException with `status` and every fragment in its message."""
    with pytest.raises(grpcclient.InferenceServerException) as info:
        call()
    message = info.value.message()
    assert info.value.status() == f"StatusCode.{status}", f"{info.value.status()}: {message}"
    for fragment in fragments:
        assert fragment in message, message
    return message


def still_serves(client: grpcclient.InferenceServerClient, module: torch.nn.Module) -> None:
    data = np.random.default_rng(5).standard_normal((2, 16)).astype(np.float32)
    out = client.infer("mlp", [fp32_input(data)]).as_numpy("OUTPUT0")
    with torch.inference_mode():
        SMALL_MLP.assert_close(out, module(torch.from_numpy(data)).numpy())


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


@pytest.fixture(scope="module")
def guarded(model_repository: tuple[Path, dict[str, torch.nn.Module]]) -> Iterator[ServerProcess]:
    """Explicit model control with a repository token, 128 KiB messages, 100 elements per request."""
    process = ServerProcess(model_repository[0], "--model-control-mode", "explicit", "--load-model", "mlp",
                            "--repository-token", TOKEN, "--max-request-bytes", "65536",
                            "--max-request-elements", "100")
    try:
        yield process
    finally:
        code = process.stop()
        assert code == 0, f"server exited with {code}:\n{process.output()}"


X = np.zeros((2, 16), dtype=np.float32)


def test_invalid_argument_rows(client: grpcclient.InferenceServerClient, server: ServerProcess,
                               modules: dict[str, torch.nn.Module]) -> None:
    fails(lambda: client.infer("mlp", [fp32_input(np.zeros((2, 15), np.float32))]), "INVALID_ARGUMENT",
          "'INPUT0'", "shape [2, 15]")
    fails(lambda: client.infer("mlp", [fp32_input(X.astype(np.float64), datatype="FP64")]), "INVALID_ARGUMENT",
          "datatype FP64", "FP32")
    fails(lambda: client.infer("mlp", [fp32_input(X, name="NOPE")]), "INVALID_ARGUMENT", "unexpected input 'NOPE'")
    fails(lambda: client.infer("mlp", [fp32_input(X)], outputs=[grpcclient.InferRequestedOutput("NOPE")]),
          "INVALID_ARGUMENT", "unknown output 'NOPE'")
    fails(lambda: client.infer("mlp", [fp32_input(np.zeros((9, 16), np.float32))]), "INVALID_ARGUMENT",
          "batch size 9", "1..8")
    strings = grpcclient.InferInput("INPUT0", [2, 1], "BYTES")
    strings.set_data_from_numpy(np.array([[b"a"], [b"b"]], dtype=np.object_))
    fails(lambda: client.infer("mlp", [strings]), "INVALID_ARGUMENT", "datatype BYTES", "FP32")
    fails(lambda: client.infer("mlp", [fp32_input(X)], parameters={"custom": "ok"}, model_version="x"),
          "INVALID_ARGUMENT", "version must be a positive integer")

    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_url))
    short = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[X.tobytes()[:100]])
    short.inputs.add(name="INPUT0", datatype="FP32", shape=[2, 16])
    with pytest.raises(grpc.RpcError) as raw_error:
        stub.ModelInfer(short)
    assert raw_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 128 bytes" in raw_error.value.details() and "holds 100" in raw_error.value.details()
    bad_priority = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[X.tobytes()])
    bad_priority.inputs.add(name="INPUT0", datatype="FP32", shape=[2, 16])
    bad_priority.parameters["priority"].string_param = "high"
    with pytest.raises(grpc.RpcError) as param_error:
        stub.ModelInfer(bad_priority)
    assert param_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'priority'" in param_error.value.details()
    still_serves(client, modules["mlp"])


def test_not_found_rows(client: grpcclient.InferenceServerClient, modules: dict[str, torch.nn.Module]) -> None:
    fails(lambda: client.infer("no_such_model", [fp32_input(X)]), "NOT_FOUND", "no_such_model")
    fails(lambda: client.infer("mlp", [fp32_input(X)], model_version="7"), "NOT_FOUND", "version 7")
    fails(lambda: client.get_model_metadata("no_such_model"), "NOT_FOUND", "no_such_model")
    fails(lambda: client.get_model_config("no_such_model"), "NOT_FOUND", "no_such_model")
    fails(lambda: client.get_inference_statistics("no_such_model"), "NOT_FOUND", "no_such_model")
    still_serves(client, modules["mlp"])


def test_unavailable_row(client: grpcclient.InferenceServerClient, modules: dict[str, torch.nn.Module]) -> None:
    fails(lambda: client.infer("broken", [fp32_input(X)]), "UNAVAILABLE", "'broken' is not ready",
          "max_batch_size")
    still_serves(client, modules["mlp"])


def test_unimplemented_rows(client: grpcclient.InferenceServerClient, modules: dict[str, torch.nn.Module]) -> None:
    fails(client.get_system_shared_memory_status, "UNIMPLEMENTED", "system shared memory")
    fails(lambda: client.register_system_shared_memory("r", "/k", 64), "UNIMPLEMENTED", "system shared memory")
    fails(client.unregister_system_shared_memory, "UNIMPLEMENTED", "system shared memory")
    fails(client.get_cuda_shared_memory_status, "UNIMPLEMENTED", "CUDA shared memory")
    fails(client.get_trace_settings, "UNIMPLEMENTED", "trace")
    fails(client.get_log_settings, "UNIMPLEMENTED", "logging")
    shm = grpcclient.InferInput("INPUT0", [2, 16], "FP32")
    shm.set_shared_memory("region0", 128)
    fails(lambda: client.infer("mlp", [shm]), "UNIMPLEMENTED", "shared memory")
    still_serves(client, modules["mlp"])


def test_resource_exhausted_rows(guarded: ServerProcess, modules: dict[str, torch.nn.Module]) -> None:
    client = grpcclient.InferenceServerClient(guarded.grpc_url)
    big = np.zeros((8, 16 * 512), dtype=np.float32)  # 256 KiB: over the 64 KiB (+64 KiB headroom) message limit
    fails(lambda: client.infer("mlp", [fp32_input(big)]), "RESOURCE_EXHAUSTED", "larger than max")
    fails(lambda: client.infer("mlp", [fp32_input(np.zeros((8, 16), np.float32))]), "RESOURCE_EXHAUSTED",
          "more than 100 tensor elements")  # 128 elements: a 512-byte message, refused by the element limit
    still_serves(client, modules["mlp"])


def test_repository_control_needs_the_bearer_token(guarded: ServerProcess,
                                                   modules: dict[str, torch.nn.Module]) -> None:
    client = grpcclient.InferenceServerClient(guarded.grpc_url)
    auth = {"authorization": f"Bearer {TOKEN}"}
    fails(lambda: client.load_model("mixed"), "UNAUTHENTICATED", "bearer token")
    fails(lambda: client.load_model("mixed", headers={"authorization": "Bearer wrong"}), "UNAUTHENTICATED")
    assert not client.is_model_ready("mixed")
    client.load_model("mixed", headers=auth)
    assert client.is_model_ready("mixed")
    index = {m.name: m.state for m in client.get_model_repository_index(headers=auth).models}
    assert index["mixed"] == "READY" and index["mlp"] == "READY"
    assert index["broken"] == "UNAVAILABLE" and index["mlp_batched"] == "UNAVAILABLE"
    fails(client.get_model_repository_index, "UNAUTHENTICATED", "bearer token")
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(guarded.grpc_url))
    ready = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True), metadata=tuple(auth.items()))
    assert sorted(m.name for m in ready.models) == ["mixed", "mlp"]
    fails(lambda: client.load_model("mixed", headers=auth, config='{"max_batch_size": 2}'), "UNIMPLEMENTED",
          "config")
    fails(lambda: client.load_model("broken", headers=auth), "INVALID_ARGUMENT", "max_batch_size")
    fails(lambda: client.load_model("../etc", headers=auth), "INVALID_ARGUMENT", "invalid model name")
    fails(lambda: client.load_model("no_such_model", headers=auth), "NOT_FOUND", "no_such_model")
    fails(lambda: client.unload_model("mixed"), "UNAUTHENTICATED")
    client.unload_model("mixed", headers=auth)
    assert not client.is_model_ready("mixed")
    fails(lambda: client.infer("mixed", [fp32_input(X)]), "UNAVAILABLE", "unloaded")
    still_serves(client, modules["mlp"])
