"""What every scheduler shares: a queue guarded by one lock, `instance_count` compute threads, and delivery.

Why thread-native: a request reaches the scheduler from the event loop (HTTP, inline gRPC) or from a gRPC front
connection's reader thread, and a request that waited for the loop at each step paid one loop iteration per
hand-off (about seven per request at c=1). Here a decision ("which batch runs now?") is taken under the lock, at
once, by whichever thread changed the situation: a submit, a compute thread that just finished (it runs the next
batch itself, no hand-off), the delay timer, or close. A batch runs on a compute thread only when an instance is
free, so under load requests pile up while every instance computes and the next batch is naturally larger.
Subclasses say which batch is next (`_next_locked`) and how it executes (`_execute`).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from server.batching.clock import Clock, Timer
from server.batching.completion import FutureCompletion, inbox_for
from server.batching.threads import compute_executor, threads_per_instance
from server.batching.work import Channel, Outputs, WorkItem
from server.errors import ErrorKind, ServingError, unavailable
from server.metrics import ModelRecorder
from server.runtime.base import Runtime

log = logging.getLogger("twofour.batching")

Rejected = list[tuple[WorkItem, ServingError]]
Execution = tuple[list[Outputs], int, int, int]  # per-item outputs, then input/infer/output stage durations (ns)


class InstanceScheduler:
    """Base of DynamicBatcher and DirectScheduler; safe to call from any thread, needs no event loop to build."""

    def __init__(self, runtime: Runtime, recorder: ModelRecorder, instances: int, clock: Clock,
                 thread_name: str) -> None:
        self._runtime = runtime
        self._recorder = recorder
        self._clock = clock
        self._instances = self._free = instances
        self._executor = compute_executor(instances, thread_name, threads_per_instance(instances))
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._closed = False
        self._timer: Timer | None = None
        self._timer_at: int | None = None

    # -- what subclasses decide (called with the lock held) ----------------------------------------------------
    def _check(self, item: WorkItem) -> None:
        """Refuse an item that can never run (raise ServingError); called before it is queued."""

    def _enqueue_locked(self, item: WorkItem, now_ns: int) -> None:
        raise NotImplementedError

    def _withdraw_locked(self, item: WorkItem) -> bool:
        raise NotImplementedError

    def _next_locked(self, now_ns: int, take: bool) -> tuple[list[WorkItem], Rejected, int | None]:
        """The batch that would run now (taken off the queue when `take`), items refused on the way (queue
        timeouts), and when to decide again if a partial batch must wait (None: at the next event)."""
        raise NotImplementedError

    def _execute(self, items: list[WorkItem]) -> Execution:
        raise NotImplementedError

    # -- the Scheduler contract --------------------------------------------------------------------------------
    def pending(self) -> int:
        return self._pending

    def submit(self, item: WorkItem) -> None:
        assert item.completion is not None, "a WorkItem needs its completion before it is submitted"
        self._check(item)
        with self._lock:
            if self._closed:
                raise unavailable("model is unloading; request refused")
            self._enqueue_locked(item, self._clock.now_ns())  # raises UNAVAILABLE when the queue is full
            self._pending += 1
            self._recorder.pending.inc()
            woken, rejected = self._claim_locked()
        self._dispatch(woken, rejected)

    def cancel(self, item: WorkItem) -> bool:
        with self._lock:
            if not self._withdraw_locked(item):
                return False
            self._answered_locked(1)
        return True

    async def infer(self, item: WorkItem) -> Outputs:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        item.completion = FutureCompletion(future, inbox_for(loop))
        self.submit(item)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel(item)  # the client went away: never compute it (if it is still queued)
            raise

    async def close(self) -> None:
        """Refuse new work, let the instances finish everything queued (no delay waited out), then stop."""
        with self._lock:
            self._closed = True
            woken, rejected = self._claim_locked()
        self._dispatch(woken, rejected)
        await asyncio.to_thread(self._wait_idle_and_stop)

    # -- decisions and execution -------------------------------------------------------------------------------
    def _claim_locked(self) -> tuple[int, Rejected]:
        """Wake a free instance when a batch is ready now; arm the timer when a partial batch must wait.

        The woken instance takes its batch when it starts running (`_take_locked`), not here: what arrives in
        between (the rest of a burst of requests) joins that batch instead of waiting for the next one.
        """
        if not self._free:
            return 0, []  # a busy instance decides when it finishes
        ready, rejected, wake_at = self._next_locked(self._clock.now_ns(), take=False)
        self._arm_locked(None if ready else wake_at)
        if not ready:
            return 0, rejected
        self._free -= 1
        return 1, rejected

    def _take_locked(self) -> tuple[list[WorkItem], Rejected, int | None]:
        """The live items of the next batch, taken off the queue. An item whose client went away but was not
        withdrawn (its cancel raced this take) is dropped and answered CANCELLED, so its caller still records it
        once."""
        rejected: Rejected = []
        while True:
            batch, refused, wake_at = self._next_locked(self._clock.now_ns(), take=True)
            rejected += refused
            live = []
            for item in batch:
                if item.completion.cancelled():  # type: ignore[union-attr]
                    rejected.append((item, ServingError(ErrorKind.CANCELLED, "request cancelled by the client")))
                else:
                    live.append(item)
            if live or not batch:
                return live, rejected, wake_at

    def _arm_locked(self, wake_at: int | None) -> None:
        if wake_at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, wake_at
        if wake_at is not None:
            self._timer = self._clock.call_at(wake_at, self._on_timer)

    def _on_timer(self) -> None:
        with self._lock:
            self._timer, self._timer_at = None, None
            woken, rejected = self._claim_locked()
        self._dispatch(woken, rejected)

    def _dispatch(self, woken: int, rejected: Rejected) -> None:
        if rejected:
            self._deliver([(item, None, error) for item, error in rejected])
        for _ in range(woken):
            self._executor.submit(self._work)

    def _work(self) -> None:
        """A compute thread holding one instance: run batches while one is ready, then give the instance back."""
        while True:
            with self._lock:
                batch, rejected, wake_at = self._take_locked()
                if batch:
                    woken, more_rejected = self._claim_locked()  # another free instance for what is still ready
                    rejected += more_rejected
                else:
                    woken = 0
                    self._free += 1
                    self._arm_locked(wake_at)
                    if self._free == self._instances and not self._pending:
                        self._idle.notify_all()
            self._dispatch(woken, rejected)
            if not batch:
                return
            try:
                self._run(batch)
            except Exception:  # a bug outside the model must not lose the instance
                log.exception("batch execution failed outside the model")

    def _run(self, batch: list[WorkItem]) -> None:
        start = self._clock.now_ns()
        try:
            results, in_ns, infer_ns, out_ns = self._execute(batch)
        except Exception as exc:  # the model's failure fails this batch alone; the clients read why
            self._deliver([(item, None, exc) for item in batch])
            return
        try:
            for item in batch:
                self._recorder.request_computed(start - item.queue_start_ns, in_ns, infer_ns, out_ns)
            self._recorder.batch_executed(sum(item.rows for item in batch), in_ns, infer_ns, out_ns)
        except Exception:  # a metrics bug must not strand the batch's clients
            log.exception("recording a batch failed")
        self._deliver([(item, outputs, None) for item, outputs in zip(batch, results, strict=True)])

    def _deliver(self, outcomes: list[tuple[WorkItem, Outputs | None, BaseException | None]]) -> None:
        """Count the items answered, hand each its outcome, then flush each channel once."""
        with self._lock:
            self._answered_locked(len(outcomes))
        channels: dict[int, Channel] = {}
        for item, outputs, error in outcomes:
            completion = item.completion
            assert completion is not None
            try:
                if error is not None:
                    completion.reject(error)
                else:
                    completion.resolve(outputs)  # type: ignore[arg-type]
            except Exception:  # a broken completion must not take the other clients or the instance down
                log.exception("delivering a result failed")
            channels[id(completion.channel)] = completion.channel
        for channel in channels.values():
            try:
                channel.flush()
            except Exception:
                log.exception("flushing results failed")

    def _answered_locked(self, count: int) -> None:
        self._pending -= count
        self._recorder.pending.dec(count)
        if not self._pending and self._free == self._instances:
            self._idle.notify_all()

    def _wait_idle_and_stop(self) -> None:
        """One worker of the loop's default executor for the whole close (each `to_thread` may start another)."""
        with self._lock:
            while self._pending or self._free < self._instances:
                self._idle.wait()
            if self._timer is not None:
                self._timer.cancel()
        self._executor.shutdown(wait=True)
