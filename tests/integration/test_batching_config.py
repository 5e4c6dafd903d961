"""Batching config over the wire (issue 4): the request's `priority` and `timeout` parameters reach the queue, a
model without dynamic_batching runs every request alone, queue rejections count as failures with reason
`unavailable`, `preserve_ordering` keeps a stream's answers in request order even when a priority reorders the
work, and a policy for a priority level that does not exist refuses the model."""

from __future__ import annotations

import asyncio
import queue
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.support.bursts import burst
from tests.support.models import write_model
from tests.support.server import ServerProcess, running_server

WIDTH = 256


class Slow(torch.nn.Module):
    """A chain of GEMMs slow enough (~10 ms a row) that a burst finds the instance busy and queues."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.weight = torch.nn.Parameter(torch.randn(WIDTH, WIDTH) / 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(200):
            x = torch.tanh(x @ self.weight)
        return x


def config(name: str, batching: str | None, max_batch_size: int = 1) -> str:
    text = f"""
name: "{name}"
backend: "twofour"
max_batch_size: {max_batch_size}
input [{{ name: "INPUT0" data_type: TYPE_FP32 dims: [{WIDTH}] }}]
output [{{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [{WIDTH}] }}]
"""
    return text + (f"dynamic_batching {{ {batching} }}\n" if batching is not None else "")


MODELS = {
    # level 2 (the default) holds one queued request; level 1 is unbounded
    "levels": config("levels", "priority_levels: 2 default_priority_level: 2 "
                               "priority_queue_policy { key: 2 value { max_queue_size: 1 } }"),
    # a 10 s queue timeout that a request may shorten with its own `timeout` parameter
    "override": config("override", "default_queue_policy { default_timeout_microseconds: 10000000 "
                                   "allow_timeout_override: true timeout_action: REJECT }"),
    "plain": config("plain", None, max_batch_size=8),
    # two priority levels, so a high-priority request overtakes queued ones; only "ordered" preserves ordering
    "ordered": config("ordered", "priority_levels: 2 default_priority_level: 2 preserve_ordering: true"),
    "unordered": config("unordered", "priority_levels: 2 default_priority_level: 2"),
    "stray": config("stray", "priority_levels: 2 default_priority_level: 1 "
                             "priority_queue_policy { key: 5 value { max_queue_size: 1 } }"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("batching_config_repo")
    module = Slow()
    for name, text in MODELS.items():
        write_model(root, name, module, (torch.randn(2, WIDTH),), text)
    with running_server(root) as process:
        yield process


def scrape(server: ServerProcess, model: str) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        text = r.read().decode()
    return {(s.name, s.labels.get("reason", s.labels.get("le", ""))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.labels.get("model") == model}


async def grpc_burst(server: ServerProcess, model: str, count: int, **kwargs: int) -> list[str]:
    return await burst(server, model, count, WIDTH, "grpc", **kwargs)


async def http_burst(server: ServerProcess, model: str, count: int, **kwargs: int) -> list[str]:
    return await burst(server, model, count, WIDTH, "http", **kwargs)


def test_priority_parameter_picks_the_level(server: ServerProcess) -> None:
    before = scrape(server, "levels")
    default_level = asyncio.run(grpc_burst(server, "levels", 10))
    rejected = [m for m in default_level if m]
    assert rejected and all("queue of priority level 2 is full" in m for m in rejected)
    assert asyncio.run(grpc_burst(server, "levels", 10, priority=1)) == [""] * 10  # level 1 has no bound
    after = scrape(server, "levels")
    failures = ("twofour_request_failure_total", "unavailable")
    assert after[failures] - before.get(failures, 0.0) == len(rejected)  # the error table's reason, once each
    successes = ("twofour_request_success_total", "")
    assert after[successes] - before.get(successes, 0.0) == 20 - len(rejected)


def test_timeout_parameter_shortens_the_queue_timeout(server: ServerProcess) -> None:
    assert asyncio.run(http_burst(server, "override", 6)) == [""] * 6  # 10 s default: nobody times out
    results = asyncio.run(http_burst(server, "override", 6, timeout=1000))  # 1 ms override
    timed_out = [m for m in results if m]
    assert timed_out and all("timed out in the queue" in m for m in timed_out)


def test_without_dynamic_batching_each_request_runs_alone(server: ServerProcess) -> None:
    before = scrape(server, "plain")
    assert asyncio.run(grpc_burst(server, "plain", 8)) == [""] * 8
    after = scrape(server, "plain")

    def delta(name: str, le: str = "") -> float:
        return after.get((name, le), 0.0) - before.get((name, le), 0.0)

    assert delta("twofour_execution_total") == 8 and delta("twofour_inference_total") == 8
    assert delta("twofour_batch_size_bucket", "1.0") == 8  # every execution had exactly one row


def stream_order(server: ServerProcess, model: str) -> list[str]:
    """Ids in the order a stream answered: six default-priority requests, then one at priority 1."""
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("INPUT0", [1, WIDTH], "FP32")
    tensor.set_data_from_numpy(np.ones((1, WIDTH), np.float32))
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(6):
            client.async_stream_infer(model, [tensor], request_id=f"r{i}")
        client.async_stream_infer(model, [tensor], request_id="urgent", priority=1)
        got = [answers.get(timeout=30) for _ in range(7)]
    finally:
        client.stop_stream()
        client.close()
    assert [error for _, error in got] == [None] * 7
    return [result.get_response().id for result, _ in got]


def test_preserve_ordering_keeps_a_streams_answers_in_request_order(server: ServerProcess) -> None:
    # the control: without the flag the urgent request overtakes the queue, and its answer leaves early
    unordered = stream_order(server, "unordered")
    assert unordered.index("urgent") < unordered.index("r5")
    assert stream_order(server, "ordered") == [f"r{i}" for i in range(6)] + ["urgent"]
    assert "preserve_ordering" not in server.output()  # honoured, so nothing to warn about


def test_policy_for_a_missing_priority_level_refuses_the_model(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    assert not client.is_model_ready("stray")
    tensor = httpclient.InferInput("INPUT0", [1, WIDTH], "FP32")
    tensor.set_data_from_numpy(np.ones((1, WIDTH), np.float32))
    with pytest.raises(InferenceServerException, match=r"priority_queue_policy names priority levels \[5\]"):
        client.infer("stray", [tensor])
