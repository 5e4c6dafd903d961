"""Per-layer sparse/dense choice by measurement, as pure logic over an injected timer.

2:4 kernels lose to dense GEMMs at small row counts (activations are padded to 8/16 rows and the sparse kernels'
tiles are tuned for large problems), so each 2:4 layer is timed both ways at the row counts the batcher will
actually produce, and the faster kernel is kept per layer and bucket. The timer is a parameter so the logic is
tested on CPU with a deterministic clock; gpu_timing.py supplies the CUDA-event one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

DENSE, SPARSE, DISPATCH = "dense", "sparse", "dispatch"
DEFAULT_MARGIN = 0.03  # sparse must beat dense by 3 %: ties go dense, so no bucket ever gets slower by noise


@dataclass(frozen=True)
class LayerShape:
    out_features: int
    in_features: int


# (shape, "dense" | "sparse", rows) -> seconds per call (a median, measured by the caller's clock)
Timer = Callable[[LayerShape, str, int], float]


@dataclass
class BucketChoice:
    """One batch bucket of one layer: what each kernel took and which one runs."""

    batch: int  # batch size that produced these rows (the first one, when several share a row count)
    rows: int  # rows the layer's GEMM sees (batch x tokens for sequence models)
    dense_us: float
    sparse_us: float
    kernel: str  # DENSE or SPARSE: what actually runs for this bucket

    @property
    def speedup(self) -> float:
        return self.dense_us / self.sparse_us if self.sparse_us > 0 else 0.0


@dataclass
class LayerDecision:
    """A 2:4 layer's kernel: SPARSE (sparse weight only), DENSE, or DISPATCH (both weights, chosen by rows)."""

    layer: str
    shape: LayerShape
    kernel: str
    reason: str
    buckets: list[BucketChoice] = field(default_factory=list)
    alternative: str = SPARSE  # the kernel SPARSE stands for: fp16 2:4, or an FP8/INT8 one (gpu_choice.py)
    ranking: dict[str, Any] | None = None  # gpu_choice.Ranking.as_dict(): every candidate's speedup

    def sparse_rows(self) -> list[int]:
        return [b.rows for b in self.buckets if b.kernel == SPARSE]

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "out_features": self.shape.out_features, "in_features": self.shape.in_features,
                "kernel": self.kernel, "reason": self.reason, "alternative": self.alternative,
                "ranking": self.ranking,
                "buckets": [{**asdict(b), "speedup": round(b.speedup, 4)} for b in self.buckets]}


def _geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values and min(values) > 0 else 0.0


def decide_layer(layer: str, shape: LayerShape, rows_by_batch: dict[int, int], timer: Timer, keep_dense: bool,
                 margin: float = DEFAULT_MARGIN, problem: str | None = None) -> LayerDecision:
    """Time one layer at each bucket's row count and choose its kernel.

    keep_dense (dispatch mode): each bucket runs whichever kernel was faster by `margin`; both weights stay on the
    GPU only if the choice actually differs between buckets. Otherwise (memory mode) the layer is chosen once:
    sparse when the geometric mean speedup over the buckets clears the margin, dense for every bucket if not.
    """
    if problem is not None:
        return LayerDecision(layer, shape, DENSE, problem)
    if not rows_by_batch:
        return LayerDecision(layer, shape, DENSE, "the layer never ran while probing the model at load")
    buckets: list[BucketChoice] = []
    seen: set[int] = set()
    for batch in sorted(rows_by_batch):
        rows = rows_by_batch[batch]
        if rows in seen:
            continue
        seen.add(rows)
        dense, sparse = timer(shape, DENSE, rows), timer(shape, SPARSE, rows)
        faster = SPARSE if sparse > 0 and dense / sparse >= 1.0 + margin else DENSE
        buckets.append(BucketChoice(batch, rows, dense * 1e6, sparse * 1e6, faster))
    wins = [b.kernel == SPARSE for b in buckets]
    if keep_dense:
        if all(wins):
            return LayerDecision(layer, shape, SPARSE, "sparse is faster at every measured batch size", buckets)
        if not any(wins):
            return LayerDecision(layer, shape, DENSE, "dense is faster at every measured batch size", buckets)
        return LayerDecision(layer, shape, DISPATCH, "sparse wins at large batches only: kept both weights", buckets)
    mean = _geometric_mean([b.speedup for b in buckets])
    kernel = SPARSE if mean >= 1.0 + margin else DENSE
    for bucket in buckets:
        bucket.kernel = kernel
    verdict = "clears" if kernel == SPARSE else "misses"
    return LayerDecision(layer, shape, kernel,
                         f"chosen once (memory mode): geometric-mean speedup {mean:.2f}x {verdict} {1 + margin:.2f}x",
                         buckets)


class CachedTimer:
    """Times each (shape, kernel, rows) once: identical blocks (12 BERT layers) share one measurement."""

    def __init__(self, timer: Timer) -> None:
        self._timer = timer
        self._cache: dict[tuple[LayerShape, str, int], float] = {}
        self.calls = 0

    def __call__(self, shape: LayerShape, kernel: str, rows: int) -> float:
        key = (shape, kernel, rows)
        if key not in self._cache:
            self.calls += 1
            self._cache[key] = self._timer(shape, kernel, rows)
        return self._cache[key]


def format_table(layers: list[dict[str, Any]]) -> str:
    """The decision table as text (server log, `twofour inspect`): one line per layer and bucket."""
    lines = [f"{'layer':<40} {'shape':>11} {'kernel':>8} {'alt':>8} {'batch':>6} {'rows':>7} {'dense us':>10} "
             f"{'alt us':>10} {'speedup':>8} {'runs':>6}"]
    for layer in layers:
        shape = f"{layer['out_features']}x{layer['in_features']}"
        alt = layer.get("alternative", SPARSE)
        if not layer["buckets"]:
            lines.append(f"{layer['layer']:<40} {shape:>11} {layer['kernel']:>8}  ({layer['reason']})")
        for b in layer["buckets"]:
            runs = alt if b["kernel"] == SPARSE else DENSE
            lines.append(f"{layer['layer']:<40} {shape:>11} {layer['kernel']:>8} {alt:>8} {b['batch']:>6} "
                         f"{b['rows']:>7} {b['dense_us']:>10.1f} {b['sparse_us']:>10.1f} {b['speedup']:>7.2f}x "
                         f"{runs:>6}")
        ranking = layer.get("ranking")
        if ranking and (ranking["speedups"] or ranking["dropped"]):
            race = ", ".join(f"{k} {v:.2f}x" for k, v in ranking["speedups"].items())
            dropped = "; ".join(f"{k}: {v}" for k, v in ranking["dropped"].items())
            lines.append(f"{'':<40} candidates (geo-mean vs fp16 dense): {race or '-'}"
                         f"{' | not considered: ' + dropped if dropped else ''}")
    return "\n".join(lines)
