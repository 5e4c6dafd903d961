"""DynamicBatcher through its public API (infer / pending / close), with a ManualClock and a real runtime."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest
import torch

from server.batching.batcher import DynamicBatcher
from server.batching.clock import ManualClock
from server.errors import ErrorKind, ServingError
from server.metrics import Metrics
from tests.unit.batching.conftest import HeldRuntime, item, make_config, settle

Body = Callable[[DynamicBatcher, HeldRuntime, ManualClock, Metrics], Awaitable[None]]


def run(body: Body, batching: str = "", max_batch: int = 8, instances: int = 1,
        runtime: HeldRuntime | None = None) -> Metrics:
    metrics = Metrics()
    runtime = runtime or HeldRuntime()
    clock = ManualClock(1_000_000)

    async def main() -> None:
        batcher = DynamicBatcher(make_config(batching, max_batch), runtime, metrics.recorder("m", "1"),
                                 instances, clock=clock)
        try:
            await asyncio.wait_for(body(batcher, runtime, clock, metrics), 20)
        finally:
            runtime.release.set()
            await batcher.close()

    asyncio.run(main())
    return metrics


async def submit(batcher: DynamicBatcher, *items):  # type: ignore[no-untyped-def]
    tasks = [asyncio.create_task(batcher.infer(i)) for i in items]
    await settle()
    return tasks


async def hold_instance(batcher: DynamicBatcher, runtime: HeldRuntime) -> asyncio.Task:
    """Occupy the (single) instance with request tag 0 so the next requests queue up."""
    runtime.release.clear()
    [task] = await submit(batcher, item(0))
    await asyncio.to_thread(runtime.wait_running)
    return task


def test_lone_request_runs_at_once_and_gets_its_outputs() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        x = item(5, rows=2)
        out = await b.infer(x)
        assert torch.equal(out["y"], x.inputs["x"] * 2)
        assert out["s"].shape == (2, 1)
        assert rt.batches == [[5.0, 5.0]] and b.pending() == 0

    metrics = run(body)
    stats = metrics.stats("m", "1")
    assert stats is not None and stats.inference_count == 2 and stats.execution_count == 1


def test_requests_queued_behind_a_busy_instance_run_as_one_batch_and_split_back() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        first = await hold_instance(b, rt)
        requests = [item(1), item(2, rows=3), item(3)]
        tasks = await submit(b, *requests)
        assert b.pending() == 4
        # the Prometheus gauge follows the queue
        assert m.registry.get_sample_value("twofour_pending_requests", {"model": "m", "version": "1"}) == 4
        rt.release.set()
        outs = await asyncio.gather(first, *tasks)
        assert m.registry.get_sample_value("twofour_pending_requests", {"model": "m", "version": "1"}) == 0
        assert rt.batches == [[0.0], [1.0, 2.0, 2.0, 2.0, 3.0]]
        for request, out in zip(requests, outs[1:], strict=True):
            assert torch.equal(out["y"], request.inputs["x"] * 2)
        stats = m.stats("m", "1")
        assert stats is not None and sorted(stats.batch) == [1, 5]

    run(body)


def test_max_queue_delay_holds_a_partial_batch_until_the_oldest_request_waited_it() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        tasks = await submit(b, item(1))
        clock.advance(60_000)
        tasks += await submit(b, item(2))
        assert rt.batches == []
        clock.advance(39_999)
        await settle()
        assert rt.batches == []
        clock.advance(1)
        await asyncio.gather(*tasks)
        assert rt.batches == [[1.0, 2.0]]

    run(body, "max_queue_delay_microseconds: 100")


def test_preferred_size_and_max_size_run_without_waiting() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        tasks = await submit(b, item(1))
        assert rt.batches == []
        tasks += await submit(b, item(2))
        await asyncio.gather(*tasks)  # 2 is preferred: no clock movement needed
        tasks = await submit(b, item(3, rows=3), item(4))
        await asyncio.gather(*tasks)  # 4 = max_batch_size
        assert rt.batches == [[1.0, 2.0], [3.0, 3.0, 3.0, 4.0]]

    run(body, "preferred_batch_size: [2] max_queue_delay_microseconds: 1000000000", max_batch=4)


def test_different_shapes_are_never_merged() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        first = await hold_instance(b, rt)
        narrow, wide, narrow2 = item(1, width=3), item(2, width=5), item(3, width=3)
        tasks = await submit(b, narrow, wide, narrow2)
        rt.release.set()
        outs = await asyncio.gather(first, *tasks)
        assert rt.batches == [[0.0], [1.0, 3.0], [2.0]]
        assert outs[2]["y"].shape == (1, 5)

    run(body)


def test_higher_priority_runs_first() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        first = await hold_instance(b, rt)
        tasks = await submit(b, item(1, priority=2), item(2, priority=2), item(3, priority=1))
        rt.release.set()
        await asyncio.gather(first, *tasks)
        assert rt.batches == [[0.0], [3.0], [1.0], [2.0]]

    run(body, "priority_levels: 2 default_priority_level: 2", max_batch=1)


def test_full_queue_rejects_immediately_with_unavailable() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        first = await hold_instance(b, rt)
        queued = await submit(b, item(1), item(2))
        with pytest.raises(ServingError) as err:
            await b.infer(item(3))
        assert err.value.kind == ErrorKind.UNAVAILABLE and "full" in err.value.message
        assert b.pending() == 3
        rt.release.set()
        await asyncio.gather(first, *queued)

    run(body, "default_queue_policy { max_queue_size: 2 }", max_batch=1)


def test_queue_timeout_reject_and_delay() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        first = await hold_instance(b, rt)
        late, patient, prompt = await submit(b, item(1, timeout_us=50), item(2), item(3, timeout_us=50, priority=1))
        clock.advance(100_000)
        rt.release.set()
        await asyncio.gather(first, patient)
        with pytest.raises(ServingError) as err:
            await late
        assert err.value.kind == ErrorKind.UNAVAILABLE and "timed out in the queue after 100 us" in err.value.message
        await prompt  # level 1 DELAYs instead: still computed, after level 1's timely requests (none here)
        assert rt.batches == [[0.0], [3.0], [2.0]]

    run(body, "priority_levels: 2 default_priority_level: 2 "
              "default_queue_policy { allow_timeout_override: true } "
              "priority_queue_policy { key: 1 value { allow_timeout_override: true timeout_action: DELAY } }",
        max_batch=1)


def test_a_cancelled_request_is_dropped_and_never_computed() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        first = await hold_instance(b, rt)
        gone, kept = await submit(b, item(1), item(2))
        gone.cancel()
        await settle()
        assert b.pending() == 2
        rt.release.set()
        await asyncio.gather(first, kept)
        assert gone.cancelled()
        assert rt.batches == [[0.0], [2.0]]

    run(body)


class Sink:
    """A Channel that counts its flushes, as a front connection would count its sends."""

    def __init__(self) -> None:
        self.flushes = 0
        self.flushed = threading.Event()

    def flush(self) -> None:
        self.flushes += 1
        self.flushed.set()


class Answer:
    """A Completion that is not an asyncio future (as the gRPC front path's are): records its one outcome."""

    def __init__(self, sink: Sink, gone: bool = False) -> None:
        self.channel = sink
        self.gone = gone
        self.outcomes: list[object] = []
        self.thread = ""

    def cancelled(self) -> bool:
        return self.gone

    def resolve(self, outputs: dict[str, torch.Tensor]) -> None:
        self.outcomes.append(outputs)
        self.thread = threading.current_thread().name

    def reject(self, error: BaseException) -> None:
        self.outcomes.append(error)


def test_a_completion_cancelled_without_a_withdraw_is_skipped_at_batch_formation() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        first = await hold_instance(b, rt)
        dropped_sink, kept_sink = Sink(), Sink()  # apart: the drop is flushed before the kept item has run
        doomed, kept = item(1), item(2)
        doomed.completion, kept.completion = Answer(dropped_sink, gone=True), Answer(kept_sink)
        b.submit(doomed)
        b.submit(kept)
        assert b.pending() == 3
        rt.release.set()
        await first
        assert await asyncio.to_thread(kept_sink.flushed.wait, 10)
        assert rt.batches == [[0.0], [2.0]] and b.pending() == 0
        # never computed, and answered CANCELLED once (nobody waits for it, but its caller records it)
        [dropped] = doomed.completion.outcomes  # type: ignore[union-attr]
        assert isinstance(dropped, ServingError) and dropped.kind == ErrorKind.CANCELLED
        assert len(kept.completion.outcomes) == 1  # type: ignore[union-attr]

    run(body)


def test_submitted_from_plain_threads_a_batch_is_answered_on_the_compute_thread_with_one_flush() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        first = await hold_instance(b, rt)
        sink = Sink()
        items = [item(tag) for tag in (1, 2, 3)]
        for work in items:
            work.completion = Answer(sink)
        submitters = [threading.Thread(target=b.submit, args=(work,)) for work in items]
        for thread in submitters:
            thread.start()
        for thread in submitters:
            thread.join()
        rt.release.set()
        await first
        await asyncio.to_thread(sink.flushed.wait, 10)
        assert sorted(rt.batches[1]) == [1.0, 2.0, 3.0] and sink.flushes == 1
        for work in items:
            answer = work.completion
            assert isinstance(answer, Answer) and answer.thread.startswith("twofour-batch")
            [outputs] = answer.outcomes
            assert torch.equal(outputs["y"], work.inputs["x"] * 2)  # type: ignore[index]

    run(body)


def test_a_runtime_failure_fails_that_batch_only() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        first = await hold_instance(b, rt)
        tasks = await submit(b, item(1), item(2))
        rt.release.set()
        await first
        for task in tasks:
            with pytest.raises(RuntimeError, match="boom"):
                await task
        out = await b.infer(item(3))
        assert out["y"][0, 0].item() == 6.0

    run(body, runtime=HeldRuntime(fail_on_rows=2))


def test_instance_count_runs_that_many_batches_concurrently() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        rt.release.clear()
        tasks = await submit(b, item(1))
        tasks += await submit(b, item(2))
        await asyncio.to_thread(rt.wait_running, 2)  # both executing at once, neither released
        assert sorted(rt.batches) == [[1.0], [2.0]]
        rt.release.set()
        await asyncio.gather(*tasks)

    run(body, instances=2)


def test_close_finishes_queued_work_then_refuses() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        rt.release.clear()
        [first] = await submit(b, item(0))
        clock.advance(10**12)  # the lone first request waits out the delay, then holds the instance
        await asyncio.to_thread(rt.wait_running)
        tasks = await submit(b, item(1), item(2))
        closing = asyncio.create_task(b.close())
        await settle()
        with pytest.raises(ServingError, match="unloading"):
            await b.infer(item(3))
        rt.release.set()
        await asyncio.gather(first, *tasks, closing)
        assert rt.batches == [[0.0], [1.0, 2.0]]

    run(body, "max_queue_delay_microseconds: 1000000000")  # draining does not wait out the delay


def test_oversized_request_is_refused() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        with pytest.raises(ServingError, match="max_batch_size"):
            await b.infer(item(1, rows=5))

    run(body, max_batch=4)


def test_built_in_a_thread_without_a_loop_and_used_later() -> None:
    metrics = Metrics()
    built: list[DynamicBatcher] = []
    thread = threading.Thread(target=lambda: built.append(
        DynamicBatcher(make_config(), HeldRuntime(), metrics.recorder("m", "1"), 1)))
    thread.start()
    thread.join()

    async def main() -> None:
        out = await built[0].infer(item(4))
        assert out["y"][0, 0].item() == 8.0
        await built[0].close()

    asyncio.run(main())


def test_a_batch_waiting_behind_a_busy_instance_runs_whole_when_the_delivery_starts_it() -> None:
    """With requests waiting, a delivery frees the worker before the answers go out: the waiting requests still
    run as one batch, in order, and answer right."""
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        first = await hold_instance(b, rt)
        second = await submit(b, item(1), item(2, rows=2))
        rt.release.set()  # the first batch's delivery starts the second
        await asyncio.gather(first, *second)
        third = await submit(b, item(3), item(4))
        outs = await asyncio.gather(first, *second, *third)
        # an idle instance is woken by 3 and takes its batch when it starts: 4 joins it unless the thread was
        # quicker than the next submit
        assert rt.batches[:2] == [[0.0], [1.0, 2.0, 2.0]] and rt.batches[2:] in ([[3.0, 4.0]], [[3.0], [4.0]])
        for request_out, tag in zip(outs, [0, 1, 2, 3, 4], strict=True):
            assert torch.all(request_out["y"][:, 0] == 2 * tag)

    run(body)


def test_a_delivery_does_not_start_a_partial_batch_before_its_queue_delay() -> None:
    async def body(b: DynamicBatcher, rt: HeldRuntime, clock: ManualClock, m: Metrics) -> None:
        rt.release.clear()
        [first] = await submit(b, item(0, rows=2))  # a preferred size: runs at once, and is held
        await asyncio.to_thread(rt.wait_running)
        waiting = await submit(b, item(1))  # 1 of a preferred 2, behind a busy instance
        rt.release.set()
        await first
        await settle()
        assert rt.batches == [[0.0, 0.0]]  # the finished batch did not start the partial one early
        clock.advance(100_000)
        await asyncio.gather(*waiting)
        assert rt.batches == [[0.0, 0.0], [1.0]]

    run(body, "max_queue_delay_microseconds: 100 preferred_batch_size: [2]")
