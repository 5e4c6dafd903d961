"""Dynamic batching in the real server: concurrent requests merge, every client gets its own rows back, and the
queue policies answer over the wire with the statuses the error table promises.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc.aio as grpc_aio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.bursts import burst as support_burst
from tests.support.models import write_model
from tests.support.numerics import SMALL_MLP
from tests.support.server import ServerProcess


def batch_counts(server: ServerProcess, model: str) -> tuple[float, float]:
    """(inferences, executions) so far for `model` version 1."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        text = r.read().decode()
    found = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
             if s.labels.get("model") == model}
    return found.get("twofour_inference_total", 0.0), found.get("twofour_execution_total", 0.0)


def test_concurrent_requests_are_merged_and_split_back(server: ServerProcess,
                                                       modules: dict[str, torch.nn.Module]) -> None:
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((1 + i % 3, 16), dtype=np.float32) for i in range(24)]
    inf0, exe0 = batch_counts(server, "mlp_batched")

    async def main() -> list[np.ndarray]:
        client = grpc_aio.InferenceServerClient(server.grpc_url)
        try:
            async def one(x: np.ndarray) -> np.ndarray:
                tensor = grpc_aio.InferInput("INPUT0", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                return (await client.infer("mlp_batched", [tensor])).as_numpy("OUTPUT0")
            return await asyncio.gather(*(one(x) for x in inputs))
        finally:
            await client.close()

    outputs = asyncio.run(main())
    with torch.inference_mode():
        for x, y in zip(inputs, outputs, strict=True):
            SMALL_MLP.assert_close(y, modules["mlp_batched"](torch.from_numpy(x)).numpy())
    inf1, exe1 = batch_counts(server, "mlp_batched")
    assert inf1 - inf0 == sum(x.shape[0] for x in inputs)
    assert exe1 - exe0 < len(inputs)  # 2 ms queue delay and 24 requests in flight: some were merged


class Heavy(torch.nn.Module):
    """A chain of 512x512 GEMMs: slow enough (tens of ms) that concurrent requests find the instance busy."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.weight = torch.nn.Parameter(torch.randn(512, 512) / 23)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(120):
            x = torch.tanh(x @ self.weight)
        return x


def heavy_config(name: str, policy: str) -> str:
    return f"""
name: "{name}"
backend: "twofour"
max_batch_size: 1
input [{{ name: "INPUT0" data_type: TYPE_FP32 dims: [512] }}]
output [{{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [512] }}]
dynamic_batching {{ default_queue_policy {{ {policy} }} }}
"""


@pytest.fixture(scope="module")
def policy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("policy_repo")
    example = (torch.randn(2, 512),)  # batch 2: export would specialise a batch of 1
    write_model(root, "bounded", Heavy(), example, heavy_config("bounded", "max_queue_size: 1"))
    write_model(root, "impatient", Heavy(), example,
                heavy_config("impatient", "default_timeout_microseconds: 1000 timeout_action: REJECT"))
    process = ServerProcess(root)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


async def burst(server: ServerProcess, model: str, count: int) -> list[str]:
    """Fire `count` requests at once over HTTP; '' for each success, the error message otherwise."""
    return await support_burst(server, model, count, 512)


def test_full_queue_answers_503_at_once(policy_server: ServerProcess) -> None:
    results = asyncio.run(burst(policy_server, "bounded", 12))
    rejected = [m for m in results if m]
    assert rejected and all("queue of priority level 1 is full" in m for m in rejected)
    # At least the first request is admitted. Whether a second one queues behind it depends on whether the batcher's
    # worker took the first off the queue before the next arrived (one event-loop turn): a race, so not asserted.
    assert results.count("") >= 1


def test_queue_timeout_reject_answers_503(policy_server: ServerProcess) -> None:
    results = asyncio.run(burst(policy_server, "impatient", 6))
    timed_out = [m for m in results if m]
    assert timed_out and all("timed out in the queue" in m for m in timed_out)
    assert "" in results
