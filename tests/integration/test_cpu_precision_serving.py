"""A real server with CPU precisions: one model forced to bf16 by its config, one left to `--cpu-precision auto`,
one asking for a precision that does not exist. Answers come through tritonclient; the decision through the HTTP
and gRPC sparsity reports and /metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient

from tests.support.models import MLP_CONFIG, SmallMLP, write_model
from tests.support.server import ServerProcess
from tests.unit.runtime.test_cpu_precision import CONFIG, Block

FORCED = 'parameters { key: "cpu_precision" value { string_value: "bf16" } }'


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("repo")
    block, mlp = Block(), SmallMLP(seed=5)
    write_model(root, "block", block, (torch.randn(2, 64), torch.zeros(2, 5, dtype=torch.long)),
                CONFIG.format(extra=FORCED))
    write_model(root, "mlp", mlp, (torch.randn(2, 16),), MLP_CONFIG.format(name="mlp", extra=""))
    write_model(root, "bad", SmallMLP(seed=6), (torch.randn(2, 16),), MLP_CONFIG.format(
        name="bad", extra='parameters { key: "cpu_precision" value { string_value: "fp8" } }'))
    return root, {"block": block, "mlp": mlp}


@pytest.fixture(scope="module")
def server(repo: tuple[Path, dict]) -> Iterator[ServerProcess]:
    process = ServerProcess(repo[0], "--cpu-precision", "auto", timeout=120.0)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


def report(server: ServerProcess, model: str) -> dict:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/sparsity", timeout=10) as answer:
        return json.loads(answer.read())["versions"][0]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_forced_model_runs_bf16_and_answers_within_bf16_error(server: ServerProcess, repo: tuple) -> None:
    version = report(server, "block")
    assert version["dtype"] == "bfloat16"
    decision = version["details"]["cpu_precision"]
    assert decision["requested"] == decision["chosen"] == "bf16"
    assert [c["precision"] for c in decision["candidates"]] == ["fp32", "bf16"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 64)).astype(np.float32)
    ids = rng.integers(0, 50, (6, 5)).astype(np.int64)
    client = httpclient.InferenceServerClient(server.http_url)
    inputs = [httpclient.InferInput("X", [6, 64], "FP32"), httpclient.InferInput("IDS", [6, 5], "INT64")]
    inputs[0].set_data_from_numpy(x)
    inputs[1].set_data_from_numpy(ids)
    served = client.infer("block", inputs).as_numpy("Y")
    client.close()
    want = repo[1]["block"](torch.from_numpy(x), torch.from_numpy(ids)).detach().numpy()
    assert served.dtype == np.float32
    assert cosine(served, want).min() >= 0.9999  # bf16's rounding bound (see test_cpu_precision.py)
    assert not np.array_equal(served, want)


def test_auto_reports_its_measurement_and_keeps_the_budget(server: ServerProcess, repo: tuple) -> None:
    decision = report(server, "mlp")["details"]["cpu_precision"]
    assert decision["requested"] == "auto" and decision["chosen"] in ("fp32", "bf16", "int8")
    by = {c["precision"]: c for c in decision["candidates"]}
    assert by["fp32"]["median_ms"] is not None or decision["reason"].startswith("no other precision")
    assert by[decision["chosen"]]["within_budget"]
    if decision["chosen"] != "fp32":
        assert by[decision["chosen"]]["speedup"] >= decision["budget"]["min_speedup"]
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT0", [4, 16], "FP32")
    tensor.set_data_from_numpy(x)
    served = client.infer("mlp", [tensor]).as_numpy("OUTPUT0")
    client.close()
    want = repo[1]["mlp"](torch.from_numpy(x)).detach().numpy()
    assert cosine(served, want).min() >= decision["budget"]["min_cosine"] - 1e-3  # budget held on a sample


def test_the_grpc_report_and_the_metrics_carry_the_decision(server: ServerProcess) -> None:
    import grpc

    from server.proto import sparsity_pb2 as pb
    from server.proto import sparsity_pb2_grpc as pb_grpc

    async def fetch() -> pb.ModelSparsityResponse:
        async with grpc.aio.insecure_channel(server.grpc_url) as channel:
            return await pb_grpc.SparsityServiceStub(channel).ModelSparsity(pb.ModelSparsityRequest(name="block"))

    version = asyncio.run(fetch()).versions[0]
    assert version.dtype == "bfloat16" and version.details["cpu_precision"]["chosen"] == "bf16"
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    assert 'twofour_cpu_precision{model="block",precision="bf16",version="1"} 1.0' in text
    assert 'twofour_cpu_precision{model="block",precision="fp32",version="1"} 0.0' in text
    assert 'twofour_cpu_precision_min_cosine{model="block",precision="bf16",version="1"}' in text


def test_an_unknown_precision_leaves_the_model_unavailable_with_the_reason(server: ServerProcess) -> None:
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        index = {m["name"]: m for m in json.loads(answer.read())}
    assert index["bad"]["state"] == "UNAVAILABLE"
    assert "parameter 'cpu_precision' is 'fp8'" in index["bad"]["reason"]
    assert index["block"]["state"] == index["mlp"]["state"] == "READY"
