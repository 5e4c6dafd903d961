"""Per-row quantization of a 2:4 layer's kept values (the `--quantize fp8|int8` storage format), as pure functions.

Format (design.md): `<name>.values` float8_e4m3fn or int8 [rows, cols/2], `<name>.mask` as for float values, and
`<name>.scale` float32 [rows] with value = stored * scale[row]. The scale is the row's absolute maximum over the
largest finite code (448 for e4m3, 127 for int8), so the row's largest entry is stored at full range and nothing
saturates. Rounding is round-to-nearest-even in both cases (torch's float8 cast and `torch.round`), so the error of
a stored entry is at most half a quantization step: for e4m3 normals |q - v| <= 2^-4 |v| (3 mantissa bits), and for
e4m3 subnormals and int8 a fixed step of scale x 2^-9 and scale x 1 respectively.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NONE = "none"
SCHEMES = ("fp8", "int8")
STORAGE_DTYPE: dict[str, torch.dtype] = {"fp8": torch.float8_e4m3fn, "int8": torch.int8}
QMAX: dict[str, float] = {"fp8": 448.0, "int8": 127.0}  # largest finite code of each storage dtype
SCALE_DTYPE = torch.float32
SCHEME_OF_DTYPE = {dtype: scheme for scheme, dtype in STORAGE_DTYPE.items()}


def check_scheme(scheme: str) -> str:
    if scheme != NONE and scheme not in SCHEMES:
        raise ValueError(f"unknown quantization {scheme!r}; choose one of {NONE}, {', '.join(SCHEMES)}")
    return scheme


def row_scales(values: torch.Tensor, scheme: str) -> torch.Tensor:
    """float32 [rows]: each row's absmax / QMAX; an all-zero row gets scale 1 (any positive scale stores zeros
    exactly, and a zero scale would make the format's value = stored x scale lose the row for good)."""
    absmax = values.detach().float().abs().amax(dim=1)
    scale = absmax / QMAX[scheme]
    return torch.where(absmax > 0, scale, torch.ones_like(scale)).to(SCALE_DTYPE)


def quantize_rows(values: torch.Tensor, scale: torch.Tensor, scheme: str) -> torch.Tensor:
    """values [rows, n] -> stored [rows, n] in the scheme's dtype, round to nearest, +0.0 never -0.0."""
    qmax = QMAX[scheme]
    scaled = (values.detach().float() / scale.float()[:, None]).clamp(-qmax, qmax)
    if scheme == "int8":
        return torch.round(scaled).to(torch.int8)
    # a tiny negative value rounds to -0.0 in e4m3; -0.0 + 0.0 == +0.0 in IEEE arithmetic
    return (scaled.to(torch.float8_e4m3fn).float() + 0.0).to(torch.float8_e4m3fn)


def dequantize_rows(stored: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The values the format means: float32 stored x scale[row]."""
    return stored.float() * scale.float()[:, None]


def quantize(values: torch.Tensor, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(stored, scale) of a 2-D tensor of kept values."""
    if values.dim() != 2:
        raise ValueError(f"quantized values must be 2-D, got shape {tuple(values.shape)}")
    scale = row_scales(values, scheme)
    return quantize_rows(values, scale, scheme), scale


def max_abs_error(values: torch.Tensor, scale: torch.Tensor, scheme: str) -> torch.Tensor:
    """Elementwise bound on |dequantize(quantize(v)) - v| for the stored format: half a step of the code grid
    (float32 [rows, n]). e4m3: a normal |v|/scale >= 2^-6 has spacing 2^(e-3), so half a step is <= 2^-4 |v|;
    subnormals are spaced 2^-9. int8: a uniform step of one code. Used by tests and the bench's sanity checks."""
    scale = scale.float()[:, None]
    if scheme == "int8":
        return 0.5 * scale.expand_as(values).clone()
    magnitude = values.detach().float().abs()
    return torch.maximum(magnitude * 2.0**-4, scale * 2.0**-10)


@dataclass
class QuantizedLayer:
    """A quantized 2:4 layer as stored: what the GPU kernels take directly (no re-quantization at load)."""

    scheme: str
    values: torch.Tensor  # float8_e4m3fn | int8 [rows, cols/2]
    mask: torch.Tensor  # uint8 [rows, cols/8]
    scale: torch.Tensor  # float32 [rows]


def validate_stored(name: str, values: torch.Tensor, scale: torch.Tensor | None) -> str:
    """The scheme of a stored `.values`/`.scale` pair, or a ValueError naming the tensor that breaks the format:
    quantized values need a float32 scale of one entry per row; float values must not carry a scale."""
    scheme = SCHEME_OF_DTYPE.get(values.dtype)
    if scheme is None:
        if not values.dtype.is_floating_point:
            raise ValueError(f"weights: {name}.values has dtype {values.dtype}; 2:4 values are a float dtype, "
                             f"or float8_e4m3fn / int8 with a {name}.scale")
        if scale is not None:
            raise ValueError(f"weights: {name}.scale is present but {name}.values is {values.dtype}, not a "
                             f"quantized dtype (float8_e4m3fn or int8)")
        return NONE
    if scale is None:
        raise ValueError(f"weights: {name}.values is {values.dtype} (quantized) but {name}.scale is missing")
    if scale.dtype != SCALE_DTYPE:
        raise ValueError(f"weights: {name}.scale has dtype {scale.dtype}; the format stores it as float32")
    rows = int(values.shape[0]) if values.dim() == 2 else -1
    if scale.dim() != 1 or int(scale.shape[0]) != rows:
        raise ValueError(f"weights: {name}.scale has shape {tuple(scale.shape)}; it needs one entry per row of "
                         f"{name}.values {tuple(values.shape)}")
    if not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
        raise ValueError(f"weights: {name}.scale has a non-finite or non-positive entry")
    return scheme


def quantization_report(scheme: str, originals: dict[str, torch.Tensor],
                        stored: dict[str, QuantizedLayer]) -> dict[str, object] | None:
    """sparsity.json's `quantization` section (None when not quantized): the scheme, and per layer the largest
    weight error relative to the row's absmax, with the bytes of the layer against an fp16 dense copy."""
    if scheme == NONE:
        return None
    from server.sparsity.compress import decompress

    layers = {}
    for name in sorted(stored):
        layer = stored[name]
        original = originals[name].detach().float()
        restored = decompress(dequantize_rows(layer.values, layer.scale), layer.mask)
        absmax = original.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        rows, cols = original.shape
        stored_bytes = sum(t.numel() * t.element_size() for t in (layer.values, layer.mask, layer.scale))
        layers[name] = {"max_error_over_row_absmax": round(float(((restored - original).abs() / absmax).max()), 6),
                        "stored_bytes": stored_bytes,
                        "ratio_to_fp16_dense": round(stored_bytes / (rows * cols * 2), 6)}
    return {"scheme": scheme, "storage_dtype": str(STORAGE_DTYPE[scheme]).removeprefix("torch."),
            "qmax": QMAX[scheme], "scale": "float32 per row (row absmax / qmax); value = stored x scale[row]",
            "layers": layers}
