"""The server side of the front-process hot path (server/transport/grpc_fastpath.py) on a real Unix socket.

Real frames in, real frames out, through the real dataplane, registry, schedulers and CPU runtimes of two exported
models; the only addition is a gate in front of one runtime, so the test decides when its first request may
finish and "the second one is queued" is certain.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from tritonclient.grpc import service_pb2 as pb

from server.dataplane import DataPlane
from server.metrics import Metrics
from server.registry import Registry
from server.runtime.select import create_runtime
from server.settings import Settings
from server.transport.grpc_fastpath import FastPath, code_number
from server.transport.grpc_frames import CALL, CANCEL, HEADER, REPLY, Frame, pack
from tests.support.gated import GatedRuntime
from tests.support.models import EMBED_CONFIG, MLP_CONFIG, Embed, SmallMLP, write_model
from tests.support.numerics import SMALL_MLP


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    root = tmp_path_factory.mktemp("fastpath")
    module = SmallMLP(seed=5)
    write_model(root, "mlp", module, (torch.randn(2, 16),),
                MLP_CONFIG.format(name="mlp", extra="dynamic_batching { }"))
    write_model(root, "embed", Embed(), (torch.zeros(2, 3, dtype=torch.int64),), EMBED_CONFIG)
    return root, module


def mlp_call(data: np.ndarray, request_id: str) -> bytes:
    request = pb.ModelInferRequest(model_name="mlp", id=request_id, raw_input_contents=[data.tobytes()])
    request.inputs.add(name="INPUT0", datatype="FP32", shape=list(data.shape))
    return request.SerializeToString()


def embed_call(rows: int) -> bytes:
    index = np.zeros((rows, 3), np.int64)
    request = pb.ModelInferRequest(model_name="embed", raw_input_contents=[index.tobytes()])
    request.inputs.add(name="INDEX", datatype="INT64", shape=[rows, 3])
    return request.SerializeToString()


def read_frame(sock: socket.socket) -> Frame:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the server closed the connection"
            data += chunk
        return data

    length, call_id, kind, status = HEADER.unpack(exactly(HEADER.size))
    return Frame(kind, call_id, status, exactly(length) if length else b"")


async def until(predicate: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


@contextlib.asynccontextmanager
async def serving(root: Path, tmp_path: Path, limit: int, gated: set[str]
                  ) -> AsyncIterator[tuple[socket.socket, DataPlane, dict[str, GatedRuntime], threading.Event]]:
    """The real dataplane over `root`, a FastPath on a Unix socket, and the front's end of one connection.

    Models named in `gated` run behind one gate (yielded, closed until the test opens it)."""
    settings = Settings(model_repository=root, device="cpu")
    metrics, gate = Metrics(), threading.Event()
    runtimes: dict[str, GatedRuntime] = {}

    def build(version_dir: Path, config: Any) -> Any:
        inner = create_runtime(version_dir, config, "cpu")
        if config.name not in gated:
            return inner
        runtimes[config.name] = GatedRuntime(inner, gate)
        return runtimes[config.name]

    registry = Registry(root, metrics, build)
    dataplane = DataPlane(registry, settings, metrics)
    await registry.load_all()
    dataplane.starting = False
    fast = FastPath(dataplane, limit)
    path = str(tmp_path / "infer.sock")
    await fast.start(path)
    front = socket.socket(socket.AF_UNIX)
    await asyncio.to_thread(front.connect, path)
    try:
        yield front, dataplane, runtimes, gate
    finally:
        gate.set()
        front.close()
        fast.close()
        await registry.close()


def test_calls_answer_by_id_refusals_at_once_and_a_cancelled_call_never_runs(
        repository: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    root, module = repository
    data = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    limit = max(len(embed_call(4)), len(mlp_call(data, "second"))) + 16  # 4 embed rows fit, their reply does not

    async def main() -> tuple[dict[int, Frame], DataPlane, dict[str, GatedRuntime]]:
        async with serving(root, tmp_path, limit, {"mlp"}) as (front, dataplane, runtimes, gate):
            front.sendall(pack(CALL, 1, mlp_call(data, "first")))
            await until(lambda: runtimes["mlp"].calls == 1)  # holds the model's only instance
            front.sendall(pack(CALL, 2, mlp_call(data, "second")) + pack(CALL, 3, b"\xff\xff\xff")
                          + pack(CALL, 4, pb.ModelInferRequest(model_name="missing").SerializeToString())
                          + pack(CALL, 5, embed_call(4)) + pack(CALL, 6, embed_call(1)))
            replies = {}
            for _ in range(4):  # 3, 4, 5 and 6 answer while 1 and 2 wait for the gate
                frame = await asyncio.to_thread(read_frame, front)
                replies[frame.call_id] = frame
            scheduler = dataplane.registry.resolve("mlp")[1].scheduler
            assert scheduler.pending() == 2
            front.sendall(pack(CANCEL, 2))
            await until(lambda: scheduler.pending() == 1)  # withdrawn from the queue
            gate.set()
            frame = await asyncio.to_thread(read_frame, front)
            replies[frame.call_id] = frame
        return replies, dataplane, runtimes

    replies, dataplane, runtimes = asyncio.run(main())
    assert set(replies) == {1, 3, 4, 5, 6} and all(r.kind == REPLY for r in replies.values())
    first = pb.ModelInferResponse.FromString(replies[1].payload)
    assert replies[1].status == 0 and first.id == "first"
    with torch.inference_mode():
        expected = module(torch.from_numpy(data)).numpy()
    SMALL_MLP.assert_close(np.frombuffer(first.raw_output_contents[0], np.float32).reshape(2, 4), expected)
    assert replies[3].status == code_number(grpc.StatusCode.INVALID_ARGUMENT)
    assert "ModelInfer is not a valid protobuf message" in replies[3].payload.decode()
    assert replies[4].status == code_number(grpc.StatusCode.NOT_FOUND)
    assert "missing" in replies[4].payload.decode()
    assert replies[5].status == code_number(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert f"exceeds the {limit}-byte gRPC message limit" in replies[5].payload.decode()
    assert replies[6].status == 0
    assert runtimes["mlp"].calls == 1  # the cancelled second request was never computed
    stats = dataplane.metrics.stats("mlp", "1")
    assert stats is not None and stats.success.count == 1 and stats.fail.count == 1  # the cancel is a failure


def test_a_front_that_goes_away_cancels_its_queued_calls(repository: tuple[Path, torch.nn.Module],
                                                         tmp_path: Path) -> None:
    root, _ = repository
    data = np.ones((1, 16), np.float32)

    async def main() -> int:
        async with serving(root, tmp_path, 1 << 20, {"mlp"}) as (front, dataplane, runtimes, gate):
            scheduler = dataplane.registry.resolve("mlp")[1].scheduler
            front.sendall(b"".join(pack(CALL, i, mlp_call(data, str(i))) for i in range(1, 5)))
            await until(lambda: scheduler.pending() == 4 and runtimes["mlp"].calls == 1)
            front.close()  # the front died: the three queued calls have nobody to answer
            await until(lambda: scheduler.pending() == 1)
            gate.set()
            await until(lambda: scheduler.pending() == 0)
            # three withdrawn, one computed for nobody: all four are recorded as cancelled
            await until(lambda: dataplane.metrics.stats("mlp", "1").fail.count == 4)  # type: ignore[union-attr]
            return runtimes["mlp"].calls

    assert asyncio.run(main()) == 1  # the queued calls were never computed


def test_calls_cancelled_as_they_run_are_each_recorded_once_and_free_their_slot(
        repository: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    """Cancels that race the batcher (queued, taken, computing, answered) must neither leak an in-flight slot
    nor record a request twice: every call ends as one success or one failure, and the server drains."""
    root, _ = repository
    data = np.ones((1, 16), np.float32)
    calls = 200

    async def main() -> tuple[int, int, bool, int]:
        async with serving(root, tmp_path, 1 << 20, set()) as (front, dataplane, _, _):
            for start in range(0, calls, 20):  # bursts: some cancels find their call queued, some computing
                frames = []
                for i in range(start + 1, start + 21):
                    frames.append(pack(CALL, i, mlp_call(data, str(i))))
                    if i % 2 == 0:
                        frames.append(pack(CANCEL, i))
                front.sendall(b"".join(frames))
                await asyncio.sleep(0.002)
            stats = dataplane.metrics.stats("mlp", "1")
            assert stats is not None
            await until(lambda: stats.success.count + stats.fail.count == calls)
            drained = await dataplane.drain(5)
            replies = 0
            front.settimeout(0.5)
            try:
                while True:
                    read_frame(front)
                    replies += 1
            except (TimeoutError, AssertionError):
                pass
            return stats.success.count, stats.fail.count, drained, replies

    success, failed, drained, replies = asyncio.run(main())
    assert success + failed == calls and success >= calls // 2 and drained
    assert replies == success  # a reply for every success, none for a cancelled call
