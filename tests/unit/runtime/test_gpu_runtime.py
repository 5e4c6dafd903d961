"""The whole GPU-runtime load pipeline (probe, measure, decide, apply, warm up, describe, serve), run on CPU.

Only the two things that need CUDA are injected: the 2:4 kernel (a dense stand-in that counts its calls) and the
clock (deterministic: sparse wins from 4 rows up). Everything else is the real code on a real converted model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.artifacts import save_program
from server.errors import ErrorKind, ServingError
from server.runtime.gpu import GpuRuntime
from server.runtime.gpu_decision import DENSE, DISPATCH, SPARSE, LayerShape
from server.sparsity import compress
from tests.support.models import prune_2_4, write_model

CONFIG = """
name: "enc"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [%s] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [%s] }]
%s
"""


class Encoder(torch.nn.Module):
    """Two 2:4 layers the kernels accept, one 2:4 layer they do not (24 outputs), one dense head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.up = torch.nn.Linear(64, 128)
        self.down = torch.nn.Linear(128, 64)
        self.narrow = torch.nn.Linear(64, 24)
        self.head = torch.nn.Linear(24, 4)
        with torch.no_grad():
            for layer in (self.up, self.down, self.narrow):
                layer.weight.copy_(prune_2_4(layer.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.up(x))
        return self.head(torch.relu(self.narrow(x + self.down(h))))


SPARSE_NAMES = {"up.weight", "down.weight", "narrow.weight"}


class StandInKernel:
    """Dense math with a compressed-size `weight` (values + mask), so byte accounting is exercised."""

    calls = 0
    fail = False

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.dense, self.bias = weight.clone(), bias
        values, mask = compress(weight.float())
        self.weight = torch.cat([values.to(weight.dtype).contiguous().view(torch.uint8).flatten(), mask.flatten()])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if StandInKernel.fail:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore lines")
        StandInKernel.calls += 1
        return F.linear(x, self.dense, self.bias)


def clock(shape: LayerShape, kernel: str, rows: int) -> float:
    return 1.0 if kernel == DENSE else (2.0 if rows < 4 else 0.5)


def build(tmp_path: Path, keep_dense: bool, dims: str = "64", extra: str = "",
          dtype: torch.dtype = torch.float16) -> tuple[GpuRuntime, Encoder]:
    model = Encoder().eval()
    if dims == "64":
        write_model(tmp_path, "enc", model, (torch.randn(2, 64),), CONFIG % (dims, "4", extra), sparse=SPARSE_NAMES)
    else:  # a sequence model: batch and token dims both dynamic
        write_model(tmp_path, "enc", model, (torch.randn(2, 4, 64),), CONFIG % (dims, "-1, 4", extra),
                    sparse=SPARSE_NAMES, batched=False)
        program = torch.export.export(model, (torch.randn(2, 4, 64),), dynamic_shapes=(
            {0: torch.export.Dim("batch", max=1024), 1: torch.export.Dim("tokens", max=4096)},))
        save_program(program, tmp_path / "enc" / "1" / "program.pt2")
    config = text_format.Parse((tmp_path / "enc" / "config.pbtxt").read_text(), mc.ModelConfig())
    runtime = GpuRuntime(tmp_path / "enc" / "1", config, device=torch.device("cpu"), dtype=dtype,
                         keep_dense=keep_dense, backend="cutlass", sparse_factory=StandInKernel, timer=clock)
    return runtime, model


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def test_dispatch_mode_serves_close_to_the_fp32_model(tmp_path: Path) -> None:
    runtime, model = build(tmp_path, keep_dense=True)
    layers = {layer["layer"]: layer for layer in runtime.describe().details["layers"]}
    assert layers["up.weight"]["kernel"] == DISPATCH and layers["down.weight"]["kernel"] == DISPATCH
    assert [(b["batch"], b["rows"], b["kernel"]) for b in layers["up.weight"]["buckets"]] == \
        [(1, 1, DENSE), (2, 2, DENSE), (4, 4, SPARSE), (8, 8, SPARSE)]
    assert layers["narrow.weight"]["kernel"] == DENSE and "out_features 24" in layers["narrow.weight"]["reason"]
    for batch, expect_sparse in ((1, False), (3, True), (8, True)):
        StandInKernel.calls = 0
        x = torch.randn(batch, 64)
        y = runtime.infer({"X": x})["Y"]
        assert y.dtype == torch.float32 and y.shape == (batch, 4)  # config dtype on the way out
        assert relative_error(y, model(x).detach()) <= 1e-2
        assert StandInKernel.calls == (2 if expect_sparse else 0)


def test_description_reports_bytes_and_mode(tmp_path: Path) -> None:
    runtime, model = build(tmp_path, keep_dense=False)
    described = runtime.describe()
    details = described.details
    assert described.device == "cpu" and described.dtype == "float16" and details["mode"] == "memory"
    assert described.sparse_layers == sorted(SPARSE_NAMES)
    assert details["batch_sizes"] == [1, 2, 4, 8] and details["backend"] == "cutlass"
    # memory mode, geometric mean of (0.5, 0.5, 2, 2) = 1.0 < 1.03: both eligible layers chosen dense, once
    assert all(layer["kernel"] == DENSE for layer in details["layers"])
    assert described.bytes_by_kind["sparse_2_4"] == 0
    params = sum(p.numel() for p in model.parameters())
    assert described.dense_equivalent_bytes == params * 2  # fp16
    assert described.bytes_by_kind["dense"] == params * 2  # nothing duplicated, nothing lost in the rewrite


def test_sparse_only_layers_store_just_the_compressed_weight(tmp_path: Path) -> None:
    def sparse_always(shape: LayerShape, kernel: str, rows: int) -> float:
        return 1.0 if kernel == DENSE else 0.5

    model = Encoder().eval()
    write_model(tmp_path, "enc", model, (torch.randn(2, 64),), CONFIG % ("64", "4", ""), sparse=SPARSE_NAMES)
    config = text_format.Parse((tmp_path / "enc" / "config.pbtxt").read_text(), mc.ModelConfig())
    runtime = GpuRuntime(tmp_path / "enc" / "1", config, device=torch.device("cpu"), dtype=torch.bfloat16,
                         keep_dense=True, backend="cutlass", sparse_factory=StandInKernel, timer=sparse_always)
    described = runtime.describe()
    pruned = (128 * 64 + 64 * 128) * 2
    assert described.details["sparse_weight_dense_equivalent_bytes"] == pruned
    assert described.bytes_by_kind["sparse_2_4"] == pruned // 2 + pruned // 16  # values + packed mask
    assert described.bytes_by_kind["dense"] == described.dense_equivalent_bytes - pruned
    assert described.details["sparse_weight_ratio"] == pytest.approx(0.5625)
    x = torch.randn(5, 64)
    assert relative_error(runtime.infer({"X": x})["Y"], model(x).detach()) <= 2e-2  # bf16: 8-bit mantissa


def test_sequence_model_probes_with_the_configured_length(tmp_path: Path) -> None:
    extra = 'parameters { key: "sequence_length" value { string_value: "16" } }'
    runtime, model = build(tmp_path, keep_dense=True, dims="-1, 64", extra=extra)
    up = next(layer for layer in runtime.describe().details["layers"] if layer["layer"] == "up.weight")
    assert [(b["batch"], b["rows"]) for b in up["buckets"]] == [(1, 16), (2, 32), (4, 64), (8, 128)]
    assert up["kernel"] == SPARSE  # every measured bucket has >= 4 rows
    x = torch.randn(2, 7, 64)
    assert relative_error(runtime.infer({"X": x})["Y"], model(x).detach()) <= 1e-2


def test_a_kernel_failure_fails_only_that_batch(tmp_path: Path) -> None:
    runtime, model = build(tmp_path, keep_dense=True)
    StandInKernel.fail = True
    try:
        with pytest.raises(ServingError) as caught:
            runtime.infer({"X": torch.randn(8, 64)})
        assert caught.value.kind == ErrorKind.INTERNAL
        assert caught.value.message == ("GPU execution failed for this batch of 8 rows: "
                                        "CUDA error: an illegal memory access was encountered")
        x = torch.randn(1, 64)  # batch 1 runs dense: still served
        assert relative_error(runtime.infer({"X": x})["Y"], model(x).detach()) <= 1e-2
    finally:
        StandInKernel.fail = False
    assert runtime.infer({"X": torch.randn(8, 64)})["Y"].shape == (8, 4)
    runtime.close()
    with pytest.raises(ServingError, match="unloaded"):
        runtime.infer({"X": torch.randn(1, 64)})
