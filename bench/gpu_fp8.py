"""FP8 / fp16, dense / 2:4 on a lent GPU (issue 18). Prints four tables:

  (f) per layer: fp16 dense, fp16 2:4 (torch's wrapper and the direct cuSPARSELt call with a searched alg id),
      FP8 dense (`torch._scaled_mm`) and FP8 2:4 (cuSPARSELt), at 8192^2, BERT-large (1024/4096) and LLM MLP
      (4096 x 14336) shapes, 256..8192 tokens; medians of CUDA-graph replays; with each variant's relative error;
  (g) GPU bytes of one weight per variant against fp16 dense (target for FP8 2:4: <= 0.32x);
  (h) end to end, the runtime alone, a BERT-large-size token encoder (1024 -> 4096 -> 1024 x 24, 128 tokens) at
      batch 1..256: each variant forced on every 2:4 layer, plus `auto` (the per-layer measured choice, whose
      decision table is printed), the variants taking turns call by call.
Usage: python bench/gpu_fp8.py [--parts f,g,h] [--smoke]  (--smoke: CPU dry run with emulated kernels, no numbers)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_fp8_tables import (  # noqa: E402
    LayerResult,
    bytes_table,
    e2e_table,
    e2e_verdict,
    layer_table,
    layer_verdict,
)
from server.runtime.gpu_cusparselt import AlgorithmCache, DirectCusparseltKernel, decode_version, version_problem  # noqa: E402
from server.runtime.gpu_layers import tensor_bytes  # noqa: E402
from server.runtime.gpu_quant import (  # noqa: E402
    Fp8DenseKernel,
    QuantSparseKernel,
    emulated_cslt_compress,
    emulated_cslt_sparse_mm,
    emulated_scaled_mm,
    quantize_activation,
)
from server.runtime.gpu_timing import SemiStructuredKernel, random_2_4, synthetic_layer, time_cuda_graph  # noqa: E402
from server.sparsity import decompress  # noqa: E402
from server.sparsity.quantize import dequantize_rows  # noqa: E402

SHAPES = [("square 8192", 8192, 8192), ("bert-large fc1", 4096, 1024), ("bert-large fc2", 1024, 4096),
          ("llm mlp up", 14336, 4096), ("llm mlp down", 4096, 14336)]
TOKENS = [256, 512, 1024, 2048, 4096, 8192]
SMOKE_SHAPES, SMOKE_TOKENS = [("smoke 64x128", 64, 128)], [16, 48]
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="f,g,h", help="comma list of f,g,h")
    parser.add_argument("--smoke", action="store_true", help="CPU dry run with emulated kernels (not a measurement)")
    parser.add_argument("--hidden", type=int, default=1024, help="(h) encoder width (1024 = BERT-large)")
    parser.add_argument("--blocks", type=int, default=24, help="(h) encoder MLP blocks (24 = BERT-large)")
    parser.add_argument("--sequence", type=int, default=128, help="(h) tokens per request")
    parser.add_argument("--calls", type=int, default=15, help="(h) timed calls per variant and batch size")
    args = parser.parse_args(argv)
    unknown = set(args.parts.split(",")) - {"f", "g", "h"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from f,g,h")
    return args


def build_variants(rows: int, cols: int, device: torch.device, smoke: bool) -> tuple[dict[str, Any], Any, Any]:
    """Every variant's kernel on one random 2:4 weight (FP8 ones on its per-row fp8 codes); a variant whose
    construction fails is recorded by its error text instead."""
    dtype = torch.float16
    weight = random_2_4(rows, cols, dtype, device)
    bias = torch.randn(rows, dtype=dtype, device=device)
    layer = synthetic_layer(weight, "fp8")
    emulate: dict[str, Any] = {"compress": emulated_cslt_compress, "mm": emulated_cslt_sparse_mm,
                               "algorithms": AlgorithmCache(lambda *args: 0)} if smoke else {}
    makers: dict[str, Callable[[], Any]] = {
        "fp16 dense": lambda: (lambda x: F.linear(x, weight, bias)),
        "fp16 2:4": (lambda: DirectCusparseltKernel(weight, bias, **emulate)) if smoke else
                    (lambda: SemiStructuredKernel(weight, bias, "cusparselt")),
        "fp16 2:4 direct": lambda: DirectCusparseltKernel(weight, bias, **emulate),
        "FP8 dense": lambda: Fp8DenseKernel(layer, bias, dtype, device,
                                            **({"scaled_mm": emulated_scaled_mm} if smoke else {})),
        "FP8 2:4": lambda: QuantSparseKernel(layer, bias, dtype, device, **emulate),
    }
    kernels: dict[str, Any] = {}
    for name, make in makers.items():
        try:
            kernels[name] = make()
        except (RuntimeError, ValueError) as exc:
            kernels[name] = f"unavailable: {str(exc).splitlines()[0][:120]}"
    return kernels, (weight, bias), layer


def quantized_reference(dequantized: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """What the FP8 kernels compute, in fp32 on x's device: dequantized activations times dequantized weight
    (gpu_quant.reference_output's arithmetic; float64 on a CPU would take minutes at these sizes)."""
    xq, token_scale = quantize_activation(x, "fp8")
    return F.linear(xq.float() * token_scale, dequantized, bias.float())


def clock(smoke: bool) -> Callable[[Callable[[], object]], float]:
    if not smoke:
        return time_cuda_graph

    def wall(call: Callable[[], object]) -> float:
        samples = []
        for _ in range(3):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)
    return wall


