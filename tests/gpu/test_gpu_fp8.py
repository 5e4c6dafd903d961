"""FP8 / INT8 2:4 on a real GPU (skipped without one; FP8 needs compute capability 9.0, INT8 2:4 8.0 with
cuSPARSELt). The kernels against the dequantized arithmetic, CUDA-graph capture (no host sync), GPU bytes, and an
fp8 repository through the GPU runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.runtime.gpu_cusparselt import AlgorithmCache, DirectCusparseltKernel
from server.runtime.gpu_layers import tensor_bytes
from server.runtime.gpu_quant import Fp8DenseKernel, QuantSparseKernel, reference_output
from server.runtime.gpu_timing import random_2_4, synthetic_layer

CUDA = torch.device("cuda")


def capability() -> tuple[int, int]:
    return torch.cuda.get_device_capability() if torch.cuda.is_available() else (0, 0)


needs_fp8 = pytest.mark.skipif(capability() < (9, 0), reason="FP8 2:4 through cuSPARSELt needs sm_90")
needs_cusparselt = pytest.mark.skipif(not torch.backends.cusparselt.is_available(), reason="no cuSPARSELt")


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm())


@needs_fp8
@needs_cusparselt
@pytest.mark.parametrize("rows", [37, 256])
def test_fp8_kernels_compute_the_dequantized_product(rows: int) -> None:
    weight = random_2_4(1024, 4096, torch.float16, CUDA)
    bias = torch.randn(1024, dtype=torch.float16, device=CUDA)
    layer = synthetic_layer(weight, "fp8")
    x = torch.randn(rows, 4096, dtype=torch.float16, device=CUDA)
    want = reference_output(layer, bias.cpu(), x.cpu()).to(CUDA)
    for kernel in (QuantSparseKernel(layer, bias, torch.float16, CUDA), Fp8DenseKernel(layer, bias, torch.float16,
                                                                                         CUDA)):
        kernel_prepare = getattr(kernel, "prepare", None)
        if kernel_prepare is not None:
            kernel_prepare(rows, x)
        got = kernel(x)
        assert got.shape == (rows, 1024) and got.dtype == torch.float16 and got.is_contiguous()
        # same codes and scales; fp32 accumulation in a different order plus fp16 output rounding (2^-11)
        assert relative(got, want) <= 4 * 2.0**-11, type(kernel).__name__


@needs_fp8
@needs_cusparselt
def test_fp8_2_4_captures_into_a_cuda_graph() -> None:
    """All scales live on the device: capture succeeds (a host sync would raise) and replays match eager."""
    layer = synthetic_layer(random_2_4(512, 1024, torch.float16, CUDA), "fp8")
    kernel = QuantSparseKernel(layer, None, torch.float16, CUDA)
    x = torch.randn(64, 1024, dtype=torch.float16, device=CUDA)
    kernel.prepare(64, x)
    eager = kernel(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        kernel(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = kernel(x)
    graph.replay()
    torch.testing.assert_close(captured, eager, rtol=0, atol=0)


@needs_fp8
@needs_cusparselt
def test_fp8_2_4_bytes_on_the_gpu_are_at_most_0_32_of_fp16_dense() -> None:
    weight = random_2_4(4096, 4096, torch.float16, CUDA)
    kernel = QuantSparseKernel(synthetic_layer(weight, "fp8"), None, torch.float16, CUDA)
    held = tensor_bytes(kernel.weight) + tensor_bytes(kernel.w_scale)
    assert held / tensor_bytes(weight) <= 0.32, held / tensor_bytes(weight)


@needs_cusparselt
@pytest.mark.skipif(capability() < (8, 0), reason="INT8 2:4 needs sm_80")
def test_int8_2_4_computes_the_dequantized_product() -> None:
    weight = random_2_4(1024, 1024, torch.float16, CUDA)
    layer = synthetic_layer(weight, "int8")
    x = torch.randn(128, 1024, dtype=torch.float16, device=CUDA)
    got = QuantSparseKernel(layer, None, torch.float16, CUDA)(x)
    assert relative(got, reference_output(layer, None, x.cpu()).to(CUDA)) <= 4 * 2.0**-11


@needs_cusparselt
def test_direct_fp16_kernel_matches_dense_and_searches_once() -> None:
    weight = random_2_4(1024, 1024, torch.float16, CUDA)
    bias = torch.randn(1024, dtype=torch.float16, device=CUDA)
    cache = AlgorithmCache()
    kernel = DirectCusparseltKernel(weight, bias, algorithms=cache)
    x = torch.randn(100, 1024, dtype=torch.float16, device=CUDA)
    kernel.prepare(100, x)
    DirectCusparseltKernel(weight, bias, algorithms=cache).prepare(100, x)
    assert cache.searches == 1
    want = torch.nn.functional.linear(x.float(), weight.float(), bias.float())
    assert relative(kernel(x), want.double()) <= 1e-2


@needs_fp8
@needs_cusparselt
def test_an_fp8_repository_serves_through_the_gpu_runtime(tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from server.artifacts import load_weights, save_weights
    from server.runtime import gpu
    from tests.gpu.models import TokenEncoder, write_token_encoder

    model = TokenEncoder(1024, 2, vocab=1000)
    write_token_encoder(tmp_path, "enc", model, 1024, 128, max_batch=64)
    version = tmp_path / "enc" / "1"
    save_weights(dict(model.state_dict()), model.sparse_names(), version / "weights.safetensors", "fp8")
    config = text_format.Parse((tmp_path / "enc" / "config.pbtxt").read_text(), mc.ModelConfig())
    runtime = gpu.create(version, config, "cuda", keep_dense=True)
    details = runtime.describe().details
    assert details["cusparselt"]["quant_kernels"] == ["fp8_2_4", "fp8_dense"]
    assert all(layer["ranking"] is not None for layer in details["layers"])
    print("\n" + "\n".join(f"{x['layer']}: {x['kernel']} via {x['alternative']} {x['ranking']}" for x in
                           details["layers"]))
    reference = TokenEncoder(1024, 2, vocab=1000).eval()
    reference.load_state_dict(load_weights(version / "weights.safetensors").tensors)
    tokens = torch.randint(0, 1000, (16, 128))
    with torch.no_grad():
        want = reference(tokens)
    got = runtime.infer({"TOKENS": tokens})["Y"]
    # four GEMMs with fp8 activations (<= 2^-4 relative per entry) at first order, plus fp16 elsewhere
    assert float((got - want).norm() / want.norm()) <= 4 * 2.0**-4
    runtime.close()
