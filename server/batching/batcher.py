"""Dynamic batching for one model version: a priority queue drained by one asyncio worker per instance.

Why this shape: a worker forms a batch only when it is free, so under load requests pile up while every instance
computes and the next batch is naturally larger (this is what makes 2:4 kernels pay), while an idle model runs a
lone request immediately when `max_queue_delay_microseconds` is 0. Each batch costs one executor submit: merge,
model call and split all run in the worker thread, so the event loop keeps decoding requests meanwhile.

The constructor needs no running loop (the registry builds schedulers in a worker thread); the worker tasks start
on the first `infer`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future

import torch
from tritonclient.grpc import model_config_pb2 as mc

from server.batching.clock import Clock, MonotonicClock
from server.batching.merge import merge, split
from server.batching.plan import Entry, plan_batch
from server.batching.queue import PriorityQueue
from server.batching.threads import compute_executor
from server.batching.work import WorkItem
from server.errors import invalid, unavailable
from server.metrics import ModelRecorder
from server.runtime.base import Runtime

log = logging.getLogger("twofour.batching")

Outputs = dict[str, torch.Tensor]


class DynamicBatcher:
    """The Scheduler for models whose config has `dynamic_batching`."""

    def __init__(self, config: mc.ModelConfig, runtime: Runtime, recorder: ModelRecorder, instances: int,
                 clock: Clock | None = None) -> None:
        batching = config.dynamic_batching
        self._runtime = runtime
        self._recorder = recorder
        self._clock = clock or MonotonicClock()
        self._max_batch = config.max_batch_size
        self._preferred = frozenset(batching.preferred_batch_size)
        self._delay_ns = batching.max_queue_delay_microseconds * 1000
        self._queue = PriorityQueue(batching)
        self._instances = instances
        self._executor = compute_executor(instances, "twofour-batch")
        self._workers: list[asyncio.Task[None]] = []
        self._wakeup: asyncio.Event | None = None
        self._pending = 0
        self._closed = False

    def pending(self) -> int:
        return self._pending

    async def infer(self, item: WorkItem) -> Outputs:
        if self._closed:
            raise unavailable("model is unloading; request refused")
        if item.rows > self._max_batch:
            raise invalid(f"request has {item.rows} rows; the model's max_batch_size is {self._max_batch}")
        if self._wakeup is None:
            self._start()
        self._queue.push(item, self._clock.now_ns())  # raises UNAVAILABLE when the level is full
        self._pending += 1
        self._recorder.pending.inc()
        self._wakeup.set()  # type: ignore[union-attr]
        try:
            return await item.future
        except asyncio.CancelledError:
            self._queue.remove(item)  # the client went away: never compute it
            raise
        finally:
            self._pending -= 1
            self._recorder.pending.dec()

    async def close(self) -> None:
        """Refuse new work, let the workers finish everything queued, then release the threads."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        await asyncio.to_thread(self._executor.shutdown, True)

    # -- workers ---------------------------------------------------------------------------------------------
    def _start(self) -> None:
        self._wakeup = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work(), name=f"twofour-batcher-{i}") for i in range(self._instances)]

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            try:
                await self._run(batch)
            except Exception as exc:  # a bug here must not strand the batch's clients
                log.exception("batch execution failed outside the model")
                for entry in batch:
                    if not entry.item.future.done():
                        entry.item.future.set_exception(exc)

    async def _next_batch(self) -> list[Entry] | None:
        """Wait until the batching rule yields a batch; None once closed and drained."""
        wakeup = self._wakeup
        assert wakeup is not None
        while True:
            now = self._clock.now_ns()
            for item, error in self._queue.expire(now):
                if not item.future.done():
                    item.future.set_exception(error)
            delay = 0 if self._closed else self._delay_ns  # draining: never wait out the delay
            plan = plan_batch(self._queue.ordered(), now, self._max_batch, self._preferred, delay)
            if plan.batch:
                self._queue.take(plan.batch)
                live = [e for e in plan.batch if not e.item.future.done()]  # cancelled ones are dropped here
                if live:
                    return live
                continue
            if self._closed and not len(self._queue):
                wakeup.set()  # let the other workers see the close too
                return None
            wakeup.clear()
            await self._clock.wait(wakeup, plan.wake_at_ns)

    async def _run(self, batch: list[Entry]) -> None:
        """Run one batch on the executor; its clients get their results in the same loop step that frees this worker.

        Why not `await loop.run_in_executor(...)` and then set the results: that wakes this worker task first and
        its clients one loop iteration later, an extra hop on every request's path (~0.1-0.3 ms at c=1 over gRPC,
        where each loop iteration also waits on grpc's poller thread).
        """
        start = self._clock.now_ns()
        items = [e.item for e in batch]
        loop = asyncio.get_running_loop()
        freed: asyncio.Future[None] = loop.create_future()
        work = self._executor.submit(self._execute, items)
        work.add_done_callback(lambda done: loop.call_soon_threadsafe(self._deliver, items, done, start, freed))
        await freed

    def _deliver(self, items: list[WorkItem], work: Future[tuple[list[Outputs], int, int, int]], start: int,
                 freed: asyncio.Future[None]) -> None:
        """On the loop: hand each client its outputs (or the batch's error), record the batch, free the worker.

        With requests waiting, the worker is freed first, so it forms the next batch and the compute thread starts
        it before this batch's answers are encoded (alternating pairs: x1.07 at c=32, x1.10 at c=8, ahead in 3 of
        4 each); with none waiting, the clients come first, which is what a lone request's latency needs.
        """
        if len(self._queue) and not freed.done():
            freed.set_result(None)
        try:
            error = work.exception()
            if error is not None:
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
            results, in_ns, infer_ns, out_ns = work.result()
            rows = 0
            for item, outputs in zip(items, results, strict=True):
                rows += item.rows
                self._recorder.request_computed(start - item.queue_start_ns, in_ns, infer_ns, out_ns)
                if not item.future.done():
                    item.future.set_result(outputs)
            self._recorder.batch_executed(rows, in_ns, infer_ns, out_ns)
        except Exception as exc:  # a bug here must not strand the batch's clients
            log.exception("batch delivery failed")
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
        finally:
            if not freed.done():
                freed.set_result(None)

    def _execute(self, items: list[WorkItem]) -> tuple[list[Outputs], int, int, int]:
        """Worker thread: merge, run, split; returns the outputs and the three stage durations."""
        t0 = time.perf_counter_ns()
        batch = merge([item.inputs for item in items])
        t1 = time.perf_counter_ns()
        outputs = self._runtime.infer(batch)
        t2 = time.perf_counter_ns()
        parts = split(outputs, [item.rows for item in items])
        return parts, t1 - t0, t2 - t1, time.perf_counter_ns() - t2
