"""Dynamic batching for one model version: Triton's rule over a priority queue, run on the instance threads.

Why this shape: a batch is formed only when an instance is free (instances.py), so under load requests pile up
while every instance computes and the next batch is naturally larger (this is what makes 2:4 kernels pay), while
an idle model runs a lone request at once when `max_queue_delay_microseconds` is 0. Merge, model call and split
all run on the compute thread, so transports keep decoding requests meanwhile.
"""

from __future__ import annotations

import time

from tritonclient.grpc import model_config_pb2 as mc

from server.batching.clock import Clock, MonotonicClock
from server.batching.instances import Execution, InstanceScheduler, Rejected
from server.batching.merge import merge, split
from server.batching.plan import plan_batch
from server.batching.queue import PriorityQueue
from server.batching.work import WorkItem
from server.errors import invalid
from server.metrics import ModelRecorder
from server.runtime.base import Runtime


class DynamicBatcher(InstanceScheduler):
    """The Scheduler for models whose config has `dynamic_batching`."""

    def __init__(self, config: mc.ModelConfig, runtime: Runtime, recorder: ModelRecorder, instances: int,
                 clock: Clock | None = None) -> None:
        super().__init__(runtime, recorder, instances, clock or MonotonicClock(), "twofour-batch")
        batching = config.dynamic_batching
        self._max_batch = config.max_batch_size
        self._preferred = frozenset(batching.preferred_batch_size)
        self._delay_ns = batching.max_queue_delay_microseconds * 1000
        self._queue = PriorityQueue(batching)

    def _check(self, item: WorkItem) -> None:
        if item.rows > self._max_batch:
            raise invalid(f"request has {item.rows} rows; the model's max_batch_size is {self._max_batch}")

    def _enqueue_locked(self, item: WorkItem, now_ns: int) -> None:
        self._queue.push(item, now_ns)  # raises UNAVAILABLE when the level is full

    def _withdraw_locked(self, item: WorkItem) -> bool:
        return self._queue.remove(item)

    def _next_locked(self, now_ns: int, take: bool) -> tuple[list[WorkItem], Rejected, int | None]:
        rejected = self._queue.expire(now_ns)
        delay = 0 if self._closed else self._delay_ns  # draining: never wait out the delay
        plan = plan_batch(self._queue.ordered(), now_ns, self._max_batch, self._preferred, delay)
        if take:
            self._queue.take(plan.batch)
        return [entry.item for entry in plan.batch], rejected, plan.wake_at_ns

    def _execute(self, items: list[WorkItem]) -> Execution:
        """Compute thread: merge, run, split; returns the outputs and the three stage durations."""
        t0 = time.perf_counter_ns()
        batch = merge([item.inputs for item in items])
        t1 = time.perf_counter_ns()
        outputs = self._runtime.infer(batch)
        t2 = time.perf_counter_ns()
        parts = split(outputs, [item.rows for item in items])
        return parts, t1 - t0, t2 - t1, time.perf_counter_ns() - t2