def part_f(smoke: bool, device: torch.device) -> list[LayerResult]:
    results: list[LayerResult] = []
    timer = clock(smoke)
    for name, rows, cols in SMOKE_SHAPES if smoke else SHAPES:
        kernels, (weight, bias), layer = build_variants(rows, cols, device, smoke)
        dequantized = decompress(dequantize_rows(layer.values, layer.scale), layer.mask).to(device)
        for tokens in SMOKE_TOKENS if smoke else TOKENS:
            x = torch.randn(tokens, cols, dtype=torch.float16, device=device)
            result = LayerResult(name, rows, cols, tokens)
            exact = F.linear(x.float(), weight.float(), bias.float())
            quantized = quantized_reference(dequantized, bias, x)
            with torch.inference_mode():
                for variant, kernel in kernels.items():
                    if isinstance(kernel, str):
                        result.errors[variant] = kernel
                        continue
                    prepare = getattr(kernel, "prepare", None)
                    try:
                        if prepare is not None:
                            prepare(tokens, x)
                        out = kernel(x).float()
                        result.us[variant] = timer(lambda k=kernel, x=x: k(x)) * 1e6
                    except RuntimeError as exc:
                        result.errors[variant] = f"failed: {str(exc).splitlines()[0][:120]}"
                        continue
                    want = quantized if variant.startswith("FP8") else exact
                    result.rel_err[variant] = float((out - want).norm() / want.norm())
            results.append(result)
        del kernels
    print(layer_table(results))
    print(layer_verdict(results))
    return results


def part_g(smoke: bool, device: torch.device) -> None:
    rows_out = []
    for name, rows, cols in SMOKE_SHAPES if smoke else SHAPES:
        kernels, (weight, _), _ = build_variants(rows, cols, device, smoke)
        dense = tensor_bytes(weight)
        sizes = {}
        for variant, kernel in kernels.items():
            if not isinstance(kernel, str) and variant != "fp16 dense":
                held = [kernel.weight] + [t for t in (getattr(kernel, "w_scale", None),) if t is not None]
                sizes[variant] = sum(tensor_bytes(t) for t in held)
        rows_out.append((name, rows, cols, dense, sizes))
        del kernels
    print(bytes_table(rows_out))


def part_h(args: argparse.Namespace, device: torch.device) -> None:
    try:  # the runtime reads Triton model configs: tritonclient's protobufs (carried as a wheel to the GPU box)
        import tritonclient.grpc.model_config_pb2  # noqa: F401
    except ImportError as exc:
        print(f"\n(h) end to end: SKIPPED: tritonclient is not importable here ({exc})")
        return
    from bench.gpu_fp8_e2e import run_e2e

    hidden, blocks, sequence = (64, 2, 8) if args.smoke else (args.hidden, args.blocks, args.sequence)
    batches = [1, 4, 16] if args.smoke else BATCHES
    calls = 3 if args.smoke else args.calls
    times, table = run_e2e(hidden, blocks, sequence, batches, calls, device, args.smoke)
    print(f"\n(h) runtime only, {sequence} tokens -> {blocks} x ({hidden} -> {4 * hidden} -> {hidden}), median ms of "
          f"{calls} calls, variants interleaved; `auto` = the measured per-layer choice (dispatch mode):")
    print(table)
    print(e2e_table(batches, times))
    print(e2e_verdict(batches, times))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("bench/gpu_fp8.py needs CUDA (or --smoke for a CPU dry run of the script itself)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.smoke else "cuda")
    version = torch.backends.cusparselt.version() if torch.backends.cusparselt.is_available() else None
    name = "cpu (SMOKE: emulated kernels, NOT a measurement)" if args.smoke else torch.cuda.get_device_name(0)
    shown = "none" if version is None else "%d.%d.%d" % decode_version(version)
    print(f"device: {name}; torch {torch.__version__}; cuSPARSELt {shown} ({version}); "
          f"{version_problem(version) or 'version ok (>= 0.8.1)'}")
    started = time.perf_counter()
    parts = set(args.parts.split(","))
    if "f" in parts:
        print("\n(f) per layer, fp16 activations in and out, bias on; us per call from CUDA-graph replays")
        part_f(args.smoke, device)
    if "g" in parts:
        part_g(args.smoke, device)
    if "h" in parts:
        part_h(args, device)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
