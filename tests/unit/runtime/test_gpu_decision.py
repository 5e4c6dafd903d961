"""Per-layer sparse/dense choice, driven by an injected, deterministic timer."""

from __future__ import annotations

from server.runtime.gpu_decision import (
    DENSE,
    DISPATCH,
    SPARSE,
    CachedTimer,
    LayerShape,
    decide_layer,
    format_table,
)

SHAPE = LayerShape(3072, 768)


def gemm_like(shape: LayerShape, kernel: str, rows: int) -> float:
    """A plausible clock: dense costs ~rows; sparse pads to 16 rows, does half the math, plus fixed overhead."""
    work = shape.out_features * shape.in_features * 1e-12
    if kernel == DENSE:
        return 2e-6 + work * rows
    return 6e-6 + work * max(rows, 16) * 0.55


def test_dispatch_mode_keeps_both_when_the_winner_depends_on_batch() -> None:
    rows = {1: 1, 2: 2, 8: 8, 64: 64, 256: 256}
    decision = decide_layer("l", SHAPE, rows, gemm_like, keep_dense=True)
    assert decision.kernel == DISPATCH
    by_batch = {b.batch: b.kernel for b in decision.buckets}
    assert by_batch == {1: DENSE, 2: DENSE, 8: DENSE, 64: SPARSE, 256: SPARSE}
    assert decision.sparse_rows() == [64, 256]
    big = decision.buckets[-1]
    assert big.dense_us == gemm_like(SHAPE, DENSE, 256) * 1e6 and big.speedup > 1.5


def test_dispatch_mode_collapses_to_one_kernel_when_one_always_wins() -> None:
    assert decide_layer("l", SHAPE, {64: 64, 128: 128}, gemm_like, keep_dense=True).kernel == SPARSE
    assert decide_layer("l", SHAPE, {1: 1, 2: 2}, gemm_like, keep_dense=True).kernel == DENSE


def test_memory_mode_chooses_once_by_geometric_mean() -> None:
    mostly_large = decide_layer("l", SHAPE, {1: 1, 256: 256, 1024: 1024, 2048: 2048, 4096: 4096}, gemm_like,
                                keep_dense=False)
    assert mostly_large.kernel == SPARSE
    assert all(b.kernel == SPARSE for b in mostly_large.buckets)  # chosen once: every bucket runs sparse
    assert "clears" in mostly_large.reason
    mostly_small = decide_layer("l", SHAPE, {1: 1, 2: 2, 4: 4, 256: 256}, gemm_like, keep_dense=False)
    assert mostly_small.kernel == DENSE and all(b.kernel == DENSE for b in mostly_small.buckets)
    assert "misses" in mostly_small.reason


def test_ties_and_noise_below_the_margin_stay_dense() -> None:
    def almost(shape: LayerShape, kernel: str, rows: int) -> float:
        return 1.0 if kernel == DENSE else 0.98  # 2 % faster: under the 3 % margin

    decision = decide_layer("l", SHAPE, {8: 8, 16: 16}, almost, keep_dense=True)
    assert decision.kernel == DENSE
    assert decide_layer("l", SHAPE, {8: 8}, almost, keep_dense=True, margin=0.01).kernel == SPARSE


def test_a_shape_problem_skips_timing() -> None:
    def never(shape: LayerShape, kernel: str, rows: int) -> float:
        raise AssertionError("an ineligible layer must not be timed")

    decision = decide_layer("l", LayerShape(24, 64), {1: 1}, never, keep_dense=True, problem="out_features 24 ...")
    assert decision.kernel == DENSE and decision.reason == "out_features 24 ..." and not decision.buckets


def test_unprobed_layer_stays_dense() -> None:
    assert "never ran" in decide_layer("l", SHAPE, {}, gemm_like, keep_dense=True).reason


def test_batches_with_the_same_rows_are_timed_once() -> None:
    timer = CachedTimer(gemm_like)
    decision = decide_layer("a", SHAPE, {1: 128, 2: 128, 4: 256}, timer, keep_dense=True)
    assert [(b.batch, b.rows) for b in decision.buckets] == [(1, 128), (4, 256)]
    decide_layer("b", SHAPE, {1: 128, 4: 256}, timer, keep_dense=True)  # an identical block: all cached
    assert timer.calls == 4


def test_table_lists_each_layer_and_bucket() -> None:
    layers = [decide_layer("enc.0.fc1", SHAPE, {1: 1, 256: 256}, gemm_like, keep_dense=True).as_dict(),
              decide_layer("head", LayerShape(2, 768), {}, gemm_like, keep_dense=True, problem="too small").as_dict()]
    text = format_table(layers)
    assert text.count("enc.0.fc1") == 2 and "3072x768" in text and "(too small)" in text
    assert layers[0]["buckets"][1]["speedup"] > 1.0 and layers[0]["kernel"] == DISPATCH
