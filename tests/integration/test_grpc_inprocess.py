"""The gRPC servicer in this process, where the test can watch the dataplane: client cancellation drops queued
work, the grpc.health.v1 service follows readiness (starting, ready, draining), and a failure inside the
runtime answers INTERNAL without harming later requests.

The model is the real exported SmallMLP on the real CPU runtime; the only addition is a gate in front of the
runtime so the test decides when the first request may finish, which makes "the second one is queued" certain.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from server.dataplane import DataPlane
from server.metrics import Metrics
from server.registry import Registry
from server.repository_control import RepositoryControl
from server.runtime.select import create_runtime
from server.settings import Settings
from server.transport.grpc import create_grpc_server
from tests.support.gated import GatedRuntime
from tests.support.models import EMBED_CONFIG, MLP_CONFIG, Embed, SmallMLP, write_model
from tests.support.numerics import SMALL_MLP


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    root = tmp_path_factory.mktemp("grpc_inprocess")
    module = SmallMLP(seed=3)
    write_model(root, "mlp", module, (torch.randn(2, 16),), MLP_CONFIG.format(name="mlp", extra=""),
                sparse={"hidden.weight"})
    write_model(root, "embed", Embed(), (torch.zeros(2, 3, dtype=torch.int64),), EMBED_CONFIG)
    return root, module


Scenario = Callable[[grpc.aio.Channel, DataPlane, dict[str, GatedRuntime], threading.Event], Awaitable[None]]


async def run_scenario(root: Path, scenario: Scenario) -> None:
    settings = Settings(model_repository=root, host="127.0.0.1", grpc_port=0, http_port=0, metrics_port=0,
                        device="cpu")
    metrics = Metrics()
    gate = threading.Event()
    runtimes: dict[str, GatedRuntime] = {}

    def build(version_dir: Path, config: Any) -> GatedRuntime:
        runtimes[config.name] = GatedRuntime(create_runtime(version_dir, config, "cpu"), gate)
        return runtimes[config.name]

    registry = Registry(root, metrics, build)
    dataplane = DataPlane(registry, settings, metrics)
    server, port = create_grpc_server(dataplane, RepositoryControl(registry, settings), settings)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await scenario(channel, dataplane, runtimes, gate)
    finally:
        gate.set()
        await server.stop(grace=None)
        await registry.close()


def infer_request(data: np.ndarray, request_id: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="mlp", id=request_id, raw_input_contents=[data.tobytes()])
    request.inputs.add(name="INPUT0", datatype="FP32", shape=list(data.shape))
    return request


async def load(dataplane: DataPlane) -> None:
    await dataplane.registry.load_all()
    if hasattr(dataplane, "starting"):
        dataplane.starting = False  # what the app does once the initial loads finished


def test_cancelled_request_is_dropped_before_it_runs(repository: tuple[Path, torch.nn.Module]) -> None:
    root, module = repository
    data = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)

    async def scenario(channel: grpc.aio.Channel, dataplane: DataPlane, runtimes: dict[str, GatedRuntime],
                       gate: threading.Event) -> None:
        await load(dataplane)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        first = stub.ModelInfer(infer_request(data, "first"))
        while not runtimes["mlp"].calls:  # the first request holds the model's only instance
            await asyncio.sleep(0.01)
        second = stub.ModelInfer(infer_request(data, "second"))
        scheduler = dataplane.registry.resolve("mlp")[1].scheduler
        while scheduler.pending() < 2:  # the second is queued behind it
            await asyncio.sleep(0.01)
        second.cancel()
        while scheduler.pending() > 1:  # the server dropped it (the handler's CancelledError reached the queue)
            await asyncio.sleep(0.01)
        gate.set()
        reply = await first
        assert reply.id == "first"
        out = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(2, 4)
        with torch.inference_mode():
            SMALL_MLP.assert_close(out, module(torch.from_numpy(data)).numpy())
        with pytest.raises(asyncio.CancelledError):
            await second
        stats = dataplane.statistics("mlp")[0][2]
        assert runtimes["mlp"].calls == 1, "the cancelled request must never reach the runtime"
        assert (stats.execution_count, stats.success.count, stats.fail.count) == (1, 1, 1)
        failures = dataplane.metrics.registry.get_sample_value(
            "twofour_request_failure_total", {"model": "mlp", "version": "1", "reason": "cancelled"})
        assert failures == 1

    asyncio.run(asyncio.wait_for(run_scenario(root, scenario), 60))


def test_health_service_follows_readiness(repository: tuple[Path, torch.nn.Module]) -> None:
    root, _ = repository

    async def scenario(channel: grpc.aio.Channel, dataplane: DataPlane, runtimes: dict[str, GatedRuntime],
                       gate: threading.Event) -> None:
        health = health_pb2_grpc.HealthStub(channel)
        ask = health_pb2.HealthCheckRequest
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        watch = health.Watch(ask(service=""))
        if hasattr(dataplane, "starting"):  # the app's startup phase: ports open, models not loaded yet
            assert (await health.Check(ask(service=""))).status == not_serving
            assert (await watch.read()).status == not_serving
        await load(dataplane)
        assert (await health.Check(ask(service=""))).status == serving
        assert (await health.Check(ask(service="inference.GRPCInferenceService"))).status == serving
        assert (await watch.read()).status == serving
        dataplane.begin_shutdown()
        assert (await health.Check(ask(service=""))).status == not_serving
        assert (await watch.read()).status == not_serving
        watch.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(ask(service="no.such.Service"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    asyncio.run(asyncio.wait_for(run_scenario(root, scenario), 60))


def test_runtime_failure_is_internal_and_the_server_carries_on(repository: tuple[Path, torch.nn.Module],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    root, _ = repository

    def lookup(indices: list[int], request_id: str) -> pb.ModelInferRequest:
        data = np.array([indices], dtype=np.int64)
        request = pb.ModelInferRequest(model_name="embed", id=request_id, raw_input_contents=[data.tobytes()])
        request.inputs.add(name="INDEX", datatype="INT64", shape=[1, 3])
        return request

    async def scenario(channel: grpc.aio.Channel, dataplane: DataPlane, runtimes: dict[str, GatedRuntime],
                       gate: threading.Event) -> None:
        gate.set()
        await load(dataplane)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.ModelInfer(lookup([1, 99, 2], "bad"))
        assert failure.value.code() == grpc.StatusCode.INTERNAL
        assert "IndexError" in failure.value.details() and "index out of range" in failure.value.details()
        reply = await stub.ModelInfer(lookup([1, 9, 2], "good"))
        assert reply.id == "good" and list(reply.outputs[0].shape) == [1, 3, 4]
        stats = dataplane.statistics("embed")[0][2]
        assert (stats.success.count, stats.fail.count) == (1, 1)

    with caplog.at_level(logging.ERROR):
        asyncio.run(asyncio.wait_for(run_scenario(root, scenario), 60))
    assert any("embed" in r.getMessage() and r.exc_info for r in caplog.records), "the failure must be logged"
