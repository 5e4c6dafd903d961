"""What a loaded GPU model reports (sparsity endpoint, `twofour inspect`, metrics): bytes on the device by kind,
what the same weights would take dense, and the load's decisions passed in by the runtime.

Bytes are counted from the tensors actually held after the per-layer choice and the whole-model check, so a
dispatch-mode layer that keeps both weights is counted twice, which is the memory it really costs.
"""

from __future__ import annotations

from typing import Any

import torch

from server.runtime.base import RuntimeDescription
from server.runtime.gpu_layers import SwitchLinear, tensor_bytes


def describe_gpu_model(module: torch.nn.Module, switches: dict[str, SwitchLinear], weights: Any,
                       device: torch.device, dtype: torch.dtype, details: dict[str, Any]) -> RuntimeDescription:
    """`weights`: the repository's loaded weights (tensors, sparse names, stored bytes); `details`: the runtime's
    own fields (backend, mode, decision table, ...), completed here with bytes and GPU memory."""
    dense = sum(tensor_bytes(t) for t in module.state_dict().values())
    sparse = 0
    pruned_dense_equivalent = 0
    for switch in switches.values():
        for tensor in (switch.weight, switch.bias):
            dense += tensor_bytes(tensor) if tensor is not None else 0
        kernel_weight = getattr(switch.sparse, "weight", None)
        if isinstance(kernel_weight, torch.Tensor):
            sparse += tensor_bytes(kernel_weight)
            pruned_dense_equivalent += switch.out_features * switch.in_features * dtype.itemsize
    equivalent = sum(t.numel() * (dtype.itemsize if t.is_floating_point() else t.element_size())
                     for t in weights.tensors.values())
    name = str(dtype).removeprefix("torch.")
    details = {"compute_dtype": name, **details, "stored_bytes": weights.stored_bytes,
               "sparse_weight_bytes": sparse, "sparse_weight_dense_equivalent_bytes": pruned_dense_equivalent,
               "sparse_weight_ratio": round(sparse / pruned_dense_equivalent, 4) if pruned_dense_equivalent else None}
    if device.type == "cuda":
        index = device.index or 0
        details.update(gpu=torch.cuda.get_device_name(index), gpu_index=index,
                       gpu_memory_allocated_bytes=torch.cuda.memory_allocated(index),
                       gpu_memory_reserved_bytes=torch.cuda.memory_reserved(index))
    return RuntimeDescription(
        device=str(device), dtype=name, sparse_layers=sorted(weights.sparse),
        dense_layers=sorted(n for n in weights.tensors if n not in weights.sparse and n.endswith("weight")),
        bytes_by_kind={"dense": dense, "sparse_2_4": sparse}, dense_equivalent_bytes=equivalent, details=details)
