"""2:4 on the GPU: one script for a lent GPU machine (a few minutes of device time). Prints four tables:

  (a) per-layer time, dense vs 2:4 (cuSPARSELt and CUTLASS), for 4096x4096, 8192x8192 and BERT-base/large MLP
      shapes at 1..4096 tokens (medians of CUDA-event windows);
  (b) end-to-end served throughput of a BERT-size encoder, dense vs 2:4, batch 1..256, through the real server
      (`twofour serve --device cuda`) and tritonclient -- only where the server's dependencies are importable;
  (c) GPU bytes of each weight, dense vs the 2:4 layout (tensor bytes and the allocator's delta);
  (d) correctness: 2:4 kernel vs dense fp16/bf16 on the same pruned weight (relative error), fp32 refused;
  (e) the runtime alone (no server): the (b) token encoder dense vs 2:4, through CUDA graphs and eagerly.

Parts (a), (c), (d) import torch and the runtime's torch-only modules, nothing else. Usage:

    python bench/gpu.py                    # everything (b skipped when its deps are missing)
    python bench/gpu.py --parts a,c,d      # kernels only
    python bench/gpu.py --smoke            # CPU dry run with a dense stand-in kernel: NOT a measurement
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.runtime.gpu_layers import tensor_bytes  # noqa: E402  (torch-only modules)
from server.runtime.gpu_timing import (  # noqa: E402
    SemiStructuredKernel,
    available_backend,
    cutlass_runs_here,
    random_2_4,
    time_cuda,
    time_cuda_graph,
)

SHAPES = [("square 4096", 4096, 4096), ("square 8192", 8192, 8192), ("bert-base fc1", 3072, 768),
          ("bert-base fc2", 768, 3072), ("bert-large fc1", 4096, 1024), ("bert-large fc2", 1024, 4096)]
TOKENS = [2 ** i for i in range(13)]  # 1 .. 4096
SMOKE_SHAPES = [("smoke 64x128", 64, 128), ("smoke 128x64", 128, 64)]


class StandIn:
    """--smoke only: dense math behind the kernel's interface, so the script's plumbing runs on a CPU."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, backend: str) -> None:
        if weight.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"2:4 kernels run in float16/bfloat16 only, got {weight.dtype}")
        self.weight, self.bias = weight.clone(), bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Bench:
    def __init__(self, smoke: bool, dtype: torch.dtype) -> None:
        self.smoke, self.dtype = smoke, dtype
        self.device = torch.device("cpu" if smoke else "cuda")
        self.kernel_class: Callable[..., Any] = StandIn if smoke else SemiStructuredKernel
        if smoke:
            self.backends = ["stand-in"]
        else:  # CUTLASS's 2:4 kernels run on sm_8x only (they raise on an H200); cuSPARSELt where torch ships it
            self.backends = [b for b in ("cusparselt", "cutlass") if b == available_backend() or
                             (b == "cutlass" and cutlass_runs_here())]
        self.shapes = SMOKE_SHAPES if smoke else SHAPES
        self.tokens = [1, 8, 64] if smoke else TOKENS

    def time(self, call: Callable[[], object], graph: bool = True) -> float:
        """GPU time per call replayed from a CUDA graph (how the runtime serves), or eager per-call time, which
        includes the host's launch work (and cuSPARSELt's per-call plan building)."""
        if not self.smoke:
            return time_cuda_graph(call) if graph else time_cuda(call, warmup=3, repeats=5, inner=10)
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    def kernel(self, weight: torch.Tensor, bias: torch.Tensor | None, backend: str) -> Any:
        return self.kernel_class(weight, bias, backend)

    def weight(self, rows: int, cols: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        return random_2_4(rows, cols, dtype or self.dtype, self.device)


def part_a(b: Bench) -> None:
    print(f"\n(a) per-layer time, {str(b.dtype)[6:]}, bias on; ratio = dense / 2:4 (> 1: 2:4 faster). Graph columns: "
          f"GPU time per call replayed from a CUDA graph (how the runtime serves); eager: per call launched from "
          f"Python, host work included")
    head = f"{'layer':<16} {'out x in':>11} {'tokens':>6} {'dense us':>9}"
    print(head + "".join(f" {k + ' us':>15} {'ratio':>6}" for k in b.backends) +
          f" {'eager dense us':>15} {'eager 2:4 us':>13} {'ratio':>6}")
    best: dict[str, float] = {}
    for name, rows, cols in b.shapes:
        weight = b.weight(rows, cols)
        bias = torch.zeros(rows, dtype=b.dtype, device=b.device)
        kernels = [b.kernel(weight, bias, k) for k in b.backends]
        for tokens in b.tokens:
            x = torch.randn(tokens, cols, dtype=b.dtype, device=b.device)
            with torch.inference_mode():
                dense = b.time(functools.partial(F.linear, x, weight, bias))
                sparse = [b.time(functools.partial(k, x)) for k in kernels]
                eager_dense = b.time(functools.partial(F.linear, x, weight, bias), graph=False)
                eager_sparse = b.time(functools.partial(kernels[0], x), graph=False)
            line = f"{name:<16} {f'{rows}x{cols}':>11} {tokens:>6} {dense * 1e6:>9.1f}"
            line += "".join(f" {s * 1e6:>15.1f} {dense / s:>5.2f}x" for s in sparse)
            line += f" {eager_dense * 1e6:>15.1f} {eager_sparse * 1e6:>13.1f} {eager_dense / eager_sparse:>5.2f}x"
            print(line)
            if tokens >= 1024:
                best[name] = max(best.get(name, 0.0), max(dense / s for s in sparse))
        del weight, kernels
    if best:
        print("best ratio at >= 1024 tokens (target >= 1.25x on large GEMMs): " +
              ", ".join(f"{n} {r:.2f}x" for n, r in best.items()))


def part_c(b: Bench) -> None:
    print("\n(c) GPU bytes of one weight: dense vs 2:4 layout (target <= 0.6x)")
    print(f"{'layer':<16} {'out x in':>11} {'backend':>10} {'dense B':>12} {'2:4 B':>12} {'ratio':>6} "
          f"{'alloc delta B':>14}")
    for name, rows, cols in b.shapes:
        weight = b.weight(rows, cols)
        for backend in b.backends:
            if not b.smoke:
                torch.cuda.synchronize()
            before = torch.cuda.memory_allocated() if not b.smoke else 0
            kernel = b.kernel(weight, None, backend)
            delta = (torch.cuda.memory_allocated() - before) if not b.smoke else -1
            dense, sparse = tensor_bytes(weight), tensor_bytes(kernel.weight)
            print(f"{name:<16} {f'{rows}x{cols}':>11} {backend:>10} {dense:>12} {sparse:>12} "
                  f"{sparse / dense:>5.3f}x {delta:>14}")
            del kernel
        del weight


def part_d(b: Bench) -> None:
    print("\n(d) correctness on the same pruned weight, 37 and 256 tokens (37 exercises row padding)")
    print(f"{'layer':<16} {'dtype':>9} {'backend':>10} {'tokens':>6} {'rel err vs dense':>17} {'vs fp32 ref':>12}"
          f" {'ok':>3}")
    failures = 0
    for name, rows, cols in b.shapes:
        for dtype in (torch.float16, torch.bfloat16):
            weight = b.weight(rows, cols, dtype)
            bias = torch.randn(rows, dtype=dtype, device=b.device)
            for backend in b.backends:
                kernel = b.kernel(weight, bias, backend)
                for tokens in (37, 256):
                    x = torch.randn(tokens, cols, dtype=dtype, device=b.device)
                    with torch.inference_mode():
                        dense = F.linear(x, weight, bias).float()
                        sparse = kernel(x).float()
                        ref = F.linear(x.float(), weight.float(), bias.float())
                    err = float((sparse - dense).norm() / dense.norm())
                    err_ref = float((sparse - ref).norm() / ref.norm())
                    ok = err <= 1e-2
                    failures += not ok
                    print(f"{name:<16} {str(dtype)[6:]:>9} {backend:>10} {tokens:>6} {err:>17.2e} {err_ref:>12.2e}"
                          f" {'yes' if ok else 'NO':>3}")
    try:
        b.kernel(b.weight(64, 64, torch.float32), None, b.backends[0])
        print("fp32 weight: ACCEPTED by the kernel wrapper (must be refused)")
        failures += 1
    except ValueError as exc:
        print(f"fp32 weight refused: {exc}")
    print(f"correctness: {'all within 1e-2' if not failures else f'{failures} FAILED'}")


def part_e(b: Bench, hidden: int, blocks: int, sequence: int) -> None:
    """The runtime alone, no server: the same token encoder dense vs 2:4, through CUDA graphs and eagerly, so
    the GPU's share of (b) is seen without the transport's milliseconds on top."""
    import tempfile

    from google.protobuf import text_format

    try:
        from tritonclient.grpc import model_config_pb2 as mc
    except ImportError:
        print("\n(e) runtime only: SKIPPED: tritonclient is not importable here (model configs are its protobufs)")
        return

    from server.runtime import gpu
    from tests.gpu.models import TokenEncoder, write_token_encoder

    if b.smoke:
        hidden, blocks, sequence = 64, 2, 8
    batches = [1, 8, 32, 64, 128, 256]
    print(f"\n(e) runtime only (no server), {sequence} tokens -> {blocks} x ({hidden} -> {4 * hidden} -> {hidden}), "
          f"median ms of 15 calls per batch size, the variants taking turns (mode dispatch)")
    model = TokenEncoder(hidden, blocks, vocab=1000)
    variants = (("dense graph", False, True), ("2:4 graph", True, True), ("2:4 eager", True, False))
    times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    runtimes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="twofour-bench-e-") as tmp:
        for label, sparse, graphs in variants:
            name = label.replace(" ", "_").replace(":", "")
            write_token_encoder(Path(tmp), name, model, hidden, sequence, max_batch=batches[-1], sparse=sparse)
            config_file = Path(tmp) / name / "config.pbtxt"
            config = text_format.Parse(config_file.read_text(), mc.ModelConfig())
            if not graphs:
                config.parameters["cuda_graphs"].string_value = "false"
            if b.smoke:  # the pipeline on CPU in fp32 (every layer dense), no graphs: plumbing only
                runtimes[label] = gpu.GpuRuntime(Path(tmp) / name / "1", config, device=b.device,
                                                 dtype=torch.float32, keep_dense=True, backend="cutlass",
                                                 sparse_factory=functools.partial(StandIn, backend="stand-in"),
                                                 timer=lambda *_: 1.0)
            else:
                runtimes[label] = gpu.create(Path(tmp) / name / "1", config, "cuda", keep_dense=True)
            if sparse and graphs:
                details = runtimes[label].describe().details
                print(f"  whole-model check per bucket: {details.get('bucket_check')}")
                for layer in [x for x in details.get("layers", []) if ".0." in x["layer"]]:
                    chosen = [f"{c['batch']}:{c['kernel'][0]}{c['speedup']:.2f}" for c in layer["buckets"]]
                    print(f"  {layer['layer']} ({layer['out_features']}x{layer['in_features']}) per bucket "
                          f"batch:kernel+measured speedup: {' '.join(chosen)}")
        for batch in batches:  # the variants take turns call by call, so drift hits them alike
            tokens = {"TOKENS": torch.randint(0, 1000, (batch, sequence))}
            samples: dict[str, list[float]] = {label: [] for label in runtimes}
            for runtime in runtimes.values():
                runtime.infer(tokens)
            for _ in range(15):
                for label, runtime in runtimes.items():
                    start = time.perf_counter()
                    runtime.infer(tokens)
                    samples[label].append(time.perf_counter() - start)
            for label in runtimes:
                times[label].append(statistics.median(samples[label]) * 1e3)
        for runtime in runtimes.values():
            runtime.close()
    print(f"{'batch':>6}" + "".join(f" {label + ' ms':>15}" for label, _, _ in variants) + f" {'2:4/dense graph':>16}")
    for i, batch in enumerate(batches):
        row = [times[label][i] for label, _, _ in variants]
        print(f"{batch:>6}" + "".join(f" {t:>15.2f}" for t in row) + f" {row[0] / row[1]:>15.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b,c,d,e", help="comma list of a,b,c,d,e")
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16", help="dtype for (a), (c)")
    parser.add_argument("--smoke", action="store_true", help="CPU dry run with a dense stand-in (not a measurement)")
    parser.add_argument("--e2e-hidden", type=int, default=768, help="(b) encoder width (768 = BERT-base)")
    parser.add_argument("--e2e-blocks", type=int, default=12, help="(b) encoder MLP blocks (12 = BERT-base)")
    parser.add_argument("--e2e-sequence", type=int, default=128,
                        help="(b) tokens per request (BERT's 128); 0 = one hidden-size vector per request")
    parser.add_argument("--e2e-seconds", type=float, default=1.0, help="(b) seconds per model and batch size")
    parser.add_argument("--e2e-mode", choices=["dispatch", "memory"], default="dispatch",
                        help="(b) dispatch = --gpu-keep-dense (per batch size), memory = 2:4 weight only")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if not args.smoke and not torch.cuda.is_available():
        print("bench/gpu.py needs CUDA (or --smoke for a CPU dry run of the script itself)", file=sys.stderr)
        return 2
    bench = Bench(args.smoke, getattr(torch, args.dtype))
    device = "cpu (SMOKE: dense stand-in, NOT a measurement)" if args.smoke else torch.cuda.get_device_name(0)
    print(f"device: {device}; torch {torch.__version__}; 2:4 backends: {', '.join(bench.backends)}")
    started = time.perf_counter()
    for part, run in (("a", part_a), ("c", part_c), ("d", part_d)):
        if part in parts:
            run(bench)
    if "b" in parts:
        from bench import gpu_e2e

        gpu_e2e.run(smoke=args.smoke, hidden=args.e2e_hidden, blocks=args.e2e_blocks, seconds=args.e2e_seconds,
                    keep_dense=args.e2e_mode == "dispatch", sequence=args.e2e_sequence)
    if "e" in parts:
        part_e(bench, args.e2e_hidden, args.e2e_blocks, args.e2e_sequence or 128)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
