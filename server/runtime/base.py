"""What every runtime offers the rest of the server, and the pieces all runtimes share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tritonclient.grpc import model_config_pb2 as mc


@dataclass
class RuntimeDescription:
    """What a loaded model costs and how it runs; feeds metrics, `inspect` and the sparsity report."""

    device: str
    dtype: str
    dense_layers: list[str] = field(default_factory=list)
    sparse_layers: list[str] = field(default_factory=list)  # stored 2:4 in the repository
    bytes_by_kind: dict[str, int] = field(default_factory=dict)  # resident bytes: {"dense": n, "sparse_2_4": n}
    dense_equivalent_bytes: int = 0  # bytes the same weights would take fully dense on this device
    details: dict[str, Any] = field(default_factory=dict)  # runtime-specific (e.g. the GPU decision table)


def example_shape(config: mc.ModelConfig, tensor: mc.ModelInput, rows: int, length: int) -> list[int]:
    """A config input's shape at `rows` rows (when the model batches), its variable (-1) dims at `length`: the
    inputs runtimes build at load to probe, trace or time a model."""
    lead = [rows] if config.max_batch_size > 0 else []
    return lead + [length if d == -1 else d for d in tensor.dims]


class Runtime(Protocol):
    """A model version loaded on a device, ready to run merged batches."""

    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run one batch: inputs by config name (CPU tensors) -> outputs by config name (CPU tensors)."""
        ...

    def describe(self) -> RuntimeDescription: ...

    def close(self) -> None:
        """Release device memory; the runtime is unusable afterwards."""
        ...


class RuntimeFactory(Protocol):
    def __call__(self, version_dir: Path, config: mc.ModelConfig, device: str) -> Runtime: ...
