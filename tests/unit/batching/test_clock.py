"""The batcher's clocks: the real one's timer thread, and the manual one tests drive by hand."""

from __future__ import annotations

import threading

from server.batching.clock import ManualClock, MonotonicClock


def test_the_monotonic_clock_calls_back_at_the_deadline_in_order_and_not_when_cancelled() -> None:
    clock = MonotonicClock()
    fired: list[tuple[str, int]] = []
    done = threading.Event()
    start = clock.now_ns()
    clock.call_at(start + 30_000_000, lambda: (fired.append(("late", clock.now_ns())), done.set()))
    clock.call_at(start + 10_000_000, lambda: fired.append(("early", clock.now_ns())))
    clock.call_at(start + 20_000_000, lambda: fired.append(("cancelled", 0))).cancel()
    assert done.wait(5)
    assert [name for name, _ in fired] == ["early", "late"]
    assert fired[0][1] >= start + 10_000_000 and fired[1][1] >= start + 30_000_000
    assert threading.current_thread().name != "twofour-batch-timer"


def test_the_manual_clock_runs_what_is_due_in_advance_and_a_past_deadline_at_once() -> None:
    clock = ManualClock(1_000)
    fired: list[str] = []
    clock.call_at(1_500, lambda: fired.append("a"))
    clock.call_at(2_000, lambda: fired.append("b")).cancel()
    clock.advance(499)
    assert fired == []
    clock.advance(1_000)
    assert fired == ["a"]
    late = threading.Event()
    clock.call_at(2_000, late.set)  # already past: runs on a thread of its own, never inside the caller
    assert late.wait(5)
