"""Dense fp32 on the CPU: 2:4 layers are decompressed once at load and run as ordinary dense GEMMs, through the
program traced into TorchScript when that holds (cpu_trace.py), else through the exported graph."""

from __future__ import annotations

from pathlib import Path

import torch
from tritonclient.grpc import model_config_pb2 as mc

from server.artifacts import build_module, load_program, load_weights
from server.repository import PROGRAM_FILE, WEIGHTS_FILE
from server.runtime.base import RuntimeDescription
from server.runtime.binding import make_binding
from server.runtime.cpu_trace import batch_forward


class CpuRuntime:
    """Runs the model (traced, or its exported graph) under `torch.inference_mode`; safe from several threads."""

    def __init__(self, version_dir: Path, config: mc.ModelConfig) -> None:
        program = load_program(version_dir / PROGRAM_FILE)
        weights = load_weights(version_dir / WEIGHTS_FILE)
        self._forward, how = batch_forward(build_module(program, weights), make_binding(program, config), config)
        dense = weights.dense_bytes()
        self._description = RuntimeDescription(
            device="cpu",
            dtype="float32",
            sparse_layers=sorted(weights.sparse),
            dense_layers=sorted(n for n in weights.tensors if n not in weights.sparse and n.endswith("weight")),
            bytes_by_kind={"dense": dense, "sparse_2_4": 0},
            dense_equivalent_bytes=dense,
            details={"stored_bytes": weights.stored_bytes, "forward": how},
        )

    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self._forward(batch)

    def describe(self) -> RuntimeDescription:
        return self._description

    def close(self) -> None:
        self._forward = None  # type: ignore[assignment]  # drops the module, its weights and its trace


def create(version_dir: Path, config: mc.ModelConfig, device: str = "cpu") -> CpuRuntime:
    return CpuRuntime(version_dir, config)
