"""The length-aware batching rule (plan_padded.py) on the pure planner: budget, grouping, no starvation."""

from __future__ import annotations

import torch

from server.batching.plan import Entry
from server.batching.plan_padded import plan_padded_batch
from server.batching.work import WorkItem

KEY = ("same",)


def entry(length: int, rows: int = 1, start_ns: int = 0, key: tuple = KEY) -> Entry:
    work = WorkItem(inputs={"attention_mask": torch.ones(rows, length)}, rows=rows, arrival_ns=start_ns,
                    queue_start_ns=start_ns)
    return Entry(work, key, 0, length)


def lengths(plan) -> list[int]:  # type: ignore[no-untyped-def]
    return [e.length for e in plan.batch]


def test_different_lengths_merge_at_once_with_zero_delay() -> None:
    queue = [entry(12), entry(30), entry(5)]
    assert sorted(lengths(plan_padded_batch(queue, 0, 8, frozenset(), 0, 10_000))) == [5, 12, 30]


def test_the_token_budget_counts_rows_times_the_longest() -> None:
    # 3 rows x 40 = 120 fits a budget of 120; the row of 10 would make 4 x 40 = 160 and waits (at once: full)
    queue = [entry(40), entry(10), entry(40), entry(40)]
    plan = plan_padded_batch(queue, 0, 8, frozenset(), 10**9, 120)
    assert lengths(plan) == [40, 40, 40]
    # a budget of 100: two rows of 40 (80); a third row of any length makes 3 x 40 = 120
    assert lengths(plan_padded_batch(queue, 0, 8, frozenset(), 10**9, 100)) == [40, 40]


def test_nearest_lengths_join_the_head_first() -> None:
    queue = [entry(10), entry(100), entry(11), entry(12), entry(95), entry(9)]
    plan = plan_padded_batch(queue, 0, 4, frozenset(), 10**9, 10_000)
    assert plan.batch[0] is queue[0] and sorted(lengths(plan)) == [9, 10, 11, 12]
    # the long ones are left together for the next batch
    rest = [e for e in queue if e not in plan.batch]
    assert sorted(lengths(plan_padded_batch(rest, 0, 4, frozenset(), 0, 10_000))) == [95, 100]


def test_the_head_always_runs_even_above_the_budget() -> None:
    queue = [entry(500, rows=4), entry(3)]
    plan = plan_padded_batch(queue, 0, 8, frozenset(), 10**9, 1000)
    assert plan.batch == [queue[0], queue[1]] or plan.batch == [queue[0]]
    assert plan.batch[0] is queue[0]
    assert plan_padded_batch([entry(900, rows=8)], 0, 8, frozenset(), 10**9, 100).batch  # alone, at once


def test_rows_limit_and_partial_batches_wait_for_the_delay() -> None:
    queue = [entry(10, start_ns=100), entry(20, start_ns=200)]
    plan = plan_padded_batch(queue, 300, 8, frozenset(), 1000, 10_000)
    assert plan.batch == [] and plan.wake_at_ns == 1100
    assert len(plan_padded_batch(queue, 1100, 8, frozenset(), 1000, 10_000).batch) == 2
    # max_batch_size rows: the nearest length (5, one row) joins, then 4 more rows would overflow 8: run at once
    full = [entry(10, rows=4), entry(20, rows=4), entry(5)]
    assert lengths(plan_padded_batch(full, 0, 8, frozenset(), 10**9, 10_000)) == [10, 5]
    exact = [entry(10, rows=4), entry(20, rows=4)]
    assert lengths(plan_padded_batch(exact, 0, 8, frozenset(), 10**9, 10_000)) == [10, 20]


def test_preferred_sizes_apply() -> None:
    queue = [entry(n) for n in (10, 11, 12)]
    assert len(plan_padded_batch(queue, 0, 8, frozenset({2}), 10**9, 10_000).batch) == 2


def test_other_shape_keys_are_skipped_not_merged() -> None:
    a, b, c = entry(10), entry(10, key=("other",)), entry(20)
    assert plan_padded_batch([a, b, c], 0, 8, frozenset(), 0, 10_000).batch == [a, c]


def test_empty_queue_waits_for_an_arrival() -> None:
    plan = plan_padded_batch([], 0, 8, frozenset(), 0, 100)
    assert plan.batch == [] and plan.wake_at_ns is None
