"""Pure batch assembly: concatenate requests along dim 0, and split a batch's outputs back per request.

Kept apart from the scheduler so the only code that touches tensor layout is small, synchronous and tested on its
own. Merging costs exactly one copy per input (`torch.cat`); splitting costs none (`narrow` views of a contiguous
output are themselves contiguous, which is what the codec needs to hand the bytes to the wire).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class BatchShapeError(ValueError):
    """The runtime returned outputs whose leading dimension does not match the batch it was given."""


def merge(inputs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch from several requests' inputs (all with the same names, dtypes and non-batch shapes).

    A single request passes through untouched: the common unloaded case must not pay for a copy.
    """
    if not inputs:
        raise ValueError("merge needs at least one request")
    if len(inputs) == 1:
        return dict(inputs[0])
    first = inputs[0]
    for other in inputs[1:]:
        if other.keys() != first.keys():
            raise ValueError(f"cannot merge requests with inputs {sorted(first)} and {sorted(other)}")
    return {name: torch.cat([request[name] for request in inputs], dim=0) for name in first}


def split(outputs: dict[str, torch.Tensor], rows: Sequence[int]) -> list[dict[str, torch.Tensor]]:
    """Per-request outputs: request i gets rows [sum(rows[:i]), sum(rows[:i+1])) of every output.

    Outputs are made contiguous once (a no-op for ordinary model outputs), then sliced into views, so no bytes
    are copied per request.
    """
    total = sum(rows)
    whole = {name: t if t.is_contiguous() else t.contiguous() for name, t in outputs.items()}
    for name, tensor in whole.items():
        if tensor.dim() == 0 or tensor.shape[0] != total:
            shape = tuple(tensor.shape)
            raise BatchShapeError(f"output {name!r} has shape {shape}, expected {total} rows along dim 0")
    if len(rows) == 1:
        return [whole]
    parts: list[dict[str, torch.Tensor]] = []
    start = 0
    for n in rows:
        parts.append({name: tensor.narrow(0, start, n) for name, tensor in whole.items()})
        start += n
    return parts
