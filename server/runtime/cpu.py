"""Dense fp32 on the CPU: 2:4 layers are decompressed once at load and run as ordinary dense GEMMs, through the
program traced into TorchScript when that holds (cpu_trace.py), else through the exported graph."""

from __future__ import annotations

from pathlib import Path

import torch
from tritonclient.grpc import model_config_pb2 as mc

from server.artifacts import build_module, load_program, load_weights
from server.repository import PROGRAM_FILE, WEIGHTS_FILE
from server.runtime.base import RuntimeDescription
from server.runtime.binding import call, fill_optional, make_binding
from server.runtime.cpu_trace import input_order, trace


class CpuRuntime:
    """Runs the exported program under `torch.inference_mode`; safe to call from several threads."""

    def __init__(self, version_dir: Path, config: mc.ModelConfig) -> None:
        program = load_program(version_dir / PROGRAM_FILE)
        weights = load_weights(version_dir / WEIGHTS_FILE)
        self._binding = make_binding(program, config)
        self._module = build_module(program, weights)
        self._traced, forward = trace(self._module, self._binding, config)
        self._order = input_order(self._binding)
        dense = weights.dense_bytes()
        self._description = RuntimeDescription(
            device="cpu",
            dtype="float32",
            sparse_layers=sorted(weights.sparse),
            dense_layers=sorted(n for n in weights.tensors if n not in weights.sparse and n.endswith("weight")),
            bytes_by_kind={"dense": dense, "sparse_2_4": 0},
            dense_equivalent_bytes=dense,
            details={"stored_bytes": weights.stored_bytes, "forward": forward},
        )

    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            if self._traced is None:
                return call(self._module, self._binding, batch)
            fill_optional(self._binding, batch)
            # the plain interpreter: no profiling executor re-specialising the graph for each new batch size
            try:
                with torch.jit.optimized_execution(False):
                    values = self._traced(*(batch[name] for name in self._order))
            except Exception:  # noqa: BLE001 - TorchScript wraps the model's own error (an IndexError, say) in a
                # RuntimeError with an interpreter traceback; the exported graph raises the original for the client
                return call(self._module, self._binding, batch)
            return dict(zip(self._binding.outputs, values, strict=True))

    def describe(self) -> RuntimeDescription:
        return self._description

    def close(self) -> None:
        self._module = None  # type: ignore[assignment]
        self._traced = None


def create(version_dir: Path, config: mc.ModelConfig, device: str = "cpu") -> CpuRuntime:
    return CpuRuntime(version_dir, config)
