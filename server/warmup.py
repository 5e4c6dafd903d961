"""Triton's `model_warmup`: run the config's warmup samples on a freshly loaded runtime before it is READY.

Why: the first calls of a model pay one-off costs (allocator growth, oneDNN primitive creation, a trace, CUDA
kernels chosen per shape); warming up moves them to load time, where readiness and the load-time metric show
them, instead of onto the first clients. As in Triton, a sample is `batch_size` rows (no batch dim when the model
does not batch) of zero data, random data or the raw row-major bytes of `<model>/warmup/<input_data_file>`, run
`count` times (0 means once), straight on the runtime: warmup goes through no queue and is not counted in the
model's statistics. A failing sample fails the load, naming the sample and why.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tritonclient.grpc import model_config_pb2 as mc

from server.input_spec import wire_datatype
from server.runtime.base import Runtime
from server.types import DATATYPES, to_torch

WARMUP_DIR = "warmup"  # Triton: input_data_file names a file in this sub-directory of the model directory
RANDOM_INT_BOUND = 2  # random integers are 0 or 1: index-like inputs (token ids, masks) stay in range


class WarmupError(ValueError):
    """A warmup sample is malformed or the model failed on it; the load fails with this message."""


def run_warmup(config: mc.ModelConfig, runtime: Runtime, model_dir: Path) -> int:
    """Run every warmup sample of `config` on `runtime`; returns the number of executions."""
    executions = 0
    generator = torch.Generator().manual_seed(0)
    for index, sample in enumerate(config.model_warmup):
        label = f"{config.name}: model_warmup {sample.name or index!r}"
        batch = warmup_inputs(config, sample, model_dir, generator, label)
        for _ in range(max(1, sample.count)):
            try:
                runtime.infer(batch)
            except Exception as exc:  # the model itself failed on the sample
                raise WarmupError(f"{label} failed: {type(exc).__name__}: {exc}") from exc
            executions += 1
    return executions


def warmup_inputs(config: mc.ModelConfig, sample: mc.ModelWarmup, model_dir: Path, generator: torch.Generator,
                  label: str) -> dict[str, torch.Tensor]:
    """The tensors of one sample, checked against the config's inputs."""
    declared = {t.name: t for t in config.input}
    unknown = sorted(set(sample.inputs) - declared.keys())
    if unknown:
        raise WarmupError(f"{label}: inputs {unknown} are not inputs of the model (inputs: {sorted(declared)})")
    missing = sorted(n for n, t in declared.items() if not t.optional and n not in sample.inputs)
    if missing:
        raise WarmupError(f"{label}: required inputs {missing} have no warmup data")
    batched = config.max_batch_size > 0
    if batched and not 1 <= sample.batch_size <= config.max_batch_size:
        raise WarmupError(f"{label}: batch_size {sample.batch_size} must be in 1..max_batch_size "
                          f"({config.max_batch_size})")
    lead = [sample.batch_size] if batched else []
    tensors: dict[str, torch.Tensor] = {}
    for name, spec in sample.inputs.items():
        where = f"{label} input {name!r}"
        if spec.data_type != declared[name].data_type:
            raise WarmupError(f"{where}: data_type {mc.DataType.Name(spec.data_type)} differs from the model's "
                              f"{mc.DataType.Name(declared[name].data_type)}")
        if any(d < 1 for d in spec.dims):
            raise WarmupError(f"{where}: dims {list(spec.dims)} must all be positive (a warmup has fixed shapes)")
        datatype = wire_datatype(spec.data_type)
        if datatype not in DATATYPES:
            raise WarmupError(f"{where}: datatype {datatype} cannot be warmed up")
        tensors[name] = _data(spec, datatype, lead + list(spec.dims), model_dir, generator, where)
    return tensors


def _data(spec: mc.ModelWarmup.Input, datatype: str, shape: list[int], model_dir: Path,
          generator: torch.Generator, where: str) -> torch.Tensor:
    dtype = DATATYPES[datatype][1]
    kind = spec.WhichOneof("input_data_type")
    if kind == "zero_data":
        return torch.zeros(shape, dtype=dtype)
    if kind == "random_data":
        if dtype.is_floating_point:
            return torch.rand(shape, generator=generator).to(dtype)
        return torch.randint(0, RANDOM_INT_BOUND, shape, generator=generator).to(dtype)
    if kind == "input_data_file":
        return _file_data(spec.input_data_file, datatype, shape, model_dir, where)
    raise WarmupError(f"{where}: give one of zero_data, random_data or input_data_file")


def _file_data(file_name: str, datatype: str, shape: list[int], model_dir: Path, where: str) -> torch.Tensor:
    folder = (model_dir / WARMUP_DIR).resolve()
    path = (folder / file_name).resolve()
    if not str(path).startswith(str(folder) + os.sep):
        raise WarmupError(f"{where}: input_data_file {file_name!r} must name a file inside the model's "
                          f"{WARMUP_DIR}/ directory")
    if not path.is_file():
        raise WarmupError(f"{where}: input_data_file {WARMUP_DIR}/{file_name} does not exist")
    raw = path.read_bytes()
    wire = DATATYPES[datatype][0]
    expected = int(np.prod(shape)) * wire.itemsize
    if len(raw) != expected:
        raise WarmupError(f"{where}: {WARMUP_DIR}/{file_name} holds {len(raw)} bytes; shape {shape} of {datatype} "
                          f"needs {expected}")
    return to_torch(np.frombuffer(raw, dtype=wire).reshape(shape), datatype)
