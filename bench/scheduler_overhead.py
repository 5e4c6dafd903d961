"""Per-request cost of the schedulers alone (no transport): DirectScheduler vs DynamicBatcher, in process.

The runtime is a real but nearly free one (y = x[:, :10] + 1), so what is timed is the scheduling path itself:
queueing, the executor hop, merge/split, futures and metrics. Prints median wall µs per request and process CPU µs
per request at concurrency 1 and 32.

    python bench/scheduler_overhead.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.batching.factory import create_scheduler  # noqa: E402
from server.batching.work import WorkItem  # noqa: E402
from server.metrics import Metrics  # noqa: E402


class Cheap:
    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"OUTPUT0": batch["INPUT0"][:, :10] + 1}

    def describe(self) -> None:
        return None

    def close(self) -> None:
        pass


def config(batching: bool) -> mc.ModelConfig:
    text = 'name: "mlp" max_batch_size: 64 instance_group [{ count: 1 }]'
    if batching:
        text += " dynamic_batching { max_queue_delay_microseconds: 0 }"
    return text_format.Parse(text, mc.ModelConfig())


async def measure(batching: bool, concurrency: int, seconds: float) -> tuple[float, float, float]:
    scheduler = create_scheduler(config(batching), Cheap(), Metrics(gpu=False).recorder("mlp", "1"))
    x = torch.randn(1, 784)
    latencies: list[int] = []
    end = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter_ns()
            item = WorkItem(inputs={"INPUT0": x}, rows=1, arrival_ns=t0)
            await scheduler.infer(item)
            latencies.append(time.perf_counter_ns() - t0)

    await asyncio.gather(*(worker() for _ in range(3)))  # warm-up
    latencies.clear()
    end = time.perf_counter() + seconds
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await scheduler.close()
    n = len(latencies)
    return statistics.median(latencies) / 1e3, cpu / n * 1e6, n / wall


def main() -> None:
    torch.set_num_threads(1)
    print(f"{'scheduler':<10} {'conc':>4} {'p50 us':>8} {'cpu us/req':>10} {'req/s':>8}")
    for concurrency in (1, 32):
        for batching in (False, True):
            p50, cpu, rate = asyncio.run(measure(batching, concurrency, 3.0))
            name = "batched" if batching else "direct"
            print(f"{name:<10} {concurrency:>4} {p50:>8.1f} {cpu:>10.1f} {rate:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
