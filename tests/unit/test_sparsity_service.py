"""twofour.v1.SparsityService on a real grpc.aio server over a real registry, dataplane and CPU runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import torch
from google.protobuf import json_format

from server.dataplane import DataPlane
from server.metrics import Metrics
from server.proto import sparsity_pb2 as pb
from server.proto import sparsity_pb2_grpc as pb_grpc
from server.registry import Registry
from server.runtime.gpu_decision import DENSE, LayerShape, decide_layer
from server.runtime.select import create_runtime
from server.settings import Settings
from server.transport.sparsity_service import add_sparsity_service, report_to_proto
from tests.support.models import MLP_CONFIG, SmallMLP, write_model


async def _serve_and_ask(root: Path, requests: list[pb.ModelSparsityRequest]) -> tuple[dict, list[object]]:
    metrics = Metrics()
    registry = Registry(root, metrics, lambda version_dir, config: create_runtime(version_dir, config, "cpu"))
    await registry.load_all()
    dataplane = DataPlane(registry, Settings(model_repository=root), metrics)
    server = grpc.aio.server()
    add_sparsity_service(server, dataplane)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    answers: list[object] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SparsityServiceStub(channel)
            for request in requests:
                try:
                    answers.append(await stub.ModelSparsity(request, timeout=10))
                except grpc.aio.AioRpcError as exc:
                    answers.append(exc)
        return dataplane.sparsity_report("mlp"), answers
    finally:
        await server.stop(None)
        await registry.close()


def test_the_grpc_report_carries_what_the_dataplane_reports(tmp_path: Path) -> None:
    write_model(tmp_path, "mlp", SmallMLP(), (torch.randn(2, 16),), MLP_CONFIG.format(name="mlp", extra=""),
                sparse={"hidden.weight"})
    report, (full, one, unknown, bad_version) = asyncio.run(_serve_and_ask(tmp_path, [
        pb.ModelSparsityRequest(name="mlp"), pb.ModelSparsityRequest(name="mlp", version="1"),
        pb.ModelSparsityRequest(name="nope"), pb.ModelSparsityRequest(name="mlp", version="7")]))
    assert isinstance(full, pb.ModelSparsityResponse) and full == report_to_proto(report)
    assert full.name == "mlp" and len(full.versions) == 1
    version = full.versions[0]
    assert version.device == "cpu" and list(version.sparse_layers) == ["hidden.weight"]
    assert dict(version.bytes_by_kind) == report["versions"][0]["bytes_by_kind"]
    assert json_format.MessageToDict(version.details) == report["versions"][0]["details"]
    assert one == full
    assert isinstance(unknown, grpc.aio.AioRpcError) and unknown.code() == grpc.StatusCode.NOT_FOUND
    assert "unknown model: 'nope'" in str(unknown.details())
    assert isinstance(bad_version, grpc.aio.AioRpcError) and bad_version.code() == grpc.StatusCode.NOT_FOUND


def test_a_gpu_decision_table_becomes_typed_layers() -> None:
    def clock(shape: LayerShape, kernel: str, rows: int) -> float:
        return 1.0 if kernel == DENSE else 0.8 if rows >= 64 else 1.5

    layers = [decide_layer("enc.fc1.weight", LayerShape(3072, 768), {1: 128, 8: 1024}, clock, True).as_dict(),
              decide_layer("head.weight", LayerShape(2, 768), {}, clock, True, problem="out_features 2").as_dict()]
    details = {"compute_dtype": "float16", "layers": layers, "sparse_weight_ratio": 0.5625, "gpu": None}
    report = {"name": "bert", "versions": [{
        "version": "3", "device": "cuda:0", "dtype": "float16", "sparse_layers": ["enc.fc1.weight", "head.weight"],
        "dense_layers": [], "bytes_by_kind": {"dense": 10, "sparse_2_4": 20}, "dense_equivalent_bytes": 40,
        "details": details}]}
    message = report_to_proto(report)
    fc1, head = message.versions[0].layers
    assert (fc1.layer, fc1.out_features, fc1.in_features, fc1.kernel) == ("enc.fc1.weight", 3072, 768, "sparse")
    assert [(b.batch, b.rows, b.kernel) for b in fc1.buckets] == [(1, 128, "sparse"), (8, 1024, "sparse")]
    assert fc1.buckets[0].speedup == pytest.approx(1.25)
    assert head.kernel == "dense" and head.reason == "out_features 2" and not head.buckets
    assert json_format.MessageToDict(message.versions[0].details) == details
