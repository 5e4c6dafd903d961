"""`cpu_precision: auto`: keep the fastest CPU precision whose outputs agree with fp32, measured at load.

Why measured: bf16 is several times faster than fp32 on a CPU with AMX, a little faster with avx512_bf16 alone, and
slower where it is emulated; fbgemm's int8 is fast on any x86 CPU but loses agreement on models whose activations
have outliers (MiniLM). Neither the speed nor the agreement can be read off the CPU flags or the model's type.

How: every candidate runs once on the model's own batch shape against fp32 (agreement: per-row cosine on every
floating output, rows = all leading dims). A candidate outside the budget is never timed and never chosen. The rest
are timed in interleaved rounds (fp32, bf16, int8, fp32, ...), and a candidate's speedup is the median over rounds
of fp32's time over its own in the same round, so a burst of load from other processes cancels out. A candidate
replaces fp32 only when it is at least `min_speedup` (1.1x) faster: noise must never pick a slower precision. The
rounds stop at `time_budget_s`, so a big model still loads in bounded time (at least one timed round always runs).
The clock is injectable, so a test can play "a CPU where bf16 is slower" exactly.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

BatchForward = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
Clock = Callable[[], float]

MIN_COSINE = 0.999  # per row, every floating output, against fp32
MIN_SPEEDUP = 1.1  # median fp32 time / median candidate time needed to leave fp32
TIME_BUDGET_S = 6.0  # timing rounds stop once this much time went into them
MAX_ROUNDS = 5


@dataclass(frozen=True)
class Budget:
    min_cosine: float = MIN_COSINE
    min_speedup: float = MIN_SPEEDUP
    time_budget_s: float = TIME_BUDGET_S


@dataclass
class Measurement:
    precision: str
    mean_cosine: float = 1.0
    min_cosine: float = 1.0
    within_budget: bool = True
    median_ms: float | None = None  # None: not timed (outside the budget, or only one candidate)
    speedup: float | None = None  # fp32 median / this median
    converted_layers: int = 0


@dataclass
class Decision:
    requested: str
    chosen: str
    reason: str
    shape: list[int]  # rows, variable-dim length the candidates ran at
    budget: dict[str, float]
    candidates: list[Measurement] = field(default_factory=list)
    rounds: int = 0

    def as_details(self) -> dict[str, Any]:
        return asdict(self)


def agreement(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Mean and minimum per-row cosine over every floating output (a row: one sample, or one token of one)."""
    cosines = []
    for name, want in reference.items():
        if not want.is_floating_point():
            continue
        have = other[name]
        rows = want.reshape(-1, want.shape[-1]) if want.dim() > 1 else want.reshape(1, -1)
        got = have.reshape(rows.shape).double()
        cosine = torch.nn.functional.cosine_similarity(rows.double(), got, dim=1, eps=1e-12)
        both_zero = (rows.abs().amax(1) == 0) & (got.abs().amax(1) == 0)  # an all-zero row agrees with itself
        cosines.append(torch.where(both_zero, torch.ones_like(cosine), cosine))
    if not cosines:
        return 1.0, 1.0
    joined = torch.cat(cosines).nan_to_num(nan=-1.0)
    return float(joined.mean()), float(joined.min())


def measure_agreement(forwards: dict[str, BatchForward], batch: dict[str, torch.Tensor],
                      budget: Budget) -> tuple[list[Measurement], dict[str, torch.Tensor]]:
    """One call of each candidate against fp32's (`forwards` holds "fp32"); the reference outputs too."""
    with torch.inference_mode():
        reference = forwards["fp32"](dict(batch))
        measurements = [Measurement("fp32")]
        for precision, forward in forwards.items():
            if precision == "fp32":
                continue
            mean, low = agreement(reference, forward(dict(batch)))
            measurements.append(Measurement(precision, round(mean, 6), round(low, 6), low >= budget.min_cosine))
    return measurements, reference


def time_candidates(forwards: dict[str, BatchForward], batch: dict[str, torch.Tensor], budget: Budget,
                    clock: Clock = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each forward, one sample per interleaved round, rounds within the time budget."""
    samples: dict[str, list[float]] = {name: [] for name in forwards}
    started = clock()
    rounds = 0
    with torch.inference_mode():
        while rounds < MAX_ROUNDS and (rounds == 0 or clock() - started < budget.time_budget_s):
            for name, forward in forwards.items():
                begin = clock()
                forward(dict(batch))
                samples[name].append(clock() - begin)
            rounds += 1
    return samples


def paired_speedup(fp32: list[float], other: list[float]) -> float:
    """Median over rounds of fp32's time / the candidate's in the same round: a burst of load from elsewhere
    slows both calls of a round alike, so it cancels in the ratio (medians taken apart would not pair it)."""
    return statistics.median(f / max(o, 1e-12) for f, o in zip(fp32, other, strict=True))


def choose(forwards: dict[str, BatchForward], batch: dict[str, torch.Tensor], shape: list[int],
           budget: Budget = Budget(), clock: Clock = time.perf_counter,
           converted: dict[str, int] | None = None) -> Decision:
    """The auto decision among `forwards` (fp32 plus the candidates built for this model)."""
    measurements, _ = measure_agreement(forwards, batch, budget)
    for m in measurements:
        m.converted_layers = (converted or {}).get(m.precision, 0)
    budget_figures = {"min_cosine": budget.min_cosine, "min_speedup": budget.min_speedup,
                      "time_budget_s": budget.time_budget_s}
    usable = {m.precision: forwards[m.precision] for m in measurements if m.within_budget}
    if len(usable) == 1:
        return Decision("auto", "fp32", "no other precision agrees with fp32 within the budget", shape,
                        budget_figures, measurements)
    samples = time_candidates(usable, batch, budget, clock)
    rounds = len(samples["fp32"])
    for m in measurements:
        if m.precision in samples:
            m.median_ms = round(statistics.median(samples[m.precision]) * 1e3, 3)
            m.speedup = round(paired_speedup(samples["fp32"], samples[m.precision]), 3)
    fastest = max((m for m in measurements if m.speedup is not None and m.precision != "fp32"),
                  key=lambda m: m.speedup or 0.0)
    if (fastest.speedup or 0.0) < budget.min_speedup:
        reason = (f"fp32 kept: {fastest.precision} ran at {fastest.speedup}x fp32, below the "
                  f"{budget.min_speedup}x needed")
        return Decision("auto", "fp32", reason, shape, budget_figures, measurements, rounds)
    reason = (f"{fastest.precision}: {fastest.speedup}x fp32 at {shape[0]} rows, min cosine {fastest.min_cosine}")
    return Decision("auto", fastest.precision, reason, shape, budget_figures, measurements, rounds)
