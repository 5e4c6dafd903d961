"""Pure batch assembly for padded sequence models: pad every request to the batch's longest, narrow the outputs back.

Why padding leaves each answer unchanged: a padded position has attention mask 0, so the model's additive mask
drives its attention logit to the dtype's minimum (or -inf) and its softmax weight underflows to exactly 0; no real
token attends to it, and pooling weights it by its mask, 0. What padding does change is GEMM shapes (more rows,
longer reductions over keys whose weights are exact zeros), hence fp32 rounding order: answers agree to rounding,
not bit for bit. Sequence outputs are narrowed to each request's own length, so a client sees its own shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from server.batching.merge import BatchShapeError, merge, split
from server.batching.ragged import PaddingSpec


def merge_padded(inputs: Sequence[dict[str, torch.Tensor]], lengths: Sequence[int],
                 spec: PaddingSpec) -> tuple[dict[str, torch.Tensor], int]:
    """One batch from requests of (possibly) different sequence lengths; returns it with its padded length.

    Requests of equal length are concatenated exactly as `merge` does (a single request passes through untouched).
    """
    longest = max(lengths)
    if all(n == longest for n in lengths):
        return merge(inputs), longest
    first = inputs[0]
    for other in inputs[1:]:
        if other.keys() != first.keys():
            raise ValueError(f"cannot merge requests with inputs {sorted(first)} and {sorted(other)}")
    batch: dict[str, torch.Tensor] = {}
    for name, head in first.items():
        parts = [request[name] for request in inputs]
        if name not in spec.sequence_inputs:
            batch[name] = torch.cat(parts, dim=0)
            continue
        rows = sum(int(p.shape[0]) for p in parts)
        out = torch.full((rows, longest, *head.shape[2:]), spec.pad_values.get(name, 0), dtype=head.dtype)
        start = 0
        for part in parts:
            out[start:start + part.shape[0], :part.shape[1]] = part
            start += int(part.shape[0])
        batch[name] = out
    return batch, longest


def split_padded(outputs: dict[str, torch.Tensor], rows: Sequence[int], lengths: Sequence[int], longest: int,
                 spec: PaddingSpec) -> list[dict[str, torch.Tensor]]:
    """Per-request outputs; a sequence output is narrowed to the request's own length along dim 1.

    A narrowed view is not contiguous, so only requests shorter than the batch pay one copy per sequence output;
    the longest requests, and every sentence-level output, stay views.
    """
    for name in spec.sequence_outputs & outputs.keys():
        tensor = outputs[name]
        if tensor.dim() < 2 or tensor.shape[1] != longest:
            raise BatchShapeError(f"output {name!r} has shape {tuple(tensor.shape)}, expected the padded sequence "
                                  f"length {longest} along dim 1")
    parts = split(outputs, rows)
    for part, length in zip(parts, lengths, strict=True):
        if length == longest:
            continue
        for name in spec.sequence_outputs & part.keys():
            part[name] = part[name].narrow(1, 0, length).contiguous()
    return parts


def padded_tokens(lengths: Sequence[int], rows: Sequence[int], longest: int) -> tuple[int, int]:
    """(padding tokens, total tokens) of one executed batch: what the padding metric counts."""
    total = longest * sum(rows)
    real = sum(n * r for n, r in zip(lengths, rows, strict=True))
    return total - real, total
