"""A 2:4 kernel that refuses a layer at load (timing or converting it) leaves that layer dense, with the reason in
the decision table, instead of failing the whole model load. Run on CPU with injected failing kernels."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.runtime.gpu import GpuRuntime
from server.runtime.gpu_decision import DENSE, SPARSE, LayerShape
from tests.support.models import prune_2_4, write_model

CONFIG = """
name: "mlp"
max_batch_size: 4
input [{ name: "X" data_type: TYPE_FP32 dims: [64] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [64] }]
"""


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.up, self.down = torch.nn.Linear(64, 128), torch.nn.Linear(128, 64)
        with torch.no_grad():
            for layer in (self.up, self.down):
                layer.weight.copy_(prune_2_4(layer.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


class RefusesDown:
    """Converts up.weight's shape, raises like torch does (RuntimeError) for the 64x128 one."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        if weight.shape == (64, 128):
            raise RuntimeError("CUDA error: CUSPARSELT_STATUS_NOT_SUPPORTED\nsecond line")
        self.weight, self.bias = weight.clone(), bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def load(tmp_path: Path, timer: object) -> tuple[GpuRuntime, Mlp]:
    model = Mlp().eval()
    write_model(tmp_path, "mlp", model, (torch.randn(2, 64),), CONFIG, sparse={"up.weight", "down.weight"})
    config = text_format.Parse((tmp_path / "mlp" / "config.pbtxt").read_text(), mc.ModelConfig())
    runtime = GpuRuntime(tmp_path / "mlp" / "1", config, device=torch.device("cpu"), dtype=torch.float16,
                         keep_dense=False, backend="cutlass", sparse_factory=RefusesDown, timer=timer)  # type: ignore[arg-type]
    return runtime, model


def by_layer(runtime: GpuRuntime) -> dict[str, dict[str, object]]:
    return {layer["layer"]: layer for layer in runtime.describe().details["layers"]}


def test_a_layer_whose_conversion_fails_is_served_dense(tmp_path: Path) -> None:
    def sparse_wins(shape: LayerShape, kernel: str, rows: int) -> float:
        return 1.0 if kernel == DENSE else 0.5

    runtime, model = load(tmp_path, sparse_wins)
    layers = by_layer(runtime)
    assert layers["up.weight"]["kernel"] == SPARSE
    assert layers["down.weight"]["kernel"] == DENSE
    assert layers["down.weight"]["reason"] == "2:4 conversion failed: CUDA error: CUSPARSELT_STATUS_NOT_SUPPORTED"
    assert all(b["kernel"] == DENSE for b in layers["down.weight"]["buckets"])  # type: ignore[attr-defined]
    x = torch.randn(3, 64)
    y = runtime.infer({"X": x})["Y"]
    assert float((y - model(x).detach()).norm() / model(x).detach().norm()) <= 1e-2


def test_a_layer_whose_timing_fails_stays_dense(tmp_path: Path) -> None:
    def refuses_down(shape: LayerShape, kernel: str, rows: int) -> float:
        if kernel != DENSE and shape == LayerShape(64, 128):
            raise RuntimeError("CUDA error: misaligned address")
        return 1.0 if kernel == DENSE else 0.5

    runtime, _ = load(tmp_path, refuses_down)
    layers = by_layer(runtime)
    assert layers["up.weight"]["kernel"] == SPARSE
    assert layers["down.weight"]["kernel"] == DENSE
    assert layers["down.weight"]["reason"] == "2:4 kernel failed while timing: CUDA error: misaligned address"
    assert runtime.infer({"X": torch.randn(2, 64)})["Y"].shape == (2, 64)
