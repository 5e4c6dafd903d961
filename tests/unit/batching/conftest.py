"""Shared pieces for the batching tests: a real runtime whose execution a test can hold, and config builders."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.batching.work import WorkItem


class HeldRuntime:
    """A real Runtime (y = 2x, s = row sums) that records each batch and can be held busy by the test.

    Holding is how a test fills the queue while an instance computes, which is exactly when batches form.
    """

    def __init__(self, fail_on_rows: int = -1) -> None:
        self.batches: list[list[float]] = []  # first column of every executed batch, in execution order
        self.release = threading.Event()
        self.release.set()
        self.running = threading.Semaphore(0)  # one release per started execution
        self.fail_on_rows = fail_on_rows
        self._lock = threading.Lock()

    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        with self._lock:
            self.batches.append(x[:, 0].tolist())
        self.running.release()
        if not self.release.wait(10):
            raise TimeoutError("test never released the runtime")
        if x.shape[0] == self.fail_on_rows:
            raise RuntimeError("boom: simulated kernel failure")
        return {"y": x * 2, "s": x.sum(dim=1, keepdim=True)}

    def describe(self) -> None:  # pragma: no cover - not used by the scheduler
        return None

    def close(self) -> None:
        pass

    def wait_running(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.running.acquire(timeout=10), "runtime was never called"


def make_config(batching: str = "", max_batch: int = 8) -> mc.ModelConfig:
    text = f'name: "m" max_batch_size: {max_batch} dynamic_batching {{ {batching} }}'
    return text_format.Parse(text, mc.ModelConfig())


def item(tag: float, rows: int = 1, width: int = 3, priority: int = 0, timeout_us: int = 0) -> WorkItem:
    """A request whose rows all start with `tag`, so a test can see where each request's rows went."""
    x = torch.full((rows, width), float(tag))
    x[:, 1:] = torch.arange(rows, dtype=torch.float32).unsqueeze(1)
    return WorkItem(inputs={"x": x}, rows=rows, arrival_ns=time.perf_counter_ns(), priority=priority,
                    timeout_ns=timeout_us * 1000)


async def settle(rounds: int = 20) -> None:
    """Let every ready task on the loop run (a submit decides its batch at once, in the submitting thread)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.fixture
def runtime() -> HeldRuntime:
    return HeldRuntime()
