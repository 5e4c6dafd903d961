"""No dynamic batching: every request runs alone, in arrival order, at most `instance_count` at a time."""

from __future__ import annotations

import time
from collections import deque

from server.batching.clock import Clock, MonotonicClock
from server.batching.instances import Execution, InstanceScheduler, Rejected
from server.batching.work import WorkItem
from server.metrics import ModelRecorder
from server.runtime.base import Runtime


class DirectScheduler(InstanceScheduler):
    """One execution per request; requests wait in a FIFO while every instance is busy."""

    def __init__(self, runtime: Runtime, recorder: ModelRecorder, instances: int,
                 clock: Clock | None = None) -> None:
        super().__init__(runtime, recorder, instances, clock or MonotonicClock(), "twofour-exec")
        self._queue: deque[WorkItem] = deque()

    def _enqueue_locked(self, item: WorkItem, now_ns: int) -> None:
        item.queue_start_ns = now_ns
        self._queue.append(item)

    def _withdraw_locked(self, item: WorkItem) -> bool:
        try:
            self._queue.remove(item)
        except ValueError:
            return False
        return True

    def _next_locked(self, now_ns: int, take: bool) -> tuple[list[WorkItem], Rejected, int | None]:
        if not self._queue:
            return [], [], None
        return [self._queue.popleft() if take else self._queue[0]], [], None

    def _execute(self, items: list[WorkItem]) -> Execution:
        [item] = items
        start = time.perf_counter_ns()
        outputs = self._runtime.infer(item.inputs)
        infer_end = time.perf_counter_ns()
        outputs = {name: t.contiguous() for name, t in outputs.items()}
        return [outputs], 0, infer_end - start, time.perf_counter_ns() - infer_end
