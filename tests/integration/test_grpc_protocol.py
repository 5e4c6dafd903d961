"""Every GRPCInferenceService RPC against the real `twofour serve` subprocess, through the unmodified tritonclient.

Outputs are compared with the torch modules the repository was built from; statistics are compared with what
the test itself sent (as deltas, since the server is shared by the whole session).
"""

from __future__ import annotations

import queue
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.support.numerics import SMALL_MLP
from tests.support.server import ServerProcess

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_url))


def torch_out(module: torch.nn.Module, *args: np.ndarray | torch.Tensor) -> Any:
    tensors = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args]
    with torch.inference_mode():
        return module(*tensors)


def fp32_input(data: np.ndarray, name: str = "INPUT0") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return tensor


def test_health_and_server_metadata(client: grpcclient.InferenceServerClient, server: ServerProcess) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("broken")
    assert not client.is_model_ready("no_such_model") and not client.is_model_ready("mlp", "7")
    meta = client.get_server_metadata()
    assert meta.name == "twofour" and meta.version
    assert {"model_repository", "statistics", "binary_tensor_data"} <= set(meta.extensions)
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_url))
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def test_model_metadata_and_config(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("mlp")
    assert (meta.name, list(meta.versions), meta.platform) == ("mlp", ["1"], "twofour")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("INPUT0", "FP32", [-1, 16])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("OUTPUT0", "FP32", [-1, 4])]
    mixed = client.get_model_metadata("mixed", "1")
    assert [(t.name, t.datatype) for t in mixed.inputs] == [("A", "FP16"), ("B", "INT32"), ("C", "BOOL"),
                                                            ("D", "BF16")]
    config = client.get_model_config("mlp").config
    assert (config.name, config.max_batch_size, config.backend) == ("mlp", 8, "twofour")
    assert list(config.input[0].dims) == [16] and config.output[0].name == "OUTPUT0"
    assert client.get_model_config("mlp_batched").config.HasField("dynamic_batching")


def test_infer_matches_the_torch_model_and_echoes_the_id(client: grpcclient.InferenceServerClient,
                                                         modules: dict[str, torch.nn.Module]) -> None:
    data = RNG.standard_normal((5, 16)).astype(np.float32)
    result = client.infer("mlp", [fp32_input(data)], request_id="req-42", priority=1, timeout=10_000_000,
                          parameters={"custom": "ok", "n": 3, "flag": True})  # unknown parameters are accepted
    assert result.get_response().id == "req-42" and result.get_response().model_version == "1"
    SMALL_MLP.assert_close(result.as_numpy("OUTPUT0"), torch_out(modules["mlp"], data).numpy())
    batched = client.infer("mlp_batched", [fp32_input(data)], model_version="1")
    SMALL_MLP.assert_close(batched.as_numpy("OUTPUT0"), torch_out(modules["mlp_batched"], data).numpy())


def test_every_dtype_and_requested_outputs(client: grpcclient.InferenceServerClient,
                                           modules: dict[str, torch.nn.Module]) -> None:
    a = RNG.standard_normal((2, 3)).astype(np.float16)
    b = RNG.integers(-1000, 1000, (2, 3), dtype=np.int32)
    c = RNG.integers(0, 2, (2, 3)).astype(np.bool_)
    d = RNG.standard_normal((2, 3)).astype(ml_dtypes.bfloat16)
    inputs = []
    for name, array, datatype in (("A", a, "FP16"), ("B", b, "INT32"), ("C", c, "BOOL"), ("D", d, "BF16")):
        tensor = grpcclient.InferInput(name, [2, 3], datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    d_torch = torch.from_numpy(d.view(np.uint16)).view(torch.bfloat16)
    expected = torch_out(modules["mixed"], a, b, c, d_torch)
    result = client.infer("mixed", inputs)
    assert np.array_equal(result.as_numpy("A2"), expected["A2"].numpy())
    assert np.array_equal(result.as_numpy("B1"), expected["B1"].numpy())
    assert np.array_equal(result.as_numpy("NOTC"), expected["NOTC"].numpy())
    d_out = result.as_numpy("D")
    assert d_out.dtype == ml_dtypes.bfloat16
    assert np.array_equal(d_out.view(np.uint16), expected["D"].view(torch.uint16).numpy())

    wanted = [grpcclient.InferRequestedOutput("NOTC"), grpcclient.InferRequestedOutput("A2")]
    only = client.infer("mixed", inputs, outputs=wanted).get_response()
    assert [o.name for o in only.outputs] == ["NOTC", "A2"] and len(only.raw_output_contents) == 2


def test_typed_contents_are_accepted(stub: pb_grpc.GRPCInferenceServiceStub,
                                     modules: dict[str, torch.nn.Module]) -> None:
    data = RNG.standard_normal((2, 16)).astype(np.float32)
    request = pb.ModelInferRequest(model_name="mlp", id="typed")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[2, 16]).contents.fp32_contents.extend(data.ravel())
    reply = stub.ModelInfer(request)
    assert reply.id == "typed" and reply.outputs[0].datatype == "FP32" and list(reply.outputs[0].shape) == [2, 4]
    out = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(2, 4)
    SMALL_MLP.assert_close(out, torch_out(modules["mlp"], data).numpy())


