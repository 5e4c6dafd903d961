"""Pure rules of the GPU runtime: compute dtype, 2:4 kernel shape limits, batch sizes to measure, GPU placement.

They live apart from gpu.py so they can be unit-tested on a machine without CUDA. Each rule answers with a value
or a reason string, never by raising deep inside a load, so the decision table can say *why* a layer stays dense.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # only for hints: bench/gpu.py imports these modules on a GPU box with torch alone
    from tritonclient.grpc import model_config_pb2 as mc

DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16}
CONFIG_DTYPE_KEY = "dtype"  # config.pbtxt: parameters { key: "dtype" value { string_value: "bfloat16" } }
SEQUENCE_KEY = "sequence_length"  # length used for a variable (-1) non-batch dim when probing at load
DEFAULT_SEQUENCE_LENGTH = 128
GRAPHS_KEY = "cuda_graphs"  # config.pbtxt: parameters { key: "cuda_graphs" value { string_value: "false" } }


@dataclass(frozen=True)
class KernelLimits:
    """PyTorch's `_SEMI_STRUCTURED_SPARSE_CONFIG`: sparse weight dims must be multiples of (min_rows, min_cols);
    the dense activation is padded to multiples of (dense_min_rows, dense_min_cols) by the kernel wrapper."""

    min_rows: int
    min_cols: int
    dense_min_rows: int
    dense_min_cols: int


# Copied from torch/sparse/semi_structured.py (a unit test checks they still match the installed torch).
# fp32 is deliberately absent: PyTorch's CUTLASS path treats fp32 as 1:2 and silently drops values (design.md).
KERNEL_LIMITS: dict[str, dict[torch.dtype, KernelLimits]] = {
    "cusparselt": {torch.float16: KernelLimits(16, 16, 8, 8), torch.bfloat16: KernelLimits(16, 16, 8, 8)},
    "cutlass": {torch.float16: KernelLimits(32, 64, 8, 8), torch.bfloat16: KernelLimits(32, 64, 8, 8)},
}


def compute_dtype(flag: str, config: mc.ModelConfig) -> torch.dtype:
    """fp16 unless asked otherwise. The model's own config parameter wins over the server-wide flag because it
    is the more specific statement (a model known to overflow in fp16 says bfloat16 once, for every server)."""
    wanted = config.parameters[CONFIG_DTYPE_KEY].string_value if CONFIG_DTYPE_KEY in config.parameters else ""
    source = f"config parameter {CONFIG_DTYPE_KEY!r}"
    if not wanted or wanted == "auto":
        wanted, source = flag, "--dtype"
    if wanted == "auto":
        return torch.float16
    if wanted not in DTYPES:
        raise ValueError(f"{source} is {wanted!r}; the GPU runtime computes in one of auto, {', '.join(DTYPES)}")
    return DTYPES[wanted]


def kernel_shape_problem(out_features: int, in_features: int, dtype: torch.dtype, backend: str) -> str | None:
    """Why a [out_features, in_features] weight cannot run on the 2:4 kernel, or None when it can."""
    if backend == "none":
        return ("no 2:4 kernel on this GPU: PyTorch's CUTLASS kernels run on compute capability 8.x only and this "
                "torch build has no cuSPARSELt")
    limits = KERNEL_LIMITS.get(backend)
    if limits is None:
        return f"unknown 2:4 backend {backend!r}"
    rule = limits.get(dtype)
    if rule is None:
        return f"{backend} 2:4 kernels are not used in {str(dtype).removeprefix('torch.')} (only float16/bfloat16)"
    if out_features < rule.min_rows or out_features % rule.min_rows:
        return f"out_features {out_features} is not a positive multiple of {rule.min_rows} ({backend})"
    if in_features < rule.min_cols or in_features % rule.min_cols:
        return f"in_features {in_features} is not a positive multiple of {rule.min_cols} ({backend})"
    return None


def batch_sizes(config: mc.ModelConfig) -> list[int]:
    """The batch sizes the batcher can form, as buckets to measure: powers of two up to max_batch_size, the
    preferred sizes and max_batch_size itself. A request of n rows dispatches on the smallest bucket >= n, so
    buckets must be dense enough that no size falls far from a measured one (x2 apart at most)."""
    if config.max_batch_size <= 0:
        return [1]
    sizes = {config.max_batch_size}
    size = 1
    while size < config.max_batch_size:
        sizes.add(size)
        size *= 2
    if config.HasField("dynamic_batching"):
        sizes.update(s for s in config.dynamic_batching.preferred_batch_size if 0 < s <= config.max_batch_size)
    return sorted(sizes)


def cuda_graphs_problem(config: mc.ModelConfig) -> str | None:
    """Why this model is served eagerly rather than through CUDA graphs (gpu_graphs.py), or None to capture.
    A model can opt out with `parameters { key: "cuda_graphs" value { string_value: "false" } }`, e.g. when its
    forward has data-dependent control flow that one capture per batch size would freeze."""
    if config.max_batch_size <= 0:
        return "the model has no batch dimension (max_batch_size 0) to capture buckets of"
    if GRAPHS_KEY in config.parameters:
        text = config.parameters[GRAPHS_KEY].string_value.strip().lower()
        if text in ("false", "0", "no", "off"):
            return f"config parameter {GRAPHS_KEY!r} is {text!r}"
        if text not in ("true", "1", "yes", "on"):
            raise ValueError(f"config parameter {GRAPHS_KEY!r} must be true or false, got {text!r}")
    return None


def sequence_length(config: mc.ModelConfig) -> int:
    """Length substituted for variable (-1) dims when the runtime builds probe inputs at load."""
    if SEQUENCE_KEY not in config.parameters:
        return DEFAULT_SEQUENCE_LENGTH
    text = config.parameters[SEQUENCE_KEY].string_value
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"config parameter {SEQUENCE_KEY!r} must be a positive integer, got {text!r}")
    return int(text)


def gpu_index(config: mc.ModelConfig, device_count: int) -> int | None:
    """The GPU the model is placed on, honouring instance_group; None when the config asks for the CPU only.

    KIND_GPU groups list `gpus` (all GPUs when empty). The model is placed on the first listed GPU; further
    GPUs are not replicated onto (one copy per model version), which the report states.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    groups = list(config.instance_group)
    gpu_groups = [g for g in groups if g.kind == mc.ModelInstanceGroup.KIND_GPU]
    if groups and not gpu_groups and all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in groups):
        return None
    listed = [i for g in gpu_groups for i in g.gpus]
    for index in listed:
        if not 0 <= index < device_count:
            raise ValueError(f"instance_group lists GPU {index}, but this machine has {device_count} GPU(s)")
    return listed[0] if listed else 0


def bucket_for(rows: int, measured: list[int]) -> int:
    """The measured row count a call of `rows` rows dispatches on: the smallest >= rows, else the largest."""
    index = bisect.bisect_left(measured, rows)
    return measured[index] if index < len(measured) else measured[-1]
