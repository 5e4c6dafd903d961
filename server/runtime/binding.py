"""Bind config-named inputs to a program's call signature, and its results back to config-named outputs.

Rules (design.md): inputs the program takes by keyword are passed by name; the rest are passed positionally in
config order. A program returning a dict maps its keys onto output names; a tensor or tuple maps in order.
An absent optional input is filled with zeros shaped like a present input with the same config dims.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tritonclient.grpc import model_config_pb2 as mc

from server.types import CONFIG_TO_WIRE, DATATYPES


@dataclass(frozen=True)
class Binding:
    positional: tuple[str, ...]
    keyword: tuple[str, ...]
    outputs: tuple[str, ...]
    optional_fill: dict[str, tuple[str, torch.dtype]]  # optional input -> (input to copy the shape of, dtype)


def config_dtype(data_type: int) -> torch.dtype:
    """The torch dtype of a config tensor's `data_type`."""
    return DATATYPES[CONFIG_TO_WIRE[mc.DataType.Name(data_type)]][1]


def program_inputs(config: mc.ModelConfig) -> list[mc.ModelInput]:
    """The config inputs the program takes: all but TYPE_STRING (BYTES text is preprocessed into tensors first)."""
    return [t for t in config.input if t.data_type != mc.TYPE_STRING]


def make_binding(program: torch.export.ExportedProgram, config: mc.ModelConfig) -> Binding:
    """Work out once, at load, how a batch dict becomes call arguments."""
    in_spec = program.call_spec.in_spec
    args_spec, kwargs_spec = in_spec.children() if hasattr(in_spec, "children") else in_spec.children_specs
    keyword_names = tuple(kwargs_spec.context or ())
    tensors = program_inputs(config)
    names = [t.name for t in tensors]
    keyword = tuple(n for n in names if n in keyword_names)
    positional = tuple(n for n in names if n not in keyword_names)
    if len(positional) != args_spec.num_children:
        raise ValueError(
            f"program takes {args_spec.num_children} positional and {list(keyword_names)} keyword inputs; "
            f"config inputs {names} do not fit"
        )
    fill: dict[str, tuple[str, torch.dtype]] = {}
    for tensor in tensors:
        if tensor.optional:
            twin = next((t.name for t in tensors if not t.optional and list(t.dims) == list(tensor.dims)), None)
            if twin is None:
                raise ValueError(f"optional input {tensor.name!r} has no required input of the same dims to copy")
            fill[tensor.name] = (twin, config_dtype(tensor.data_type))
    return Binding(positional, keyword, tuple(t.name for t in config.output), fill)


def fill_optional(binding: Binding, batch: dict[str, torch.Tensor]) -> None:
    """Absent optional inputs become zeros shaped like their twin."""
    for name, (twin, dtype) in binding.optional_fill.items():
        if name not in batch:
            batch[name] = torch.zeros(batch[twin].shape, dtype=dtype, device=batch[twin].device)


def call(module: torch.nn.Module, binding: Binding, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run `module` on a batch and name its outputs."""
    fill_optional(binding, batch)
    args = [batch[n] for n in binding.positional]
    kwargs = {n: batch[n] for n in binding.keyword}
    result = module(*args, **kwargs)
    if isinstance(result, dict):
        missing = [n for n in binding.outputs if n not in result]
        if missing:
            raise ValueError(f"program did not return outputs {missing}; it returned {sorted(result)}")
        return {n: result[n] for n in binding.outputs}
    if isinstance(result, torch.Tensor):
        result = (result,)
    values = list(result)
    if len(values) < len(binding.outputs):
        raise ValueError(f"program returned {len(values)} outputs; config names {len(binding.outputs)}")
    return dict(zip(binding.outputs, values, strict=False))
