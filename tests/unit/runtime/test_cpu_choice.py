"""The auto decision, played with an injected clock: each candidate's forward advances the clock by the time that
precision takes on the imagined CPU, so the choice is checked exactly, with no real timing in the test."""

from __future__ import annotations

import torch

from server.runtime.cpu_choice import Budget, agreement, choose

BATCH = {"x": torch.ones(4, 8)}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def forwards(clock: FakeClock, seconds: dict[str, float], noise: dict[str, float] | None = None):
    """One forward per precision: fp32 returns the reference, others the reference plus `noise` (relative)."""
    base = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    perturb = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))

    def make(precision: str):
        def run(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            clock.now += seconds[precision]
            scale = (noise or {}).get(precision, 0.0)
            return {"y": base + scale * base.norm(dim=1, keepdim=True) * perturb / perturb.norm(dim=1, keepdim=True)}
        return run
    return {p: make(p) for p in seconds}


def test_a_cpu_where_bf16_is_slower_keeps_fp32() -> None:
    clock = FakeClock()
    decision = choose(forwards(clock, {"fp32": 1.0, "bf16": 1.4, "int8": 2.0}), BATCH, [4, 128], Budget(),
                      clock=clock)
    assert decision.chosen == "fp32"
    by = {m.precision: m for m in decision.candidates}
    assert by["bf16"].speedup == round(1.0 / 1.4, 3) and by["int8"].speedup == 0.5


def test_a_faster_candidate_within_budget_is_chosen() -> None:
    clock = FakeClock()
    decision = choose(forwards(clock, {"fp32": 1.0, "bf16": 0.3, "int8": 0.5}), BATCH, [4, 128], Budget(),
                      clock=clock)
    assert decision.chosen == "bf16" and "3.333x" in decision.reason


def test_a_candidate_outside_the_agreement_budget_is_never_chosen_nor_timed() -> None:
    clock = FakeClock()
    # int8 is 10x faster but its rows sit at cosine ~0.995 (relative error 0.1 orthogonal to the row)
    decision = choose(forwards(clock, {"fp32": 1.0, "bf16": 0.8, "int8": 0.1}, {"int8": 0.1}), BATCH, [4, 128],
                      Budget(), clock=clock)
    by = {m.precision: m for m in decision.candidates}
    assert not by["int8"].within_budget and by["int8"].median_ms is None and by["int8"].min_cosine < 0.999
    assert decision.chosen == "bf16"


def test_a_gain_below_the_margin_keeps_fp32() -> None:
    clock = FakeClock()
    decision = choose(forwards(clock, {"fp32": 1.0, "bf16": 0.95}), BATCH, [4, 128], Budget(), clock=clock)
    assert decision.chosen == "fp32" and "below the 1.1x" in decision.reason


def test_timing_stops_at_the_time_budget() -> None:
    clock = FakeClock()
    decision = choose(forwards(clock, {"fp32": 2.0, "bf16": 1.0}), BATCH, [4, 128], Budget(time_budget_s=5.0),
                      clock=clock)
    assert decision.rounds == 2  # 3 s a round: the second round ends past 5 s, no third starts


def test_agreement_is_per_row_over_every_float_output_and_skips_integers() -> None:
    reference = {"a": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "ids": torch.tensor([1, 2])}
    other = {"a": torch.tensor([[1.0, 0.0], [1.0, 1.0]]), "ids": torch.tensor([9, 9])}
    mean, low = agreement(reference, other)
    assert abs(low - 0.5 ** 0.5) < 1e-12 and abs(mean - (1 + 0.5 ** 0.5) / 2) < 1e-12
    assert agreement({"z": torch.zeros(2, 3)}, {"z": torch.zeros(2, 3)}) == (1.0, 1.0)


def test_fp32_slowed_by_other_load_in_a_minority_of_rounds_does_not_hand_the_win_to_a_slower_candidate() -> None:
    clock = FakeClock()
    calls = {"n": 0}
    base = forwards(clock, {"fp32": 1.0, "bf16": 1.05})

    def fp32(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        out = base["fp32"](batch)
        if calls["n"] in (2, 3):  # call 1 is the agreement run; timed rounds 0 and 1 of 5 run 3x slower
            clock.now += 2.0
        return out

    decision = choose({"fp32": fp32, "bf16": base["bf16"]}, BATCH, [4, 128], Budget(time_budget_s=60), clock=clock)
    assert decision.rounds == 5 and decision.chosen == "fp32"
    assert next(m for m in decision.candidates if m.precision == "bf16").speedup == round(1 / 1.05, 3)
