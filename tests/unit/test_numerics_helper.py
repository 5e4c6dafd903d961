"""tests/support/numerics.py: the fp32 GEMM bound holds across batch compositions and thread counts, and it is
tight enough to catch real errors (a wrong row, weights rounded to fp16, a dropped weight)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.models import Slow, SmallMLP, prune_2_4
from tests.support.numerics import EPS32, SLOW, SMALL_MLP, Fp32Gemm


def _run(module: torch.nn.Module, x: np.ndarray, threads: int) -> np.ndarray:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()
    finally:
        torch.set_num_threads(before)


def test_the_bound_is_the_textbook_one() -> None:
    bound = Fp32Gemm(k=1000, depth=3)
    u = 2.0 ** -24
    assert EPS32 == 2 * u
    assert bound.rtol == pytest.approx(3 * 2 * 1000 * u / (1 - 1000 * u))
    assert bound.atol(np.array([0.1, -0.2])) == bound.rtol  # scale floor 1
    assert bound.atol(np.array([5.0, -8.0])) == pytest.approx(8 * bound.rtol)


@pytest.mark.parametrize(("module", "width", "bound"), [(SmallMLP(seed=0), 16, SMALL_MLP), (Slow(depth=8), 1024,
                                                                                          Fp32Gemm(1024, 8))])
def test_rows_computed_in_other_batches_and_thread_counts_pass(module: torch.nn.Module, width: int,
                                                               bound: Fp32Gemm) -> None:
    x = np.random.default_rng(0).standard_normal((40, width)).astype(np.float32)
    eager = _run(module, x[:4], threads=2)
    for rows in (4, 5, 17, 40):  # the 4 rows at the top of batches of several sizes, as the batcher merges them
        served = _run(module, x[:rows], threads=1)[:4]
        bound.assert_close(served, eager)


def test_real_errors_fail() -> None:
    module = SmallMLP(seed=0)
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    eager = _run(module, x, threads=1)
    with pytest.raises(AssertionError, match="fp32 GEMM bound"):  # answers of the wrong rows
        SMALL_MLP.assert_close(eager[::-1], eager)
    assert not SMALL_MLP.close(eager[:, :3], eager)  # a shape mix-up is never close
    rounded = SmallMLP(seed=0)
    with torch.no_grad():  # a dtype bug: weights through fp16 and back
        for p in rounded.parameters():
            p.copy_(p.half().float())
    assert not SMALL_MLP.close(_run(rounded, x, threads=1), eager)
    dropped = SmallMLP(seed=0)
    with torch.no_grad():  # one more weight pruned than the 2:4 pattern keeps (a compression bug)
        dropped.hidden.weight.copy_(prune_2_4(dropped.hidden.weight))
        row, col = divmod(int(dropped.hidden.weight.abs().argmax()), 16)
        dropped.hidden.weight[row, col] = 0.0
    assert not SMALL_MLP.close(_run(dropped, x, threads=1), eager)


def test_the_deep_model_bound_still_catches_a_wrong_row() -> None:
    """64 layers make the Slow bound loose (7.8e-3): it catches rows mixed up between requests, which is what the
    drain and limit tests that use it must see; fp16-rounded weights (2e-4 here) pass it, so numerics proper are
    checked on SmallMLP above."""
    module = Slow(depth=64)
    x = np.random.default_rng(2).standard_normal((4, 1024)).astype(np.float32)
    eager = _run(module, x, threads=1)
    assert not SLOW.close(eager[::-1], eager)
    assert not SLOW.close(eager + 0.05 * np.abs(eager).max(), eager)
