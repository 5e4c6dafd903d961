"""The scheduler's notion of time, injectable so batching rules are tested deterministically.

The batcher only ever asks two things of time: "what time is it" and "call me back at this deadline" (a partial
batch waiting out `max_queue_delay_microseconds`). `MonotonicClock` answers them with the real monotonic clock
and one timer thread per process; `ManualClock` lets tests move time by hand and observe exactly which batch forms when,
without sleeping or racing the wall clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

Callback = Callable[[], None]

log = logging.getLogger("twofour.batching")


class Timer(Protocol):
    def cancel(self) -> None:
        ...


class Clock(Protocol):
    def now_ns(self) -> int:
        """Current time in nanoseconds on the same scale as WorkItem.arrival_ns."""
        ...

    def call_at(self, deadline_ns: int, callback: Callback) -> Timer:
        """Run `callback` on another thread once the clock reaches `deadline_ns`, unless cancelled first."""
        ...


class _Scheduled:
    __slots__ = ("deadline_ns", "callback", "cancelled")

    def __init__(self, deadline_ns: int, callback: Callback) -> None:
        self.deadline_ns, self.callback, self.cancelled = deadline_ns, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class _TimerThread:
    """One daemon thread per process that runs every MonotonicClock's callbacks at their deadlines.

    Why one for all: a batcher arms at most one timer at a time, and a thread per clock would outlive its batcher
    (one more idle thread after every reload of a model with a queue delay).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, _Scheduled]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, deadline_ns: int, callback: Callback) -> Timer:
        scheduled = _Scheduled(deadline_ns, callback)
        with self._cond:
            heapq.heappush(self._heap, (deadline_ns, next(self._order), scheduled))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="twofour-batch-timer", daemon=True)
                self._thread.start()
            self._cond.notify()
        return scheduled

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.perf_counter_ns():
                    wait = (self._heap[0][0] - time.perf_counter_ns()) / 1e9 if self._heap else None
                    self._cond.wait(wait)
                _, _, due = heapq.heappop(self._heap)
            if not due.cancelled:
                try:
                    due.callback()
                except Exception:  # one failing callback must not stop every batcher's timers
                    log.exception("a batching timer callback failed")


_TIMERS = _TimerThread()


class MonotonicClock:
    """Real time: `time.perf_counter_ns`, the clock the dataplane stamps arrivals with; callbacks run on the
    process's one timer thread."""

    def now_ns(self) -> int:
        return time.perf_counter_ns()

    def call_at(self, deadline_ns: int, callback: Callback) -> Timer:
        return _TIMERS.call_at(deadline_ns, callback)


class ManualClock:
    """Time that moves only when `advance` is called; callbacks whose deadline passes run in `advance`'s thread."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._lock = threading.Lock()
        self._scheduled: list[_Scheduled] = []

    def now_ns(self) -> int:
        return self._now

    def call_at(self, deadline_ns: int, callback: Callback) -> Timer:
        scheduled = _Scheduled(deadline_ns, callback)
        with self._lock:
            if deadline_ns > self._now:
                self._scheduled.append(scheduled)
                return scheduled
        # time moved past the deadline while the caller decided: due now, but never run inside the caller's lock
        threading.Thread(target=callback, daemon=True).start()
        return scheduled

    def advance(self, ns: int) -> None:
        """Move time forward by `ns` and run every callback that is now due."""
        with self._lock:
            self._now += ns
            due = [s for s in self._scheduled if s.deadline_ns <= self._now]
            self._scheduled = [s for s in self._scheduled if s.deadline_ns > self._now]
        for scheduled in due:
            if not scheduled.cancelled:
                scheduled.callback()
