"""The 2:4 storage format's contract (design.md): exact round trip, exactly 2 bits per group, +0.0 only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.sparsity import compress, decompress, is_2_4, mask_of
from tests.support.models import prune_2_4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_is_exact(dtype: torch.dtype) -> None:
    weight = prune_2_4(torch.randn(24, 64)).to(dtype)
    weight[0, :4] = 0.0  # a group whose kept slots are zeros
    values, mask = compress(weight)
    assert values.dtype == dtype and values.shape == (24, 32)
    assert mask.dtype == torch.uint8 and mask.shape == (24, 8)
    bits = np.unpackbits(mask.numpy(), axis=1, bitorder="little").reshape(24, 16, 4)
    assert (bits.sum(-1) == 2).all()
    assert torch.equal(decompress(values, mask), weight)


def test_negative_zero_is_stored_as_positive_zero() -> None:
    weight = torch.zeros(1, 8)
    weight[0, 1] = -0.0
    weight[0, 5] = 3.0
    values, _ = compress(weight)
    assert not torch.signbit(values).any()


def test_dense_weight_is_not_2_4() -> None:
    weight = torch.ones(4, 8)
    assert not is_2_4(weight)
    with pytest.raises(ValueError, match="not 2:4"):
        mask_of(weight)


def test_corrupt_mask_is_rejected() -> None:
    values, mask = compress(prune_2_4(torch.randn(4, 16)))
    mask = mask.clone()
    mask[0, 0] = 0xFF
    with pytest.raises(ValueError, match="corrupt 2:4 mask"):
        decompress(values, mask)


def test_explicit_mask_must_cover_nonzeros() -> None:
    weight = torch.zeros(2, 8)
    weight[:, 2] = 1.0
    wrong = torch.zeros(2, 8, dtype=torch.bool)
    wrong[:, [0, 1, 4, 5]] = True
    with pytest.raises(ValueError, match="outside its 2:4 mask"):
        compress(weight, wrong)
