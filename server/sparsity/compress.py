"""Compress a 2:4 weight into the repository's portable form and back, exactly.

Format (design.md): `values` [rows, cols/2] in the weight's dtype holds the kept entries row-major in mask order;
`mask` uint8 [rows, cols/8] is `numpy.packbits(kept, bitorder="little")` with exactly 2 bits set in each group of
4 columns. The format is kernel-independent on purpose: a kernel's packed layout is never persisted.
"""

from __future__ import annotations

import numpy as np
import torch

GROUP = 4
KEPT = 2


def _check_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"2:4 weights must be 2-D, got shape {tuple(shape)}")
    rows, cols = int(shape[0]), int(shape[1])
    if cols % 8:
        raise ValueError(f"2:4 storage needs the input dimension to be a multiple of 8, got {cols}")
    return rows, cols


def is_2_4(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive entries along a row has at most 2 nonzeros."""
    if weight.dim() != 2 or weight.shape[1] % GROUP:
        return False
    nonzero = (weight != 0).reshape(weight.shape[0], -1, GROUP).sum(dim=-1)
    return bool((nonzero <= KEPT).all())


def mask_of(weight: torch.Tensor) -> torch.Tensor:
    """The kept-slot mask of a 2:4 weight: its nonzeros, topped up to exactly 2 per group.

    A pruning method that keeps a weight which happens to be 0 leaves fewer than 2 nonzeros in a group; the
    lowest-index zero slots are then marked kept so the mask still has exactly 2 bits per group.
    """
    if not is_2_4(weight):
        raise ValueError("weight is not 2:4 sparse (a group of 4 has more than 2 nonzeros)")
    rows, cols = weight.shape
    groups = (weight != 0).reshape(rows, cols // GROUP, GROUP)
    missing = KEPT - groups.sum(dim=-1, keepdim=True)
    # Rank the zero slots of each group by position; take the first `missing` of them.
    zero_rank = torch.cumsum((~groups).to(torch.int8), dim=-1)
    topped = groups | ((~groups) & (zero_rank <= missing))
    return topped.reshape(rows, cols)


def pack_mask(mask: torch.Tensor) -> np.ndarray:
    """Bool [rows, cols] -> uint8 [rows, cols/8], little bit order."""
    return np.packbits(mask.cpu().numpy().astype(np.bool_), axis=1, bitorder="little")


def unpack_mask(packed: np.ndarray | torch.Tensor, cols: int | None = None) -> torch.Tensor:
    """uint8 [rows, cols/8] -> bool [rows, cols]."""
    array = packed.cpu().numpy() if isinstance(packed, torch.Tensor) else np.asarray(packed)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise ValueError(f"a 2:4 mask must be a 2-D uint8 array, got {array.dtype} with {array.ndim} dims")
    bits = np.unpackbits(array, axis=1, bitorder="little", count=cols)
    return torch.from_numpy(bits.astype(np.bool_))


def compress(weight: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, packed mask) of a 2:4 weight; `mask` defaults to `mask_of(weight)`."""
    rows, cols = _check_shape(weight.shape)
    weight = weight.detach().cpu()
    if mask is None:
        mask = mask_of(weight)
    mask = mask.to(torch.bool).cpu()
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from weight shape {tuple(weight.shape)}")
    per_group = mask.reshape(rows, cols // GROUP, GROUP).sum(dim=-1)
    if not bool((per_group == KEPT).all()):
        raise ValueError("a 2:4 mask must keep exactly 2 slots in every group of 4")
    if bool((weight[~mask] != 0).any()):
        raise ValueError("weight has nonzeros outside its 2:4 mask")
    values = weight[mask].reshape(rows, cols // 2) + 0.0  # IEEE: -0.0 + 0.0 == +0.0, so no -0.0 is stored
    values = values.to(weight.dtype).contiguous()
    return values, torch.from_numpy(pack_mask(mask))


def decompress(values: torch.Tensor, packed_mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The dense weight, bit-for-bit equal to the one `compress` was given (up to the sign of zeros)."""
    if values.dim() != 2:
        raise ValueError(f"2:4 values must be 2-D, got shape {tuple(values.shape)}")
    rows, half = values.shape
    cols = half * 2
    if tuple(packed_mask.shape) != (rows, cols // 8):  # the format's [rows, cols/8]: no spare or missing bytes
        raise ValueError(f"mask shape {tuple(packed_mask.shape)} does not match values shape {tuple(values.shape)} "
                         f"(expected {(rows, cols // 8)})")
    mask = unpack_mask(packed_mask, cols)
    if mask.shape != (rows, cols):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match values shape {tuple(values.shape)}")
    per_group = mask.reshape(rows, cols // GROUP, GROUP).sum(dim=-1)
    if not bool((per_group == KEPT).all()):
        raise ValueError("corrupt 2:4 mask: a group of 4 does not keep exactly 2 slots")
    dense = torch.zeros((rows, cols), dtype=values.dtype)
    dense[mask] = values.reshape(-1)
    return dense