def test_a_message_above_grpc_default_4mib_reaches_the_server(client: grpcclient.InferenceServerClient) -> None:
    """The receive limit comes from --max-request-bytes (64 MiB), not gRPC's 4 MiB default: the server parses
    a 5 MiB request and answers about its content (batch size), not about its size."""
    data = np.zeros((81920, 16), dtype=np.float32)
    with pytest.raises(grpcclient.InferenceServerException) as info:
        client.infer("mlp", [fp32_input(data)])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "batch size 81920" in info.value.message()


def statistics(client: grpcclient.InferenceServerClient, model: str) -> Any:
    (row,) = client.get_inference_statistics(model, "1").model_stats
    return row


def test_statistics_count_what_was_sent(client: grpcclient.InferenceServerClient) -> None:
    before = statistics(client, "mlp")
    data = RNG.standard_normal((3, 16)).astype(np.float32)
    for _ in range(4):
        client.infer("mlp", [fp32_input(data)])
    with pytest.raises(grpcclient.InferenceServerException):
        client.infer("mlp", [fp32_input(np.zeros((3, 15), np.float32))])
    after = statistics(client, "mlp")
    assert (after.name, after.version) == ("mlp", "1")
    assert after.inference_count - before.inference_count == 12
    assert after.execution_count - before.execution_count == 4
    s, b = after.inference_stats, before.inference_stats
    assert s.success.count - b.success.count == 4 and s.success.ns > b.success.ns
    assert s.fail.count - b.fail.count == 1
    assert s.compute_infer.count - b.compute_infer.count == 4 and s.compute_infer.ns > b.compute_infer.ns
    batch3 = {x.batch_size: x.compute_infer.count for x in after.batch_stats}
    batch3_before = {x.batch_size: x.compute_infer.count for x in before.batch_stats}
    assert batch3[3] - batch3_before.get(3, 0) == 4
    assert after.last_inference >= before.last_inference and after.last_inference > 0
    everything = client.get_inference_statistics().model_stats
    assert {"mlp", "mlp_batched", "mixed"} <= {row.name for row in everything}


def test_stream_survives_an_error_in_the_middle(server: ServerProcess,
                                                modules: dict[str, torch.nn.Module]) -> None:
    replies: queue.Queue = queue.Queue()
    stream_client = grpcclient.InferenceServerClient(server.grpc_url)
    stream_client.start_stream(callback=lambda result, error: replies.put((result, error)))
    data = {i: RNG.standard_normal((1 + i % 3, 16)).astype(np.float32) for i in range(8)}
    try:
        for i in range(4):
            stream_client.async_stream_infer("mlp_batched", [fp32_input(data[i])], request_id=f"ok-{i}")
        stream_client.async_stream_infer("mlp_batched", [fp32_input(np.zeros((1, 3), np.float32))],
                                         request_id="bad-shape")
        stream_client.async_stream_infer("no_such_model", [fp32_input(data[0])], request_id="bad-model")
        for i in range(4, 8):
            stream_client.async_stream_infer("mlp_batched", [fp32_input(data[i])], request_id=f"ok-{i}")
        got = [replies.get(timeout=30) for _ in range(10)]
    finally:
        stream_client.stop_stream()
    results = {r.get_response().id: r for r, e in got if e is None}
    errors = sorted(str(e) for r, e in got if e is not None)
    assert sorted(results) == [f"ok-{i}" for i in range(8)]
    assert len(errors) == 2
    assert any("shape [1, 3]" in e for e in errors) and any("no_such_model" in e for e in errors)
    for i in range(8):
        SMALL_MLP.assert_close(results[f"ok-{i}"].as_numpy("OUTPUT0"),
                               torch_out(modules["mlp_batched"], data[i]).numpy())


def test_repository_index_lists_ready_and_broken_models(client: grpcclient.InferenceServerClient) -> None:
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["mlp"].state == "READY" and index["mlp"].version == "1"
    assert index["broken"].state == "UNAVAILABLE" and "max_batch_size" in index["broken"].reason
