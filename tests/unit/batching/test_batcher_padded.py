"""DynamicBatcher on a model that pads: requests of different lengths share one execution, each gets its own
answer back at its own length, bad requests are refused before queueing, and the padding is counted."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.batching.batcher import DynamicBatcher
from server.batching.clock import ManualClock
from server.batching.work import WorkItem
from server.errors import ErrorKind, ServingError
from server.metrics import Metrics
from tests.unit.batching.conftest import settle

CONFIG = """
name: "enc" max_batch_size: 8 dynamic_batching { max_queue_delay_microseconds: 0 }
input { name: "input_ids" data_type: TYPE_INT64 dims: [-1] }
input { name: "attention_mask" data_type: TYPE_INT64 dims: [-1] }
output { name: "hidden" data_type: TYPE_FP32 dims: [-1] }
output { name: "pooled" data_type: TYPE_FP32 dims: [1] }
parameters { key: "pad_to_longest" value { string_value: "attention_mask" } }
"""


class MaskedRuntime:
    """A real masked computation (hidden = 2 x ids, pooled = masked mean); the test can hold it busy."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.release = threading.Event()
        self.running = threading.Semaphore(0)

    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.shapes.append(tuple(batch["input_ids"].shape))
        self.running.release()
        assert self.release.wait(10)
        hidden = batch["input_ids"].to(torch.float32) * 2
        mask = batch["attention_mask"].to(torch.float32)
        return {"hidden": hidden, "pooled": ((hidden * mask).sum(1) / mask.sum(1)).unsqueeze(1)}

    def describe(self) -> None:  # pragma: no cover
        return None

    def close(self) -> None:
        pass


def work(length: int, start: int) -> WorkItem:
    ids = torch.arange(start, start + length, dtype=torch.int64).unsqueeze(0)
    return WorkItem(inputs={"input_ids": ids, "attention_mask": torch.ones_like(ids)}, rows=1, arrival_ns=0)


def test_mixed_lengths_share_one_execution_and_come_back_at_their_own_length() -> None:
    metrics = Metrics(gpu=False)
    runtime = MaskedRuntime()

    async def main() -> None:
        config = text_format.Parse(CONFIG, mc.ModelConfig())
        batcher = DynamicBatcher(config, runtime, metrics.recorder("enc", "1"), 1, clock=ManualClock(1))
        try:
            first = asyncio.create_task(batcher.infer(work(4, 1)))  # holds the instance
            await asyncio.to_thread(runtime.running.acquire, True, 10)
            items = [work(n, 10 * n) for n in (3, 7, 5)]
            tasks = [asyncio.create_task(batcher.infer(i)) for i in items]
            await settle()
            runtime.release.set()
            await first
            answers = await asyncio.gather(*tasks)
            for item, out in zip(items, answers, strict=True):
                ids = item.inputs["input_ids"].to(torch.float32)
                assert torch.equal(out["hidden"], ids * 2)  # narrowed back to its own length
                assert torch.equal(out["pooled"], (ids * 2).mean(1, keepdim=True))  # padding changed nothing
            with pytest.raises(ServingError) as refused:
                bad = work(3, 1)
                bad.inputs["attention_mask"] = torch.ones(1, 4, dtype=torch.int64)
                await batcher.infer(bad)
            assert refused.value.kind == ErrorKind.INVALID_ARGUMENT and "same length" in str(refused.value)
        finally:
            runtime.release.set()
            await batcher.close()

    asyncio.run(main())
    assert runtime.shapes == [(1, 4), (3, 7)]  # the three queued lengths ran as one padded batch
    stats = metrics.stats("enc", "1")
    assert stats is not None and stats.execution_count == 2 and stats.inference_count == 4
    assert (stats.padding_tokens, stats.batch_tokens) == (4 + 2, 4 + 21)  # 7-3 + 7-5 pads of 4 + 3 x 7
