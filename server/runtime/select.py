"""Pick the device once at start (`--device auto|cpu|cuda`) and build runtimes for it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # hints only: tests/gpu/conftest.py imports usable_gpu on a GPU box that may lack tritonclient
    from tritonclient.grpc import model_config_pb2 as mc

    from server.runtime.base import Runtime

MIN_COMPUTE_CAPABILITY = (8, 0)  # Ampere: the first generation with 2:4 sparse Tensor Cores


class DeviceError(RuntimeError):
    """The requested device cannot be used; raised at start, before any port is opened."""


def usable_gpu() -> str | None:
    """Why no GPU can be used, or None when cuda:0 is an Ampere-or-newer GPU."""
    import torch

    if not torch.cuda.is_available():
        return "CUDA is not available (no GPU, no driver, or a CPU-only torch build)"
    capability = torch.cuda.get_device_capability(0)
    if capability < MIN_COMPUTE_CAPABILITY:
        return f"GPU compute capability {capability[0]}.{capability[1]} is below 8.0 (no 2:4 sparse Tensor Cores)"
    return None


def resolve_device(requested: str) -> str:
    """'cpu' or 'cuda' for the requested setting; `cuda` without a usable GPU is an error, `auto` falls back."""
    if requested == "cpu":
        return "cpu"
    problem = usable_gpu()
    if requested == "cuda" and problem:
        raise DeviceError(f"--device cuda was requested but {problem}")
    return "cpu" if problem else "cuda"


def create_runtime(version_dir: Path, config: mc.ModelConfig, device: str, **options: Any) -> Runtime:
    """A loaded runtime for one version directory on `device` ('cpu' or 'cuda')."""
    if device == "cuda":
        from server.runtime import gpu  # imported only where CUDA is in use

        return gpu.create(version_dir, config, device, **options)
    from server.runtime import cpu

    return cpu.create(version_dir, config, device, **options)
