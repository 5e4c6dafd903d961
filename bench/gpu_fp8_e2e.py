"""(h) of bench/gpu_fp8.py: a BERT-large-size token encoder through the GPU runtime, one variant per runtime.

The model is written once as an fp8 repository (`--quantize fp8` format). Each forced variant loads it with a
clock that makes its kernel the fastest, in memory mode, so every 2:4 layer runs that kernel (fp16 dense: every
alternative "slower"); `auto` loads it with the real CUDA timer in dispatch mode, i.e. what `twofour serve`
does, and its decision table is returned for printing. The variants then take turns call by call.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from server.runtime.gpu_choice import FP8_DENSE, FP8_SPARSE
from server.runtime.gpu_decision import DENSE, SPARSE, LayerShape, format_table

FORCED = {"fp16 dense": None, "fp16 2:4": SPARSE, "FP8 dense": FP8_DENSE, "FP8 2:4": FP8_SPARSE}


def forced_clock(kernel: str | None) -> Any:
    """A Timer under which `kernel` wins everywhere (None: fp16 dense wins)."""
    def timer(shape: LayerShape, name: str, rows: int) -> float:
        if name == DENSE:
            return 1.0
        return 0.5 if name == kernel else 2.0
    return timer


def _write(root: Path, hidden: int, blocks: int, sequence: int, max_batch: int) -> tuple[Path, Any]:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from server.artifacts import save_weights
    from tests.gpu.models import TokenEncoder, write_token_encoder

    model = TokenEncoder(hidden, blocks, vocab=1000)
    write_token_encoder(root, "enc", model, hidden, sequence, max_batch=max_batch)
    version = root / "enc" / "1"
    save_weights(dict(model.state_dict()), model.sparse_names(), version / "weights.safetensors", "fp8")
    config = text_format.Parse((root / "enc" / "config.pbtxt").read_text(), mc.ModelConfig())
    return version, config


def _load(variant: str, version: Path, config: Any, device: torch.device, smoke: bool) -> Any:
    from server.runtime import gpu, gpu_graphs, gpu_timing
    from server.runtime.gpu_cusparselt import AlgorithmCache, DirectCusparseltKernel
    from server.runtime.gpu_quant import (
        Fp8DenseKernel,
        QuantSparseKernel,
        emulated_cslt_compress,
        emulated_cslt_sparse_mm,
        emulated_scaled_mm,
    )

    if smoke:  # CPU: emulated kernels, no graphs, fp16 on CPU; plumbing only
        emulate = {"compress": emulated_cslt_compress, "mm": emulated_cslt_sparse_mm,
                   "algorithms": AlgorithmCache(lambda *args: 0)}
        quant = {FP8_DENSE: lambda layer, bias: Fp8DenseKernel(layer, bias, torch.float16, device,
                                                               scaled_mm=emulated_scaled_mm),
                 FP8_SPARSE: lambda layer, bias: QuantSparseKernel(layer, bias, torch.float16, device, **emulate)}

        def factory(weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
            return DirectCusparseltKernel(weight, bias, **emulate)
        return gpu.GpuRuntime(version, config, device=device, dtype=torch.float16, keep_dense=variant == "auto",
                              backend="cusparselt", sparse_factory=factory, quant_kernels=quant,
                              timer=forced_clock(FORCED.get(variant, FP8_SPARSE)))
    if variant == "auto":
        return gpu.create(version, config, "cuda", keep_dense=True)
    capability = torch.cuda.get_device_capability()
    backend = gpu_timing.available_backend(capability)
    quant = gpu_timing.quant_factories(capability, backend, torch.float16, device)
    return gpu.GpuRuntime(version, config, device=device, dtype=torch.float16, keep_dense=False, backend=backend,
                          sparse_factory=gpu_timing.semi_structured_factory(backend), quant_kernels=quant,
                          timer=forced_clock(FORCED[variant]), capture=gpu_graphs.cuda_capture())


def run_e2e(hidden: int, blocks: int, sequence: int, batches: list[int], calls: int, device: torch.device,
            smoke: bool) -> tuple[dict[str, list[float]], str]:
    """Median ms per batch size for each variant, and auto's decision table."""
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="twofour-bench-h-") as tmp:
        version, config = _write(Path(tmp), hidden, blocks, sequence, batches[-1])
        runtimes = {}
        for variant in [*FORCED, "auto"]:
            try:
                runtimes[variant] = _load(variant, version, config, device, smoke)
            except (RuntimeError, ValueError) as exc:
                print(f"  {variant}: could not load: {str(exc).splitlines()[0][:200]}")
        table = ""
        if "auto" in runtimes:
            details = runtimes["auto"].describe().details
            layers = [x for x in details.get("layers", []) if ".0." in x["layer"] or ".1." in x["layer"]]
            table = format_table(layers) + f"\n  whole-model check: {details.get('bucket_check')}"
        for batch in batches:
            tokens = {"TOKENS": torch.randint(0, 1000, (batch, sequence))}
            samples: dict[str, list[float]] = {v: [] for v in runtimes}
            for runtime in runtimes.values():
                runtime.infer(tokens)
            for _ in range(calls):
                for variant, runtime in runtimes.items():  # interleaved: drift hits every variant alike
                    start = time.perf_counter()
                    runtime.infer(tokens)
                    samples[variant].append(time.perf_counter() - start)
            for variant in runtimes:
                times.setdefault(variant, []).append(statistics.median(samples[variant]) * 1e3)
        for runtime in runtimes.values():
            runtime.close()
    return times, table
