"""FP8 / INT8 linear kernels for the GPU runtime: FP8 2:4 and INT8 2:4 through cuSPARSELt, FP8 dense through
`torch._scaled_mm` (the dense competitor). torch-only, so bench/gpu.py imports it on a bare GPU box.

Numerics, as the repository's format means them (sparsity/quantize.py): weight = stored x w_scale[row]. The
activation gets a dynamic per-token scale, s_x[t] = absmax(x[t]) / qmax, computed on the device, so a call
never reads a value back to the host and the whole model captures into a CUDA graph. Then
    y[t, o] = s_x[t] * w_scale[o] * sum_i xq[t, i] * wq[o, i] + bias[o].
cuSPARSELt applies w_scale in its epilogue as a per-output-channel alpha *vector* (`_cslt_sparse_mm(alpha=)` with
more than one element; a one-element alpha is read with `.item()` in torch's C++ -- a host sync -- so it is
never passed), and writes the result already transposed to row-major [tokens, out] (`transpose_result=True`: no
copy in the next op). The per-token s_x cannot be an epilogue factor of the [out, tokens] product that cuSPARSELt
computes, so it and the bias are one fused elementwise op after it (`torch.addcmul`): the bias is added after
s_x, as the formula needs, which the kernel's bias epilogue (added before any later scaling) could not do.
`torch._scaled_mm` takes both scales (rowwise: [tokens, 1] and [1, out]) and the bias itself.

The matmul and compress functions are parameters so the glue (scales, transposes, bias, output dtype) is tested
on CPU against an emulation that follows the documented semantics of the torch ops.
"""

from __future__ import annotations

from typing import Callable

import torch

from server.runtime.gpu_cusparselt import (
    DEFAULT_ALGORITHM,
    PROCESS_ALGORITHMS,
    ROW_MULTIPLE,
    Algorithm,
    AlgorithmCache,
    algorithm_kwargs,
    pad_rows,
)
from server.sparsity import decompress
from server.sparsity.quantize import QMAX, STORAGE_DTYPE, QuantizedLayer, dequantize_rows

TINY = 1e-12  # floor of an activation scale: an all-zero token quantizes to zeros instead of 0/0

CsltMm = Callable[..., torch.Tensor]  # torch._cslt_sparse_mm's signature
ScaledMm = Callable[..., torch.Tensor]  # torch._scaled_mm's signature


def per_token_scale(x: torch.Tensor, scheme: str) -> torch.Tensor:
    """float32 [tokens, 1]: each row's absmax / qmax, on x's device (no host sync)."""
    return (x.detach().abs().amax(dim=-1, keepdim=True).float() / QMAX[scheme]).clamp_min(TINY)


