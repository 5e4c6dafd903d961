"""No dynamic batching: every request runs alone, at most `instance_count` at a time, off the event loop."""

from __future__ import annotations

import asyncio
import time

import torch

from server.batching.threads import compute_executor
from server.batching.work import WorkItem
from server.errors import ErrorKind, ServingError
from server.metrics import ModelRecorder
from server.runtime.base import Runtime


class DirectScheduler:
    """One execution per request; the semaphore bounds concurrency to the configured instance count."""

    def __init__(self, runtime: Runtime, recorder: ModelRecorder, instances: int) -> None:
        self._runtime = runtime
        self._recorder = recorder
        self._slots = asyncio.Semaphore(instances)
        self._executor = compute_executor(instances, "twofour-exec")
        self._pending = 0
        self._closed = False

    def pending(self) -> int:
        return self._pending

    def _execute(self, item: WorkItem) -> tuple[dict[str, torch.Tensor], int, int, int]:
        start = time.perf_counter_ns()
        outputs = self._runtime.infer(item.inputs)
        infer_end = time.perf_counter_ns()
        outputs = {name: t.contiguous() for name, t in outputs.items()}
        return outputs, 0, infer_end - start, time.perf_counter_ns() - infer_end

    async def infer(self, item: WorkItem) -> dict[str, torch.Tensor]:
        if self._closed:
            raise ServingError(ErrorKind.UNAVAILABLE, "model is unloading; request refused")
        self._pending += 1
        self._recorder.pending.inc()
        try:
            async with self._slots:
                queue_ns = time.perf_counter_ns() - item.arrival_ns
                loop = asyncio.get_running_loop()
                outputs, in_ns, infer_ns, out_ns = await loop.run_in_executor(self._executor, self._execute, item)
            self._recorder.request_computed(queue_ns, in_ns, infer_ns, out_ns)
            self._recorder.batch_executed(item.rows, in_ns, infer_ns, out_ns)
            return outputs
        finally:
            self._pending -= 1
            self._recorder.pending.dec()

    async def close(self) -> None:
        self._closed = True
        while self._pending:
            await asyncio.sleep(0.01)
        self._executor.shutdown(wait=True)
