"""Which non-fp16-dense kernel a 2:4 layer competes with dense fp16: fp16 2:4, FP8 dense, FP8 2:4 or INT8 2:4.

The per-layer choice runs in two steps, both by measurement through the injected timer (gpu_decision.Timer):
1. `rank_alternatives` times every candidate the layer may use at every row bucket and keeps the one with the best
   geometric-mean speedup over fp16 dense (a candidate whose kernel raises while timing drops out, with why);
2. gpu_decision.decide_layer then chooses between fp16 dense and that winner, per bucket or once, with its
   margin, exactly as for fp16 2:4 alone -- so the dispatch, the whole-model bucket check and the memory rules
   are unchanged, and the report says which alternative ran.
Candidates follow what the repository holds (FP8 kernels only for `--quantize fp8`, whose accuracy the converter
measured; INT8 2:4 only for `--quantize int8`) and what the GPU runs: `_scaled_mm` FP8 needs sm_89+, cuSPARSELt
FP8 sm_90+, cuSPARSELt INT8 sm_80+. Pure logic: tested on CPU with a deterministic clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from server.runtime.gpu_decision import DENSE, SPARSE, LayerShape, Timer
from server.runtime.gpu_rules import kernel_shape_problem

FP8_DENSE, FP8_SPARSE, INT8_SPARSE = "fp8_dense", "fp8_2_4", "int8_2_4"  # same names as gpu_quant's
KERNEL_LABELS = {DENSE: "fp16 dense", SPARSE: "fp16 2:4", FP8_DENSE: "FP8 dense", FP8_SPARSE: "FP8 2:4",
                 INT8_SPARSE: "INT8 2:4"}
QUANT_SCHEME = {FP8_DENSE: "fp8", FP8_SPARSE: "fp8", INT8_SPARSE: "int8"}  # the repository each one needs
QUANT_MULTIPLE = {FP8_DENSE: (16, 16), FP8_SPARSE: (32, 32), INT8_SPARSE: (32, 32)}  # (out, in) multiples


def candidate_kernels(scheme: str, capability: tuple[int, int], backend: str) -> list[str]:
    """The alternatives to fp16 dense a layer of a repository quantized as `scheme` may use on this GPU."""
    out = [SPARSE] if backend != "none" else []
    cusparselt = backend == "cusparselt"
    if scheme == "fp8" and capability >= (8, 9):
        out.append(FP8_DENSE)
    if scheme == "fp8" and capability >= (9, 0) and cusparselt:
        out.append(FP8_SPARSE)
    if scheme == "int8" and capability >= (8, 0) and cusparselt:
        out.append(INT8_SPARSE)
    return out


def quant_shape_problem(kernel: str, out_features: int, in_features: int) -> str | None:
    """Why a quantized kernel cannot take this weight shape (torch's cuSPARSELt fp8/int8 constraints are 32x32;
    _scaled_mm needs multiples of 16), or None."""
    rows, cols = QUANT_MULTIPLE[kernel]
    if out_features % rows or in_features % cols:
        return f"{KERNEL_LABELS[kernel]} needs out/in multiples of {rows}/{cols}, got {out_features}x{in_features}"
    return None


def layer_candidates(shape: LayerShape, dtype: torch.dtype, backend: str, scheme: str | None,
                     quant_kernels: list[str]) -> tuple[list[str], dict[str, str]]:
    """The kernels one layer may race against fp16 dense (stored as `scheme`, None when unquantized, on a GPU
    that runs `quant_kernels`), and why the others may not."""
    candidates: list[str] = []
    problems: dict[str, str] = {}
    problem = kernel_shape_problem(shape.out_features, shape.in_features, dtype, backend)
    if problem is None:
        candidates.append(SPARSE)
    else:
        problems[SPARSE] = problem
    for kernel in quant_kernels:
        if QUANT_SCHEME[kernel] != scheme:
            continue
        problem = quant_shape_problem(kernel, shape.out_features, shape.in_features)
        if problem is None:
            candidates.append(kernel)
        else:
            problems[kernel] = problem
    return candidates, problems


@dataclass
class Ranking:
    best: str | None  # the alternative that goes on to decide_layer; None when no candidate could be timed
    speedups: dict[str, float] = field(default_factory=dict)  # geometric-mean fp16-dense/candidate time
    dropped: dict[str, str] = field(default_factory=dict)  # candidate -> why it is not considered

    def as_dict(self) -> dict[str, object]:
        return {"best": self.best, "speedups": {k: round(v, 4) for k, v in self.speedups.items()},
                "dropped": dict(self.dropped)}


def _geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values and min(values) > 0 else 0.0


def rank_alternatives(shape: LayerShape, rows: list[int], timer: Timer, candidates: list[str],
                      problems: dict[str, str] | None = None) -> Ranking:
    """Time fp16 dense and each candidate at every row count; the best geometric-mean speedup wins (ties keep
    the earlier candidate: fp16 2:4 first, as it changes no numerics beyond the repository's)."""
    ranking = Ranking(best=None, dropped=dict(problems or {}))
    measured = sorted(set(rows))
    if not measured:
        return ranking
    dense = {r: timer(shape, DENSE, r) for r in measured}
    for kernel in candidates:
        if kernel in ranking.dropped:
            continue
        try:
            times = {r: timer(shape, kernel, r) for r in measured}
        except RuntimeError as exc:  # a kernel refusing this shape/dtype on this GPU: out of the race, say why
            what = "2:4 kernel" if kernel == SPARSE else KERNEL_LABELS[kernel]
            ranking.dropped[kernel] = f"{what} failed while timing: {str(exc).strip().splitlines()[0][:200]}"
            continue
        ranking.speedups[kernel] = _geometric_mean([dense[r] / times[r] for r in measured if times[r] > 0])
    if ranking.speedups:
        ranking.best = max(ranking.speedups, key=lambda k: (ranking.speedups[k], -candidates.index(k)))
    return ranking


class AliasTimer:
    """The timer decide_layer sees: its SPARSE is the ranking's winner."""

    def __init__(self, timer: Timer, alternative: str) -> None:
        self._timer, self.alternative = timer, alternative

    def __call__(self, shape: LayerShape, kernel: str, rows: int) -> float:
        return self._timer(shape, self.alternative if kernel == SPARSE else kernel, rows)
