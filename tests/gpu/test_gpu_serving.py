"""On a real GPU: 2:4 kernels give the dense fp16 model's outputs, decisions are measured, bytes shrink, and the
served model (real server, real tritonclient) matches. Skipped without CUDA (see conftest.py)."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format

# The lent GPU machine may lack tritonclient (bench/RESULTS.md, GPU: carry it as a wheel); say so, don't error.
mc = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                         reason="tritonclient is not installed (model configs are its protobufs)")

from server.runtime import gpu  # noqa: E402
from server.runtime.gpu_decision import DENSE, SPARSE, LayerShape  # noqa: E402
from server.runtime.gpu_timing import available_backend, semi_structured_factory  # noqa: E402
from tests.gpu.models import EncoderMLP, write_encoder  # noqa: E402

pytestmark = pytest.mark.gpu
HIDDEN = 768
# What `twofour serve` and this test's client import; server.app last catches anything this list forgot.
SERVER_MODULES = ("fastapi", "starlette", "uvicorn", "pydantic", "pydantic_settings", "httptools", "orjson",
                  "grpc_health.v1", "tritonclient.http", "server.app")


def missing_modules(names: tuple[str, ...]) -> list[str]:
    """Names that do not import here (the real import: a package present without its dependencies counts)."""
    absent = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            absent.append(name)
    return absent


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


def load_config(root: Path, name: str) -> mc.ModelConfig:
    return text_format.Parse((root / name / "config.pbtxt").read_text(), mc.ModelConfig())


def dense_fp16(model: EncoderMLP, x: torch.Tensor, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    reference = EncoderMLP(HIDDEN, len(model.up)).to(dtype).cuda().eval()
    reference.load_state_dict(model.state_dict())
    with torch.inference_mode():
        return reference(x.cuda().to(dtype)).float().cpu()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_forced_sparse_kernels_match_the_dense_model(tmp_path: Path, dtype: torch.dtype) -> None:
    model = EncoderMLP(HIDDEN)
    write_encoder(tmp_path, "enc", model, HIDDEN, max_batch=64)
    backend = available_backend()

    def sparse_wins(shape: LayerShape, kernel: str, rows: int) -> float:
        return 1.0 if kernel == DENSE else 0.5

    runtime = gpu.GpuRuntime(tmp_path / "enc" / "1", load_config(tmp_path, "enc"), device=torch.device("cuda", 0),
                             dtype=dtype, keep_dense=False, backend=backend,
                             sparse_factory=semi_structured_factory(backend), timer=sparse_wins)
    details = runtime.describe().details
    assert all(layer["kernel"] == SPARSE for layer in details["layers"])
    assert details["sparse_weight_ratio"] <= 0.6  # target: pruned layers' GPU bytes <= 0.6x dense
    for batch in (1, 3, 17, 64):
        x = torch.randn(batch, HIDDEN)
        got = runtime.infer({"X": x})["Y"]
        assert got.dtype == torch.float32
        assert relative_error(got, dense_fp16(model, x, dtype)) <= 1e-2
    runtime.close()


def test_measured_decisions_are_recorded_and_served_correctly(tmp_path: Path) -> None:
    model = EncoderMLP(HIDDEN)
    write_encoder(tmp_path, "enc", model, HIDDEN, max_batch=256)
    runtime = gpu.create(tmp_path / "enc" / "1", load_config(tmp_path, "enc"), "cuda", keep_dense=True)
    described = runtime.describe()
    details = described.details
    assert described.device == "cuda:0" and details["batch_sizes"][-1] == 256
    for layer in details["layers"]:
        assert [b["batch"] for b in layer["buckets"]] == details["batch_sizes"]
        assert all(b["dense_us"] > 0 and b["sparse_us"] > 0 for b in layer["buckets"])
    assert details["gpu_memory_allocated_bytes"] > 0
    assert details["cuda_graphs"]["enabled"], details["cuda_graphs"]
    for batch in (1, 100, 256):  # 100 rows replay the 128-row graph, padded
        x = torch.randn(batch, HIDDEN)
        assert relative_error(runtime.infer({"X": x})["Y"], dense_fp16(model, x)) <= 1e-2
    runtime.close()


def test_served_over_tritonclient_with_device_cuda(tmp_path: Path) -> None:
    absent = missing_modules(SERVER_MODULES)
    if absent:
        pytest.skip(f"the server's dependencies are not importable here: {', '.join(absent)}")
    import tritonclient.http as httpclient

    from tests.support.server import ServerProcess

    model = EncoderMLP(HIDDEN)
    write_encoder(tmp_path, "enc", model, HIDDEN, max_batch=32)
    server = ServerProcess(tmp_path, "--device", "cuda", timeout=300)
    try:
        client = httpclient.InferenceServerClient(server.http_url)
        x = np.random.default_rng(0).standard_normal((8, HIDDEN)).astype(np.float32)
        request = httpclient.InferInput("X", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        y = client.infer("enc", [request]).as_numpy("Y")
        assert relative_error(torch.from_numpy(y), dense_fp16(model, torch.from_numpy(x))) <= 1e-2
        asyncio.run(_check_grpc_report(server.grpc_url))
        _check_gpu_memory_metrics(server.metrics_url)
    finally:
        assert server.stop() == 0, server.output()


async def _check_grpc_report(url: str) -> None:
    import grpc

    from server.proto import sparsity_pb2 as pb
    from server.proto import sparsity_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(url) as channel:
        report = await pb_grpc.SparsityServiceStub(channel).ModelSparsity(pb.ModelSparsityRequest(name="enc"))
    version = report.versions[0]
    assert version.device == "cuda:0" and version.dtype == "float16"
    assert {layer.layer for layer in version.layers} == EncoderMLP(HIDDEN).sparse_names()


def _check_gpu_memory_metrics(url: str) -> None:
    """The metrics issue asks for GPU memory used/total per device once CUDA is in use: read them off /metrics."""
    import urllib.request

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
               if line.startswith("twofour_gpu_memory_")}
    used, total = samples.get('twofour_gpu_memory_used_bytes{device="0"}'), samples.get(
        'twofour_gpu_memory_total_bytes{device="0"}')
    print(f"gpu memory metrics: used={used} total={total}")
    assert used is not None and total is not None, sorted(samples)
    assert 0 < used <= total
