"""Triton's batching rule, checked on the pure planner (no loop, no threads)."""

import asyncio

import torch

from server.batching.plan import Entry, plan_batch
from server.batching.work import WorkItem


def entry(rows: int = 1, start_ns: int = 0, width: int = 3, loop: asyncio.AbstractEventLoop | None = None) -> Entry:
    x = torch.zeros(rows, width)
    work = WorkItem(inputs={"x": x}, rows=rows, arrival_ns=start_ns, queue_start_ns=start_ns)  # type: ignore[arg-type]
    return Entry(work, work.shape_key(), 0)


def rows_of(plan) -> list[int]:  # type: ignore[no-untyped-def]
    return [e.item.rows for e in plan.batch]


def test_empty_queue_waits_for_an_arrival() -> None:
    plan = plan_batch([], 0, 8, frozenset(), 0)
    assert plan.batch == [] and plan.wake_at_ns is None


def test_zero_delay_runs_whatever_is_there_at_once() -> None:
    queue = [entry(), entry(2)]
    assert rows_of(plan_batch(queue, 0, 8, frozenset(), 0)) == [1, 2]


def test_max_batch_runs_at_once_even_with_a_long_delay() -> None:
    queue = [entry(2), entry(2), entry(4)]
    assert rows_of(plan_batch(queue, 0, 4, frozenset(), 10**9)) == [2, 2]


def test_a_request_that_would_overflow_closes_the_batch() -> None:
    queue = [entry(3), entry(2)]
    assert rows_of(plan_batch(queue, 0, 4, frozenset(), 10**9)) == [3]


def test_largest_preferred_size_wins_over_waiting() -> None:
    queue = [entry() for _ in range(7)]
    plan = plan_batch(queue, 0, 16, frozenset({2, 4, 6}), 10**9)
    assert len(plan.batch) == 6 and plan.batch == queue[:6]


def test_without_max_or_preferred_it_waits_for_the_oldest_request_delay() -> None:
    queue = [entry(start_ns=100), entry(start_ns=500)]
    plan = plan_batch(queue, 200, 8, frozenset({4}), 1000)
    assert plan.batch == [] and plan.wake_at_ns == 1100
    plan = plan_batch(queue, 1100, 8, frozenset({4}), 1000)
    assert rows_of(plan) == [1, 1]


def test_requests_with_other_shapes_are_skipped_not_merged() -> None:
    a1, b1, a2, b2 = entry(width=3), entry(width=5), entry(width=3), entry(width=5)
    plan = plan_batch([a1, b1, a2, b2], 0, 8, frozenset(), 0)
    assert plan.batch == [a1, a2]
    assert plan_batch([b1, b2], 0, 8, frozenset(), 0).batch == [b1, b2]
