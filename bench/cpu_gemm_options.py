"""The CPU GEMM options issue 16 considered, on one MiniLM-size linear (4096 tokens x 384 -> 1536), 2 threads:
fp32; bf16; weight-only int8 (`aten._weight_int8pack_mm`, bf16 activations); int8 x int8 with per-token
activation scales (`torch._int_mm`); fbgemm's dynamic quantised linear with per-channel and per-tensor weights.
Prints median ms and the worst per-row cosine to fp32 (random Gaussian data; a model's outliers are harsher).

    nice -n 10 python bench/cpu_gemm_options.py
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch


def median_ms(f: Callable[[], torch.Tensor], n: int = 20) -> float:
    f()
    f()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return sorted(times)[n // 2] * 1e3


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    m, k, n = 4096, 384, 1536
    x, w, b = torch.randn(m, k), torch.randn(n, k) * 0.05, torch.randn(n) * 0.1
    ref = torch.nn.functional.linear(x, w, b)
    wb, bb = w.bfloat16(), b.bfloat16()
    scale = w.abs().amax(1) / 127
    wq = torch.round(w / scale[:, None]).to(torch.int8)
    wqt = wq.t().contiguous()

    def per_token() -> torch.Tensor:
        sx = x.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127
        return torch._int_mm(torch.round(x / sx).to(torch.int8), wqt).float() * sx * scale + b

    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
    linear = torch.nn.Sequential(torch.nn.Linear(k, n))
    linear[0].weight.data, linear[0].bias.data = w, b
    per_channel = quantize_dynamic(linear, {torch.nn.Linear: per_channel_dynamic_qconfig})
    per_tensor = quantize_dynamic(linear, {torch.nn.Linear: default_dynamic_qconfig})
    options: dict[str, Callable[[], torch.Tensor]] = {
        "fp32": lambda: torch.nn.functional.linear(x, w, b),
        "bf16": lambda: torch.nn.functional.linear(x.bfloat16(), wb, bb).float(),
        "int8 weight-only, bf16 act": lambda: (torch.ops.aten._weight_int8pack_mm(x.bfloat16(), wq, scale.bfloat16())
                                               + bb).float(),
        "int8 per-token act (_int_mm)": per_token,
        "fbgemm dynamic, per-channel w": lambda: per_channel(x),
        "fbgemm dynamic, per-tensor w": lambda: per_tensor(x),
    }
    print(f"{'option':<30} {'ms':>8} {'x fp32':>7} {'min cos':>9}")
    base = None
    with torch.inference_mode():
        for name, f in options.items():
            try:
                ms = median_ms(f)
            except RuntimeError as exc:
                print(f"{name:<30} unavailable: {str(exc).splitlines()[0][:60]}")
                continue
            base = base or ms
            cos = torch.nn.functional.cosine_similarity(f().float(), ref, dim=1).min().item()
            print(f"{name:<30} {ms:>8.1f} {base / ms:>7.2f} {cos:>9.5f}")


if __name__ == "__main__":
    main()
