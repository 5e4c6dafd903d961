"""The scheduler's notion of time, injectable so batching rules are tested deterministically.

The batcher only ever asks two things of time: "what time is it" and "sleep until this deadline unless woken
earlier". `MonotonicClock` answers them with the real monotonic clock; `ManualClock` lets tests move time by hand
and observe exactly which batch forms when, without sleeping or racing the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Current time in nanoseconds on the same scale as WorkItem.arrival_ns."""
        ...

    async def wait(self, event: asyncio.Event, deadline_ns: int | None) -> None:
        """Return once `event` is set or the clock reaches `deadline_ns` (None: only the event)."""
        ...


class MonotonicClock:
    """Real time: `time.perf_counter_ns`, the clock the dataplane stamps arrivals with."""

    def now_ns(self) -> int:
        return time.perf_counter_ns()

    async def wait(self, event: asyncio.Event, deadline_ns: int | None) -> None:
        if deadline_ns is None:
            await event.wait()
            return
        delay = (deadline_ns - time.perf_counter_ns()) / 1e9
        if delay <= 0:
            return
        # A timer that sets the event is cheaper than wait_for (no extra Task); a spurious set only makes the
        # waiters look at the queue once more.
        handle = asyncio.get_running_loop().call_later(delay, event.set)
        try:
            await event.wait()
        finally:
            handle.cancel()


class ManualClock:
    """Time that moves only when `advance` is called; waiters whose deadline passes are woken."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def now_ns(self) -> int:
        return self._now

    async def wait(self, event: asyncio.Event, deadline_ns: int | None) -> None:
        if deadline_ns is not None and deadline_ns <= self._now:
            return
        entry = (deadline_ns, event) if deadline_ns is not None else None
        if entry is not None:
            self._waiters.append(entry)
        try:
            await event.wait()
        finally:
            if entry is not None:
                self._waiters.remove(entry)

    def advance(self, ns: int) -> None:
        """Move time forward by `ns` and wake everyone whose deadline is now due."""
        self._now += ns
        for deadline, event in list(self._waiters):
            if deadline <= self._now:
                event.set()
