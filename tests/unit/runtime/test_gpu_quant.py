"""The FP8/INT8 kernels' glue on CPU: scales, padding, transposes, bias, output dtype and the alg-id cache, with
the two torch ops that need a GPU (`_cslt_sparse_mm`, `_scaled_mm`) replaced by emulations of their documented
semantics (gpu_quant.emulated_*). What the real ops do on a GPU is tests/gpu's job."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from server.runtime.gpu_cusparselt import (
    AlgorithmCache,
    DirectCusparseltKernel,
    decode_version,
    pad_rows,
    version_problem,
)
from server.runtime.gpu_quant import (
    Fp8DenseKernel,
    QuantSparseKernel,
    dense_quantized_weight,
    emulated_cslt_compress,
    emulated_cslt_sparse_mm,
    emulated_scaled_mm,
    per_token_scale,
    quantize_activation,
    reference_output,
)
from server.sparsity import compress
from server.sparsity.quantize import QuantizedLayer, quantize
from tests.support.models import prune_2_4

CPU = torch.device("cpu")
HALF_ULP_FP16 = 2.0**-11  # relative rounding of one fp16 result


def stored_layer(rows: int, cols: int, scheme: str, seed: int = 0) -> tuple[QuantizedLayer, torch.Tensor]:
    torch.manual_seed(seed)
    weight = prune_2_4(torch.randn(rows, cols))
    values, mask = compress(weight)
    codes, scale = quantize(values, scheme)
    return QuantizedLayer(scheme, codes, mask, scale), torch.randn(rows)


def within_fp16_rounding(got: torch.Tensor, layer: QuantizedLayer, bias: torch.Tensor | None,
                         x: torch.Tensor) -> None:
    """The emulated kernel rounds to fp16 three times (the product, s_x, the scaled product) and once more when
    adding the bias: |got - exact| <= 4 x 2^-11 x (|product| + |exact|), product being the pre-bias value."""
    exact = reference_output(layer, bias, x)
    product = reference_output(layer, None, x)
    allowed = 4 * HALF_ULP_FP16 * (product.abs() + exact.abs()) + 1e-6
    assert got.dtype == torch.float16 and got.shape == exact.shape
    assert bool(((got.double() - exact).abs() <= allowed).all())


@pytest.mark.parametrize("scheme", ["fp8", "int8"])
def test_per_token_scale_and_activation_codes(scheme: str) -> None:
    x = torch.tensor([[1.0, -4.0, 2.0, 0.5], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float16)
    scale = per_token_scale(x, scheme)
    qmax = 448.0 if scheme == "fp8" else 127.0
    assert scale.dtype == torch.float32 and scale.shape == (2, 1)
    assert scale[0, 0].item() == pytest.approx(4.0 / qmax)
    xq, s = quantize_activation(x, scheme)
    assert xq.dtype == (torch.float8_e4m3fn if scheme == "fp8" else torch.int8)
    assert xq.float()[0, 1].item() == -qmax  # the row's absmax lands on the top code
    assert bool((xq.float()[1] == 0).all()) and bool(torch.isfinite(s).all())  # a zero token stays zeros


@pytest.mark.parametrize("scheme", ["fp8", "int8"])
@pytest.mark.parametrize("rows", [5, 16, 33])
def test_quant_sparse_kernel_matches_the_dequantized_arithmetic(scheme: str, rows: int) -> None:
    layer, bias = stored_layer(64, 128, scheme)
    calls: list[dict] = []

    def mm(a: torch.Tensor, b: torch.Tensor, **kwargs: object) -> torch.Tensor:
        calls.append({"b_shape": tuple(b.shape), "b_column_major": b.stride(0) == 1, **kwargs})
        return emulated_cslt_sparse_mm(a, b, **kwargs)  # type: ignore[arg-type]

    kernel = QuantSparseKernel(layer, bias, torch.float16, CPU, compress=emulated_cslt_compress, mm=mm,
                               algorithms=AlgorithmCache(lambda *args: 0))
    x = torch.randn(rows, 128, dtype=torch.float16)
    got = kernel(x)
    within_fp16_rounding(got, layer, bias.half(), x)
    call = calls[0]
    padded = -(-rows // 16) * 16
    assert call["b_shape"] == (128, padded) and call["b_column_major"]  # xq^T, rows padded to 16
    assert call["transpose_result"] is True and call["out_dtype"] == torch.float16
    alpha = call["alpha"]
    assert isinstance(alpha, torch.Tensor) and alpha.shape == (64,) and torch.equal(alpha, layer.scale)
    assert got.is_contiguous()


def test_quant_sparse_kernel_without_bias_and_codes_are_exact() -> None:
    layer, _ = stored_layer(32, 64, "fp8")
    codes = dense_quantized_weight(layer)
    assert codes.dtype == torch.float8_e4m3fn and codes.shape == (32, 64)
    assert bool(((codes.float() != 0).reshape(32, 16, 4).sum(-1) <= 2).all())  # still 2:4
    kernel = QuantSparseKernel(layer, None, torch.float16, CPU, compress=emulated_cslt_compress,
                               mm=emulated_cslt_sparse_mm, algorithms=AlgorithmCache(lambda *args: 0))
    x = torch.randn(7, 64, dtype=torch.float16)
    within_fp16_rounding(kernel(x), layer, None, x)


def test_fp8_dense_kernel_hands_scaled_mm_rowwise_scales_and_a_column_major_weight() -> None:
    layer, bias = stored_layer(48, 96, "fp8")
    seen: dict = {}

    def scaled_mm(a: torch.Tensor, b: torch.Tensor, **kwargs: object) -> torch.Tensor:
        seen.update(a=a, b=b, **kwargs)
        return emulated_scaled_mm(a, b, **kwargs)  # type: ignore[arg-type]

    kernel = Fp8DenseKernel(layer, bias, torch.float16, CPU, scaled_mm=scaled_mm)
    x = torch.randn(9, 96, dtype=torch.float16)
    within_fp16_rounding(kernel(x), layer, bias.half(), x)
    assert seen["a"].dtype == torch.float8_e4m3fn and seen["b"].dtype == torch.float8_e4m3fn
    assert seen["scale_a"].shape == (9, 1) and seen["scale_b"].shape == (1, 48)
    assert seen["scale_a"].dtype == seen["scale_b"].dtype == torch.float32
    with pytest.raises(ValueError, match="FP8 dense needs an fp8 repository"):
        Fp8DenseKernel(stored_layer(48, 96, "int8")[0], None, torch.float16, CPU, scaled_mm=scaled_mm)


def test_one_element_alpha_is_never_passed() -> None:
    """torch reads a one-element alpha with .item(), a host sync that breaks CUDA graph capture."""
    layer, _ = stored_layer(1, 64, "fp8")
    with pytest.raises(ValueError, match="one output row"):
        QuantSparseKernel(layer, None, torch.float16, CPU, compress=emulated_cslt_compress, mm=emulated_cslt_sparse_mm)


def test_algorithm_search_runs_once_per_shape_and_rows_for_the_process() -> None:
    searched: list[tuple] = []

    def search(packed: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor | None,
               out: torch.dtype | None) -> tuple[int, int, int]:
        searched.append((tuple(b.shape), out))
        return 3, 2, 1

    cache = AlgorithmCache(search)
    used: list[tuple] = []

    def mm(a: torch.Tensor, b: torch.Tensor, **kwargs: object) -> torch.Tensor:
        used.append((kwargs["alg_id"], kwargs["split_k"], kwargs["split_k_mode"]))
        return emulated_cslt_sparse_mm(a, b, **kwargs)  # type: ignore[arg-type]

    kernels = [QuantSparseKernel(stored_layer(64, 128, "fp8", seed)[0], None, torch.float16, CPU,
                                 compress=emulated_cslt_compress, mm=mm, algorithms=cache) for seed in (0, 1)]
    for kernel in kernels:  # two identical layers (two transformer blocks): one search
        kernel.prepare(20, torch.randn(20, 128, dtype=torch.float16))
    assert searched == [((128, 32), torch.float16)] and cache.searches == 1
    kernels[0](torch.randn(20, 128, dtype=torch.float16))  # 20 rows pad to 32: the searched id
    kernels[0](torch.randn(64, 128, dtype=torch.float16))  # an unprepared bucket: the default id
    assert used == [(3, 2, 1), (0, 1, -1)]


def test_a_failed_search_falls_back_to_the_default_algorithm() -> None:
    def broken(*args: object) -> int:
        raise RuntimeError("CUSPARSE_STATUS_NOT_SUPPORTED")

    cache = AlgorithmCache(broken)
    assert cache.alg_id(64, torch.zeros(1), torch.zeros(128, 16), None, None) == (0, 1, -1)
    assert AlgorithmCache(lambda *args: 5).alg_id(64, torch.zeros(1), torch.zeros(128, 16), None, None) == (5, 1, -1)


def test_direct_fp16_kernel_is_f_linear_with_row_major_output_and_bias_in_the_epilogue() -> None:
    torch.manual_seed(0)
    weight = prune_2_4(torch.randn(64, 128)).half()
    bias = torch.randn(64).half()
    seen: dict = {}

    def mm(a: torch.Tensor, b: torch.Tensor, **kwargs: object) -> torch.Tensor:
        seen.update(b_shape=tuple(b.shape), **kwargs)
        return emulated_cslt_sparse_mm(a, b, **kwargs)  # type: ignore[arg-type]

    kernel = DirectCusparseltKernel(weight, bias, compress=emulated_cslt_compress, mm=mm,
                                    algorithms=AlgorithmCache(lambda *args: 0))
    x = torch.randn(5, 128).half()
    got = kernel(x)
    want = F.linear(x.float(), weight.float(), bias.float())
    assert got.shape == (5, 64) and got.is_contiguous()
    torch.testing.assert_close(got.float(), want, rtol=2 * HALF_ULP_FP16, atol=1e-3)
    assert seen["b_shape"] == (128, 8) and seen["transpose_result"] is True and seen["bias"] is bias
    with pytest.raises(ValueError, match="float16/bfloat16 only"):
        DirectCusparseltKernel(weight.float(), None, compress=emulated_cslt_compress, mm=mm)


def test_pad_rows() -> None:
    x = torch.ones(5, 3)
    assert pad_rows(x, 8).shape == (8, 3) and float(pad_rows(x, 8)[5:].abs().sum()) == 0
    assert pad_rows(torch.ones(16, 3), 8).shape == (16, 3)


@pytest.mark.parametrize(("version", "decoded", "warns"), [
    (602, (0, 6, 2), True), (800, (0, 8, 0), True), (801, (0, 8, 1), False), (900, (0, 9, 0), False)])
def test_cusparselt_version_encoding_and_warning(version: int, decoded: tuple, warns: bool) -> None:
    """CUSPARSELT_VERSION is MAJOR*1000 + MINOR*100 + PATCH: torch's own table maps 602 to 0.6.2."""
    assert decode_version(version) == decoded
    problem = version_problem(version)
    assert (problem is not None) == warns
    if warns:
        assert f"{decoded[0]}.{decoded[1]}.{decoded[2]} is older than 0.8.1" in str(problem)
    assert version_problem(None) == "this torch build has no cuSPARSELt"
