"""The per-layer race among fp16 2:4, FP8 dense, FP8 2:4 and INT8 2:4 (gpu_choice.py), with an injected clock,
and the whole GPU-runtime load of an fp8/int8 repository on CPU with the kernels' torch ops emulated."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.artifacts import load_weights, save_weights
from server.runtime.gpu import GpuRuntime
from server.runtime.gpu_choice import (
    FP8_DENSE,
    FP8_SPARSE,
    INT8_SPARSE,
    AliasTimer,
    candidate_kernels,
    layer_candidates,
    rank_alternatives,
)
from server.runtime.gpu_cusparselt import AlgorithmCache
from server.runtime.gpu_decision import DENSE, SPARSE, LayerShape, format_table
from server.runtime.gpu_layers import QuantFactory
from server.runtime.gpu_quant import (
    Fp8DenseKernel,
    QuantSparseKernel,
    emulated_cslt_compress,
    emulated_cslt_sparse_mm,
    emulated_scaled_mm,
)
from tests.unit.runtime.test_gpu_runtime import CONFIG, SPARSE_NAMES, Encoder, StandInKernel, relative_error

SHAPE = LayerShape(1024, 1024)


@pytest.mark.parametrize(("scheme", "capability", "backend", "expected"), [
    ("none", (9, 0), "cusparselt", [SPARSE]),
    ("fp8", (9, 0), "cusparselt", [SPARSE, FP8_DENSE, FP8_SPARSE]),
    ("fp8", (8, 9), "cusparselt", [SPARSE, FP8_DENSE]),  # Ada: _scaled_mm, no cuSPARSELt FP8
    ("fp8", (8, 0), "cusparselt", [SPARSE]),  # Ampere has no FP8
    ("int8", (8, 0), "cusparselt", [SPARSE, INT8_SPARSE]),
    ("int8", (8, 0), "cutlass", [SPARSE]),
    ("fp8", (9, 0), "none", [FP8_DENSE]),
])
def test_candidates_follow_the_repository_and_the_gpu(scheme: str, capability: tuple[int, int], backend: str,
                                                      expected: list[str]) -> None:
    assert candidate_kernels(scheme, capability, backend) == expected


def test_layer_candidates_apply_each_kernels_shape_rules() -> None:
    kernels = [FP8_DENSE, FP8_SPARSE, INT8_SPARSE]
    candidates, problems = layer_candidates(LayerShape(48, 64), torch.float16, "cusparselt", "fp8", kernels)
    assert candidates == [SPARSE, FP8_DENSE]  # 48 rows: a multiple of 16, not of 32
    assert "FP8 2:4 needs out/in multiples of 32/32" in problems[FP8_SPARSE] and INT8_SPARSE not in problems
    unquantized, _ = layer_candidates(SHAPE, torch.float16, "cusparselt", None, kernels)
    assert unquantized == [SPARSE]


def clock(table: dict[str, float]):  # kernel -> seconds at every row count, dense 1.0
    def timer(shape: LayerShape, kernel: str, rows: int) -> float:
        if kernel not in table and kernel != DENSE:
            raise RuntimeError(f"CUDA error: {kernel} not supported\nmore")
        return 1.0 if kernel == DENSE else table[kernel]
    return timer


def test_the_fastest_candidate_wins_and_failures_drop_out() -> None:
    timer = clock({SPARSE: 0.8, FP8_DENSE: 0.6, FP8_SPARSE: 0.4})
    ranking = rank_alternatives(SHAPE, [1, 64, 512], timer, [SPARSE, FP8_DENSE, FP8_SPARSE, INT8_SPARSE])
    assert ranking.best == FP8_SPARSE
    assert ranking.speedups == pytest.approx({SPARSE: 1.25, FP8_DENSE: 1 / 0.6, FP8_SPARSE: 2.5})
    assert ranking.dropped == {INT8_SPARSE: "INT8 2:4 failed while timing: CUDA error: int8_2_4 not supported"}


def test_ties_keep_fp16_2_4_and_no_rows_means_no_race() -> None:
    timer = clock({SPARSE: 0.5, FP8_SPARSE: 0.5})
    assert rank_alternatives(SHAPE, [8], timer, [SPARSE, FP8_SPARSE]).best == SPARSE
    assert rank_alternatives(SHAPE, [], timer, [SPARSE]).best is None


def test_alias_timer_puts_the_winner_behind_sparse() -> None:
    seen: list[str] = []
    alias = AliasTimer(lambda shape, kernel, rows: seen.append(kernel) or 1.0, FP8_SPARSE)
    alias(SHAPE, SPARSE, 8)
    alias(SHAPE, DENSE, 8)
    assert seen == [FP8_SPARSE, DENSE]


# -- the runtime: an fp8 / int8 repository, loaded on CPU with emulated kernels ----------------------------------

def emulated_quant_kernels() -> dict[str, QuantFactory]:
    algorithms = AlgorithmCache(lambda *args: 0)
    sparse: QuantFactory = lambda layer, bias: QuantSparseKernel(  # noqa: E731
        layer, bias, torch.float16, torch.device("cpu"), compress=emulated_cslt_compress, mm=emulated_cslt_sparse_mm,
        algorithms=algorithms)
    dense: QuantFactory = lambda layer, bias: Fp8DenseKernel(  # noqa: E731
        layer, bias, torch.float16, torch.device("cpu"), scaled_mm=emulated_scaled_mm)
    return {FP8_DENSE: dense, FP8_SPARSE: sparse, INT8_SPARSE: sparse}


def quantized_runtime(tmp_path: Path, scheme: str, table: dict[str, float], keep_dense: bool = False
                      ) -> tuple[GpuRuntime, torch.nn.Module]:
    from tests.support.models import write_model

    model = Encoder().eval()
    write_model(tmp_path, "enc", model, (torch.randn(2, 64),), CONFIG % ("64", "4", ""), sparse=SPARSE_NAMES)
    version = tmp_path / "enc" / "1"
    save_weights(dict(model.state_dict()), SPARSE_NAMES, version / "weights.safetensors", scheme)
    config = text_format.Parse((tmp_path / "enc" / "config.pbtxt").read_text(), mc.ModelConfig())
    runtime = GpuRuntime(version, config, device=torch.device("cpu"), dtype=torch.float16, keep_dense=keep_dense,
                         backend="cusparselt", sparse_factory=StandInKernel, timer=clock(table),
                         quant_kernels=emulated_quant_kernels())
    reference = Encoder().eval()
    reference.load_state_dict(load_weights(version / "weights.safetensors").tensors)  # dequantized fp32
    return runtime, reference


def test_an_fp8_repository_runs_the_fastest_fp8_kernel_per_layer(tmp_path: Path) -> None:
    runtime, reference = quantized_runtime(tmp_path, "fp8", {SPARSE: 0.8, FP8_DENSE: 0.6, FP8_SPARSE: 0.4})
    details = runtime.describe().details
    layers = {layer["layer"]: layer for layer in details["layers"]}
    for name in ("up.weight", "down.weight"):
        assert layers[name]["alternative"] == FP8_SPARSE and layers[name]["kernel"] == SPARSE
        assert layers[name]["ranking"]["best"] == FP8_SPARSE
    # 24 output rows: a multiple of neither 16 (fp16 2:4, _scaled_mm) nor 32 (FP8 2:4): it stays dense
    assert layers["narrow.weight"]["kernel"] == DENSE
    table = format_table(details["layers"])
    assert "fp8_2_4" in table and "candidates (geo-mean vs fp16 dense)" in table
    x = torch.randn(8, 64)
    with torch.no_grad():
        want = reference(x)
    got = runtime.infer({"X": x})["Y"]
    # Each of the two FP8 layers rounds its activations to e4m3 (<= 2^-4 relative per entry): to first order the
    # output's relative error is at most 2 x 2^-4; fp16 elsewhere adds ~2^-11 per op.
    assert relative_error(got, want) <= 2 * 2.0**-4


def test_fp8_dense_can_win_and_int8_runs_int8_2_4(tmp_path: Path) -> None:
    runtime, _ = quantized_runtime(tmp_path / "a", "fp8", {SPARSE: 0.9, FP8_DENSE: 0.5, FP8_SPARSE: 0.7})
    layers = {layer["layer"]: layer for layer in runtime.describe().details["layers"]}
    assert layers["up.weight"]["alternative"] == FP8_DENSE
    runtime, reference = quantized_runtime(tmp_path / "b", "int8", {SPARSE: 0.9, INT8_SPARSE: 0.5})
    layers = {layer["layer"]: layer for layer in runtime.describe().details["layers"]}
    assert layers["up.weight"]["alternative"] == INT8_SPARSE
    assert FP8_SPARSE not in layers["up.weight"]["ranking"]["speedups"]  # an int8 repository: no FP8
    x = torch.randn(8, 64)
    with torch.no_grad():
        want = reference(x)
    # int8 activations: half a step is <= 1/254 of the token's absmax per entry
    assert relative_error(runtime.infer({"X": x})["Y"], want) <= 2 * (1 / 254) + 2 * 2.0**-11 * 4


def test_slower_alternatives_leave_the_layer_dense(tmp_path: Path) -> None:
    runtime, _ = quantized_runtime(tmp_path, "fp8", {SPARSE: 1.5, FP8_DENSE: 1.2, FP8_SPARSE: 1.1})
    layers = {layer["layer"]: layer for layer in runtime.describe().details["layers"]}
    assert layers["up.weight"]["kernel"] == DENSE and layers["up.weight"]["alternative"] == FP8_SPARSE
