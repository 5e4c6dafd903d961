"""Wire datatypes <-> numpy/torch dtypes, and the transport-agnostic request/response types.

Transports decode wire bytes into `InferRequest` (numpy arrays that view the received buffers, no copies) and
encode `InferResponse` back; the dataplane, batcher and runtimes never see a protobuf or a JSON document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# KServe v2 datatype name -> (numpy dtype used on the wire, torch dtype used for compute).
# BF16 has no numpy dtype: it travels as raw little-endian uint16 words and is reinterpreted in torch.
DATATYPES: dict[str, tuple[np.dtype, torch.dtype]] = {
    "BOOL": (np.dtype(np.bool_), torch.bool),
    "UINT8": (np.dtype(np.uint8), torch.uint8),
    "UINT16": (np.dtype("<u2"), torch.uint16),
    "UINT32": (np.dtype("<u4"), torch.uint32),
    "UINT64": (np.dtype("<u8"), torch.uint64),
    "INT8": (np.dtype(np.int8), torch.int8),
    "INT16": (np.dtype("<i2"), torch.int16),
    "INT32": (np.dtype("<i4"), torch.int32),
    "INT64": (np.dtype("<i8"), torch.int64),
    "FP16": (np.dtype("<f2"), torch.float16),
    "FP32": (np.dtype("<f4"), torch.float32),
    "FP64": (np.dtype("<f8"), torch.float64),
    "BF16": (np.dtype("<u2"), torch.bfloat16),
}

# BYTES (strings) has no fixed element size: it travels framed (codec/bytes_tensor.py) and is held as a numpy
# object array of Python bytes, never as a torch tensor.
BYTES = "BYTES"
WIRE_DATATYPES: tuple[str, ...] = (*sorted(DATATYPES), BYTES)

# Triton model_config DataType enum names (TYPE_FP32 ...) <-> protocol names (FP32 ...).
CONFIG_TO_WIRE: dict[str, str] = {
    "TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_UINT16": "UINT16", "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64", "TYPE_INT8": "INT8", "TYPE_INT16": "INT16", "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64", "TYPE_FP16": "FP16", "TYPE_FP32": "FP32", "TYPE_FP64": "FP64",
    "TYPE_BF16": "BF16", "TYPE_STRING": "BYTES",
}
WIRE_TO_CONFIG: dict[str, str] = {wire: cfg for cfg, wire in CONFIG_TO_WIRE.items()}

TORCH_TO_WIRE: dict[torch.dtype, str] = {tdt: name for name, (_, tdt) in DATATYPES.items()}


def element_size(datatype: str) -> int:
    """Bytes per element on the wire for a fixed-size datatype (BYTES has none: its elements are framed)."""
    if datatype == BYTES:
        raise ValueError("BYTES elements have no fixed size; they are length-prefixed on the wire")
    return DATATYPES[datatype][0].itemsize


def to_torch(array: np.ndarray, datatype: str) -> torch.Tensor:
    """A tensor sharing memory with `array` (BF16 reinterpreted from its uint16 words)."""
    if not array.flags.writeable:
        array = array.copy()  # torch.from_numpy refuses read-only buffers; one copy, at the edge
    tensor = torch.from_numpy(array)
    if datatype == "BF16":
        tensor = tensor.view(torch.bfloat16)
    return tensor


def to_numpy(tensor: torch.Tensor | np.ndarray) -> tuple[np.ndarray, str]:
    """A contiguous CPU numpy view of `tensor` and its wire datatype name (a numpy object array is BYTES)."""
    if isinstance(tensor, np.ndarray):
        if tensor.dtype != np.dtype(object):
            raise TypeError(f"a numpy output must be a BYTES object array, got dtype {tensor.dtype}")
        return tensor, BYTES
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    tensor = tensor.contiguous()
    datatype = TORCH_TO_WIRE.get(tensor.dtype)
    if datatype is None:
        raise TypeError(f"output dtype {tensor.dtype} has no KServe v2 datatype")
    if datatype == "BF16":
        tensor = tensor.view(torch.uint16)
    return tensor.numpy(), datatype


@dataclass(slots=True)
class InferTensor:
    """One named tensor: data already in its wire dtype and shape."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for, with its per-output parameters (e.g. binary_data)."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request, identical whichever transport it arrived on."""

    model_name: str
    model_version: str
    inputs: list[InferTensor]
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferResponse:
    """Outputs of one request, ready to encode."""

    model_name: str
    model_version: str
    outputs: list[InferTensor]
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
