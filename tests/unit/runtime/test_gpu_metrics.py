"""Per-layer kernel choice in Prometheus, from a real registry loading a model through the GPU runtime's pipeline
(on CPU, with a dense stand-in kernel and a deterministic clock: sparse wins from 4 rows up)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch
import torch.nn.functional as F
from prometheus_client import generate_latest
from tritonclient.grpc import model_config_pb2 as mc

from server.metrics import Metrics
from server.registry import Registry
from server.runtime.gpu import GpuRuntime
from server.runtime.gpu_decision import DENSE, LayerShape
from server.runtime.gpu_metrics import GpuCollector
from tests.support.models import prune_2_4, write_model


class Wide(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(64, 64)
        with torch.no_grad():
            self.fc.weight.copy_(prune_2_4(self.fc.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def clock(shape: LayerShape, kernel: str, rows: int) -> float:
    return 1.0 if kernel == DENSE else (2.0 if rows < 4 else 0.5)


def kernel(weight: torch.Tensor, bias: torch.Tensor | None):  # type: ignore[no-untyped-def]
    return lambda x: F.linear(x, weight, bias)


def build(version_dir: Path, config: mc.ModelConfig) -> GpuRuntime:
    return GpuRuntime(version_dir, config, device=torch.device("cpu"), dtype=torch.float16, keep_dense=True,
                      backend="cusparselt", sparse_factory=kernel, timer=clock)


async def scrape(root: Path) -> tuple[str, str]:
    metrics = Metrics()
    registry = Registry(root, metrics, build)
    metrics.registry.register(GpuCollector(registry))
    await registry.load_all()
    loaded = generate_latest(metrics.registry).decode()
    await registry.unload("wide")
    return loaded, generate_latest(metrics.registry).decode()


def test_kernel_choice_per_layer_and_batch_follows_the_loaded_model(tmp_path: Path) -> None:
    config = 'name: "wide"\nmax_batch_size: 4\ninput [{ name: "X" data_type: TYPE_FP32 dims: [64] }]\n' \
             'output [{ name: "Y" data_type: TYPE_FP32 dims: [64] }]'
    write_model(tmp_path, "wide", Wide(), (torch.randn(2, 64),), config, sparse={"fc.weight"})
    loaded, unloaded = asyncio.run(scrape(tmp_path))
    prefix = 'twofour_layer_sparse_kernel{batch="%d",layer="fc.weight",model="wide",version="1"}'
    assert prefix % 1 + " 0.0" in loaded and prefix % 2 + " 0.0" in loaded and prefix % 4 + " 1.0" in loaded
    assert 'twofour_layer_sparse_speedup{batch="4",layer="fc.weight",model="wide",version="1"} 2.0' in loaded
    assert "twofour_layer_sparse_kernel{" not in unloaded  # gone with the model
    assert "# TYPE twofour_gpu_torch_memory_bytes gauge" in loaded