def quantize_activation(x: torch.Tensor, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(xq [tokens, in] in the scheme's dtype, s_x float32 [tokens, 1]); round to nearest, saturating."""
    scale = per_token_scale(x, scheme)
    scaled = (x.float() / scale).clamp(-QMAX[scheme], QMAX[scheme])
    if scheme == "int8":
        return torch.round(scaled).to(torch.int8), scale
    return scaled.to(torch.float8_e4m3fn), scale


def dense_quantized_weight(layer: QuantizedLayer) -> torch.Tensor:
    """The stored codes decompressed to the dense [out, in] layout in their own dtype (zeros outside the mask):
    what cuSPARSELt compresses and what _scaled_mm multiplies. Exact: every code is representable."""
    codes = decompress(layer.values.float(), layer.mask)
    return codes.to(STORAGE_DTYPE[layer.scheme])


def scale_and_bias(out: torch.Tensor, token_scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """out * s_x (+ bias), one elementwise kernel, in out's dtype."""
    factor = token_scale.to(out.dtype)
    return out * factor if bias is None else torch.addcmul(bias, out, factor)


class QuantSparseKernel:
    """FP8 (sm_90) or INT8 (sm_8x/9x) 2:4 through cuSPARSELt: [tokens, in] fp16/bf16 -> [tokens, out] same dtype.
    Alg ids per row bucket come from the per-process search cache (`prepare(rows, x)` at load)."""

    def __init__(self, layer: QuantizedLayer, bias: torch.Tensor | None, out_dtype: torch.dtype,
                 device: torch.device, *, algorithms: AlgorithmCache | None = None,
                 compress: Callable[[torch.Tensor], torch.Tensor] | None = None, mm: CsltMm | None = None) -> None:
        self.scheme = layer.scheme
        self.out_dtype = out_dtype
        self.multiple = ROW_MULTIPLE[STORAGE_DTYPE[layer.scheme]]
        self._algorithms = algorithms or PROCESS_ALGORITHMS
        self._alg: dict[int, Algorithm] = {}
        self.out_features = int(layer.values.shape[0])
        weight = dense_quantized_weight(layer).to(device)
        self.weight = (compress or torch._cslt_compress)(weight)  # the opaque packed buffer, device only
        if self.out_features < 2:  # torch reads a one-element alpha with .item() (a host sync)
            raise ValueError("a 2:4 layer with one output row has no alpha vector; it stays dense")
        self.w_scale = layer.scale.to(device=device, dtype=torch.float32).contiguous()
        self.bias = None if bias is None else bias.to(device=device, dtype=out_dtype)
        self._mm: Callable[..., torch.Tensor] = mm or torch._cslt_sparse_mm

    def prepare(self, rows: int, example: torch.Tensor) -> None:
        """Search (or reuse) the alg id for calls of `rows` rows; `example`: any [rows, in] activation."""
        xq = quantize_activation(pad_rows(example, self.multiple), self.scheme)[0]
        self._alg[int(xq.shape[0])] = self._algorithms.alg_id(self.out_features, self.weight, xq.t(), self.w_scale,
                                                               self.out_dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """cuSPARSELt's B is xq^T (the column-major view of the row-major codes, the layout its FP8/INT8 kernels
        take); rows are padded to 16 in fp16 before quantizing (zero rows stay zero codes), the product comes
        back row-major [tokens, out] with w_scale applied, and is narrowed to the real rows (a prefix view)."""
        rows = x.shape[0]
        xq, token_scale = quantize_activation(pad_rows(x, self.multiple), self.scheme)
        out = self._mm(self.weight, xq.t(), alpha=self.w_scale, out_dtype=self.out_dtype, transpose_result=True,
                       **algorithm_kwargs(self._alg.get(int(xq.shape[0]), DEFAULT_ALGORITHM)))
        return scale_and_bias(out[:rows], token_scale[:rows], self.bias)



class Fp8DenseKernel:
    """FP8 dense through `torch._scaled_mm` with rowwise scales (sm_89+): the dense competitor of FP8 2:4."""

    def __init__(self, layer: QuantizedLayer, bias: torch.Tensor | None, out_dtype: torch.dtype,
                 device: torch.device, *, scaled_mm: ScaledMm | None = None) -> None:
        if layer.scheme != "fp8":
            raise ValueError(f"FP8 dense needs an fp8 repository, got {layer.scheme}")
        self.out_dtype = out_dtype
        weight = dense_quantized_weight(layer).to(device)
        self.weight = weight.t()  # [in, out] column-major: _scaled_mm's mat2 layout, no copy
        self.w_scale = layer.scale.to(device=device, dtype=torch.float32).reshape(1, -1).contiguous()
        self.bias = None if bias is None else bias.to(device=device, dtype=out_dtype)
        self._mm = scaled_mm or torch._scaled_mm

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xq, token_scale = quantize_activation(x, "fp8")
        return self._mm(xq, self.weight, scale_a=token_scale, scale_b=self.w_scale, bias=self.bias,
                        out_dtype=self.out_dtype)


# -- CPU emulations of the torch ops, following their documented semantics (tests, bench --smoke) -------------

def emulated_cslt_compress(weight: torch.Tensor) -> torch.Tensor:
    """Stand-in for `torch._cslt_compress`: keeps the dense codes (the packed layout is opaque anyway)."""
    return weight.clone()


def emulated_cslt_sparse_mm(compressed_a: torch.Tensor, dense_b: torch.Tensor, bias: torch.Tensor | None = None,
                            alpha: torch.Tensor | None = None, out_dtype: torch.dtype | None = None,
                            transpose_result: bool = False, alg_id: int = 0, split_k: int = 1,
                            split_k_mode: int = -1) -> torch.Tensor:
    """alpha[m] * (A[m, k] @ B[k, n]) + bias[m], as [m, n] or, with transpose_result, [n, m]; fp32 accumulate."""
    if alpha is not None and alpha.numel() == 1:
        raise AssertionError("a one-element alpha makes torch call .item() (host sync): never pass one")
    result = compressed_a.float() @ dense_b.float()
    if alpha is not None:
        result = result * alpha.float()[:, None]
    if bias is not None:
        result = result + bias.float()[:, None]
    result = result.to(out_dtype or compressed_a.dtype)
    return result.t().contiguous() if transpose_result else result


def emulated_scaled_mm(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                       bias: torch.Tensor | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """(a @ b) * scale_a * scale_b + bias, fp32 accumulate; b must be column-major as _scaled_mm requires."""
    if b.stride(0) != 1:
        raise AssertionError("_scaled_mm's mat2 must be column-major")
    result = (a.float() @ b.float()) * scale_a.float() * scale_b.float()
    if bias is not None:
        result = result + bias.float()
    return result.to(out_dtype or torch.float32)


def reference_output(layer: QuantizedLayer, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """What a quantized kernel computes, in float64: dequantized weight times the dequantized activation."""
    xq, token_scale = quantize_activation(x, layer.scheme)
    weight = decompress(dequantize_rows(layer.values, layer.scale), layer.mask).double()
    out = (xq.double() * token_scale.double()) @ weight.T
    return out if bias is None else out + bias.double()
