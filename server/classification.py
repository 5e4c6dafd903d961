"""Triton's classification extension: an output requested with `classification: k` comes back as its top k classes.

A client asks with the requested output's parameter `classification` (tritonclient's
`InferRequestedOutput(name, class_count=k)`: a JSON integer over HTTP, an `int64_param` over gRPC). The answer
replaces that output by a BYTES tensor of shape [batch, k] ([k] for a model without a batch dimension) whose
elements are `"<score>:<index>"`, or `"<score>:<index>:<label>"` when the output has a label for that index,
highest score first, as Triton's src/classification.cc writes them: the score with C++ `std::to_string`
(printf "%f" for floating types, the plain integer for integer types), k capped at the classes a row has.

Labels come from the config output's `label_filename`, a file in the model directory with one label per line
(repository.read_labels loads them with the model). Ties keep the lower index first (Triton's order for ties is
unspecified); NaN scores sort first, as the largest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.codec.bytes_tensor import OBJECT
from server.errors import invalid
from server.types import BYTES, InferTensor, RequestedOutput

PARAMETER = "classification"
UNSUPPORTED = frozenset({"BOOL", BYTES})  # what Triton refuses too ("class result not available ...")

Labels = Mapping[str, Sequence[bytes]]


def class_count(output: RequestedOutput) -> int:
    """The `classification` parameter of one requested output (0 when absent: no classification)."""
    value = output.parameters.get(PARAMETER, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(f"output {output.name!r}: parameter 'classification' must be a non-negative integer "
                      f"(the number of classes), got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ClassificationPlan:
    """Which outputs of one admitted request become top-k classes, and how many."""

    counts: Mapping[str, int]
    labels: Labels
    batched: bool

    def apply(self, outputs: list[InferTensor]) -> list[InferTensor]:
        return [self._classify(t) if t.name in self.counts else t for t in outputs]

    def _classify(self, tensor: InferTensor) -> InferTensor:
        if tensor.datatype in UNSUPPORTED:
            raise invalid(f"output {tensor.name!r}: classification is not available for its datatype "
                          f"{tensor.datatype}; request it without 'classification'")
        scores = _as_scores(tensor)
        rows = scores.reshape(scores.shape[0] if self.batched and scores.ndim else 1, -1)
        top = top_k(rows, self.counts[tensor.name], self.labels.get(tensor.name, ()))
        shape = top.shape if self.batched else top.shape[1:]
        parameters = {k: v for k, v in tensor.parameters.items() if k != PARAMETER}
        return InferTensor(tensor.name, BYTES, tuple(shape), top.reshape(shape), parameters)


def plan(wanted: Sequence[RequestedOutput], batched: bool, labels: Labels) -> ClassificationPlan | None:
    """The plan for a request's outputs, or None when none asks for classification (the usual case: free)."""
    counts = {out.name: count for out in wanted if (count := class_count(out))}
    return ClassificationPlan(counts, labels, batched) if counts else None


def _as_scores(tensor: InferTensor) -> np.ndarray:
    if tensor.datatype == "BF16":  # carried as its uint16 words: widen to float32 (the top 16 bits of one)
        return (np.asarray(tensor.data, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(tensor.data)


def top_k(rows: np.ndarray, k: int, labels: Sequence[bytes]) -> np.ndarray:
    """[rows, min(k, classes)] object array of `score:index[:label]` bytes, highest first, ties by index."""
    classes = rows.shape[1]
    k = min(k, classes)
    # stable descending order without negating (unsigned types): sort the reversed row, read it backwards
    order = (classes - 1) - np.argsort(rows[:, ::-1], axis=1, kind="stable")[:, ::-1][:, :k]
    integral = rows.dtype.kind in "iub"
    out = np.empty((rows.shape[0], k), dtype=OBJECT)
    for r in range(rows.shape[0]):
        for c, index in enumerate(order[r].tolist()):
            value = rows[r, index].item()
            text = f"{int(value)}:{index}" if integral else f"{_cpp_float(value)}:{index}"
            label = labels[index] if index < len(labels) else None
            out[r, c] = text.encode() if label is None else text.encode() + b":" + label
    return out


def _cpp_float(value: Any) -> str:
    """std::to_string of a float or double: printf("%f"), with C's spelling of infinities and NaN."""
    value = float(value)
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:f}"
