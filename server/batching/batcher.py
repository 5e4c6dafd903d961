"""Dynamic batching for one model version: Triton's rule over a priority queue, run on the instance threads.

Why this shape: a batch is formed only when an instance is free (instances.py), so under load requests pile up
while every instance computes and the next batch is naturally larger (this is what makes 2:4 kernels pay), while
an idle model runs a lone request at once when `max_queue_delay_microseconds` is 0. Merge, model call and split
all run on the compute thread, so transports keep decoding requests meanwhile. A model whose config says it pads
(ragged.py) merges requests of different sequence lengths under a token budget (plan_padded.py, pad.py); any other
model keeps Triton's rule and the plain concatenation, untouched.
"""

from __future__ import annotations

import time

from tritonclient.grpc import model_config_pb2 as mc

from server.batching.clock import Clock, MonotonicClock
from server.batching.instances import Execution, InstanceScheduler, Rejected
from server.batching.merge import merge, split
from server.batching.pad import merge_padded, padded_tokens, split_padded
from server.batching.plan import plan_batch
from server.batching.plan_padded import plan_padded_batch
from server.batching.queue import PriorityQueue
from server.batching.ragged import padding_spec
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
        self._padding = padding_spec(config)  # ValueError on a config mistake: the load fails saying why
        self._queue = PriorityQueue(batching, self._padding)

    def _check(self, item: WorkItem) -> None:
        if item.rows > self._max_batch:
            raise invalid(f"request has {item.rows} rows; the model's max_batch_size is {self._max_batch}")
        if self._padding is not None:
            problem = self._padding.check(item)
            if problem:
                raise invalid(problem)

    def _enqueue_locked(self, item: WorkItem, now_ns: int) -> None:
        self._queue.push(item, now_ns)  # raises UNAVAILABLE when the level is full

    def _withdraw_locked(self, item: WorkItem) -> bool:
        return self._queue.remove(item)

    def _next_locked(self, now_ns: int, take: bool) -> tuple[list[WorkItem], Rejected, int | None]:
        rejected = self._queue.expire(now_ns)
        delay = 0 if self._closed else self._delay_ns  # draining: never wait out the delay
        if self._padding is None:
            plan = plan_batch(self._queue.ordered(), now_ns, self._max_batch, self._preferred, delay)
        else:
            plan = plan_padded_batch(self._queue.ordered(), now_ns, self._max_batch, self._preferred, delay,
                                     self._padding.max_batch_tokens)
        if take:
            self._queue.take(plan.batch)
        return [entry.item for entry in plan.batch], rejected, plan.wake_at_ns

    def _execute(self, items: list[WorkItem]) -> Execution:
        """Compute thread: merge, run, split; returns the outputs and the three stage durations."""
        if self._padding is not None:
            return self._execute_padded(items)
        t0 = time.perf_counter_ns()
        batch = merge([item.inputs for item in items])
        t1 = time.perf_counter_ns()
        outputs = self._runtime.infer(batch)
        t2 = time.perf_counter_ns()
        parts = split(outputs, [item.rows for item in items])
        return parts, t1 - t0, t2 - t1, time.perf_counter_ns() - t2

    def _execute_padded(self, items: list[WorkItem]) -> Execution:
        """As `_execute`, padding to the batch's longest; records the batch's padded and total tokens."""
        spec = self._padding
        assert spec is not None
        rows = [item.rows for item in items]
        lengths = [spec.length(item) for item in items]
        t0 = time.perf_counter_ns()
        batch, longest = merge_padded([item.inputs for item in items], lengths, spec)
        t1 = time.perf_counter_ns()
        outputs = self._runtime.infer(batch)
        t2 = time.perf_counter_ns()
        parts = split_padded(outputs, rows, lengths, longest, spec)
        t3 = time.perf_counter_ns()
        self._recorder.tokens_executed(*padded_tokens(lengths, rows, longest))
        return parts, t1 - t0, t2 - t1, t3 - t2
