"""DirectScheduler (no dynamic_batching) through its public API: one request per execution, queued behind busy
instances, at most `instance_count` at once, and a withdrawn request never runs."""

from __future__ import annotations

import asyncio

import torch

from server.batching.clock import ManualClock
from server.batching.direct import DirectScheduler
from server.metrics import Metrics
from tests.unit.batching.conftest import HeldRuntime, item, settle


def test_requests_run_alone_in_arrival_order_behind_busy_instances_and_a_cancelled_one_never_runs() -> None:
    runtime = HeldRuntime()
    metrics = Metrics()

    async def main() -> None:
        scheduler = DirectScheduler(runtime, metrics.recorder("m", "1"), 2, clock=ManualClock())
        runtime.release.clear()
        tasks = [asyncio.create_task(scheduler.infer(item(tag, rows=2))) for tag in (1, 2, 3, 4, 5)]
        await settle()
        await asyncio.to_thread(runtime.wait_running, 2)  # two instances: two executions at once, no more
        assert sorted(runtime.batches) == [[1.0, 1.0], [2.0, 2.0]] and scheduler.pending() == 5
        tasks[3].cancel()  # request 4 is still queued: withdrawn
        await settle()
        assert scheduler.pending() == 4
        runtime.release.set()
        outs = await asyncio.gather(*tasks[:3], tasks[4])
        assert sorted(runtime.batches[2:]) == [[3.0, 3.0], [5.0, 5.0]]  # each alone; 4 never ran
        for tag, out in zip((1, 2, 3, 5), outs, strict=True):
            assert torch.all(out["y"][:, 0] == 2 * tag) and out["y"].is_contiguous()
        assert scheduler.pending() == 0
        await scheduler.close()

    asyncio.run(main())
    stats = metrics.stats("m", "1")
    assert stats is not None and stats.execution_count == 4 and stats.inference_count == 8
