"""The 2:4 storage format's contract (design.md): exact round trip, exactly 2 bits per group, +0.0 only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from server.artifacts import load_weights, save_weights
from server.sparsity import compress, decompress, is_2_4, mask_of
from server.sparsity.quantize import QMAX, STORAGE_DTYPE, dequantize_rows, max_abs_error, quantize
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


# -- quantized 2:4 (--quantize fp8|int8): value = stored x scale[row] -------------------------------------------

FP32_SLACK = 2.0**-22  # relative rounding of the float32 divide by the scale and the multiply back


@pytest.mark.parametrize("scheme", ["fp8", "int8"])
def test_quantize_round_trip_is_within_half_a_step(scheme: str) -> None:
    torch.manual_seed(0)
    values = torch.randn(32, 48) * torch.logspace(-3, 2, 32)[:, None]  # rows of very different ranges
    values[3] = 0.0  # an all-zero row
    stored, scale = quantize(values, scheme)
    assert stored.dtype == STORAGE_DTYPE[scheme] and stored.shape == values.shape
    assert scale.dtype == torch.float32 and scale.shape == (32,)
    assert scale[3] == 1.0 and bool((stored[3].float() == 0).all())
    restored = dequantize_rows(stored, scale)
    error = (restored - values).abs()
    assert bool((error <= max_abs_error(values, scale, scheme) + FP32_SLACK * values.abs()).all())
    # the row's largest entry sits at the top code: full range used, nothing saturates
    top = stored.float().abs().amax(dim=1)
    assert torch.equal(top[torch.arange(32) != 3], torch.full((31,), QMAX[scheme]))


def test_fp8_relative_error_is_at_most_2_pow_minus_4_for_normals() -> None:
    values = torch.linspace(0.5, 448.0, 4096)[None, :]  # scale 1 row: all normals of e4m3
    stored, scale = quantize(values, "fp8")
    assert scale.item() == 1.0
    relative = (dequantize_rows(stored, scale) - values).abs() / values
    assert float(relative.max()) <= 2.0**-4


def test_int8_error_is_at_most_half_of_row_absmax_over_127() -> None:
    values = torch.tensor([[-2.54, 0.011, 1.0, 2.0]])
    stored, scale = quantize(values, "int8")
    assert scale.item() == pytest.approx(2.54 / 127)
    assert stored.tolist() == [[-127, 1, 50, 100]]
    assert float((dequantize_rows(stored, scale) - values).abs().max()) <= 0.5 * 2.54 / 127 * (1 + FP32_SLACK)


def test_fp8_never_stores_negative_zero() -> None:
    values = torch.tensor([[448.0, -1e-9, 0.0, -0.0]])
    stored, _ = quantize(values, "fp8")
    assert not torch.signbit(stored.float()).any()


def quantized_file(tmp_path: Path, scheme: str) -> tuple[Path, torch.Tensor]:
    weight = prune_2_4(torch.randn(16, 64))
    path = tmp_path / "w.safetensors"
    save_weights({"fc.weight": weight, "fc.bias": torch.randn(16)}, {"fc.weight"}, path, scheme)
    return path, weight


@pytest.mark.parametrize("scheme", ["fp8", "int8"])
def test_quantized_weights_load_as_the_dequantized_dense_weight(tmp_path: Path, scheme: str) -> None:
    path, weight = quantized_file(tmp_path, scheme)
    raw = load_file(str(path))
    assert raw["fc.weight.values"].dtype == STORAGE_DTYPE[scheme] and raw["fc.weight.values"].shape == (16, 32)
    assert raw["fc.weight.scale"].dtype == torch.float32 and raw["fc.weight.scale"].shape == (16,)
    assert raw["fc.weight.mask"].dtype == torch.uint8 and raw["fc.weight.mask"].shape == (16, 8)
    loaded = load_weights(path)
    dense = loaded.tensors["fc.weight"]
    expected = decompress(dequantize_rows(raw["fc.weight.values"], raw["fc.weight.scale"]), raw["fc.weight.mask"])
    assert dense.dtype == torch.float32 and torch.equal(dense, expected)
    assert torch.equal(dense != 0, (weight != 0) & (dense != 0))  # nothing appears outside the mask
    layer = loaded.quantized["fc.weight"]
    assert layer.scheme == scheme and torch.equal(layer.scale, raw["fc.weight.scale"])
    assert loaded.sparse == {"fc.weight"} and "fc.bias" not in loaded.quantized
    assert loaded.layer_stored_bytes["fc.weight"] == 16 * 32 + 16 * 8 + 16 * 4


def rewrite(path: Path, **changes: torch.Tensor | None) -> None:
    raw = load_file(str(path))
    for name, tensor in changes.items():
        key = "fc.weight." + name
        if tensor is None:
            raw.pop(key)
        else:
            raw[key] = tensor
    save_file(raw, str(path))


@pytest.mark.parametrize(("scheme", "change", "message"), [
    ("fp8", {"scale": None}, r"fc\.weight\.values is torch\.float8_e4m3fn \(quantized\) but fc\.weight\.scale is "
                             r"missing"),
    ("int8", {"scale": torch.ones(16, dtype=torch.float64)}, r"fc\.weight\.scale has dtype torch\.float64"),
    ("int8", {"scale": torch.ones(15)}, r"fc\.weight\.scale has shape \(15,\); it needs one entry per row"),
    ("fp8", {"scale": torch.zeros(16)}, r"fc\.weight\.scale has a non-finite or non-positive entry"),
    ("int8", {"values": torch.zeros(16, 32, dtype=torch.int16)}, r"fc\.weight\.values has dtype torch\.int16"),
    ("none", {"scale": torch.ones(16)}, r"fc\.weight\.scale is present but fc\.weight\.values is torch\.float32"),
    ("fp8", {"values": torch.zeros(16, 30).to(torch.float8_e4m3fn)}, r"weights: fc\.weight: mask shape"),
])
def test_load_refuses_a_broken_quantized_layer(tmp_path: Path, scheme: str, change: dict, message: str) -> None:
    path, _ = quantized_file(tmp_path, scheme)
    rewrite(path, **change)
    with pytest.raises(ValueError, match=message):
        load_weights(path)


def test_scale_without_values_is_refused(tmp_path: Path) -> None:
    path, _ = quantized_file(tmp_path, "fp8")
    raw = load_file(str(path))
    raw["other.scale"] = torch.ones(4)
    save_file(raw, str(path))
    with pytest.raises(ValueError, match=r"scale tensors without values: \['other\.scale'\]"):
        load_weights(path)


def test_unknown_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown quantization 'fp4'"):
        save_weights({"w": prune_2_4(torch.randn(8, 8))}, {"w"}, tmp_path / "w.safetensors", "fp4")


@pytest.mark.parametrize(("cols", "ratio"), [(1024, 0.3125 + 2 / 1024), (4096, 0.3125 + 2 / 4096)])
def test_fp8_2_4_bytes_against_fp16_dense(tmp_path: Path, cols: int, ratio: float) -> None:
    """values 1 byte x cols/2 + mask cols/8 + scale 4 per row, against 2 bytes x cols: 0.3125 + 2/cols."""
    path = tmp_path / "w.safetensors"
    save_weights({"w": prune_2_4(torch.randn(64, cols))}, {"w"}, path, "fp8")
    stored = load_weights(path).layer_stored_bytes["w"]
    assert stored / (64 * cols * 2) == pytest.approx(ratio, rel=1e-12) and stored / (64 * cols * 2) <= 0.32
