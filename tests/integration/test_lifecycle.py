"""Process lifecycle through the real server: SIGTERM drains without losing work, explicit model control,
a broken model beside good ones."""

from __future__ import annotations

import concurrent.futures
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.models import build_slow_model, build_test_repository
from tests.support.numerics import SLOW, SMALL_MLP
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def slow_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    root = tmp_path_factory.mktemp("slow_repo")
    return root, build_slow_model(root)


def slow_request(url: str, data: np.ndarray) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return client.infer("slow", [tensor]).as_numpy("OUTPUT0")


def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(
        slow_repository: tuple[Path, torch.nn.Module]) -> None:
    root, module = slow_repository
    server = ServerProcess(root, "--exit-timeout-secs", "60")
    try:
        drain_under_sigterm(server, module)
    finally:
        server.stop()


def drain_under_sigterm(server: ServerProcess, module: torch.nn.Module) -> None:
    data = np.random.rand(256, 1024).astype(np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(data)).numpy()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(slow_request, server.grpc_url, data) for _ in range(6)]
        time.sleep(0.5)  # the requests are queued or running now
        in_flight = [f for f in futures if not f.done()]
        assert len(in_flight) >= 3, "the slow model is too fast to test draining"
        server.signal()
        time.sleep(0.2)
        with pytest.raises(InferenceServerException) as refused:
            slow_request(server.grpc_url, data[:1])
        assert refused.value.status() == "StatusCode.UNAVAILABLE", refused.value
        assert "shutting down" in refused.value.message(), refused.value
        http = httpclient.InferenceServerClient(server.http_url)
        assert not http.is_server_ready()  # listeners stay open while draining: readiness is 503 at once
        assert http.is_server_live()
        tensor = httpclient.InferInput("INPUT0", [1, 1024], "FP32").set_data_from_numpy(data[:1])
        with pytest.raises(InferenceServerException) as refused_http:
            http.infer("slow", [tensor])
        assert refused_http.value.status() == "503", refused_http.value
        assert "shutting down" in refused_http.value.message(), refused_http.value
        with pytest.raises(urllib.error.HTTPError) as ready:
            urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=2)
        assert ready.value.code == 503 and b"shutting down" in ready.value.read()
        http.close()
        for future in futures:
            SLOW.assert_close(future.result(timeout=120), expected)
    assert server.process.wait(60) == 0


def test_explicit_mode_loads_and_unloads_on_request(tmp_path: Path) -> None:
    modules = build_test_repository(tmp_path)
    shutil.rmtree(tmp_path / "broken")
    server = ServerProcess(tmp_path, "--model-control-mode", "explicit", "--load-model", "mlp")
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_model_ready("mlp") and not client.is_model_ready("mixed")
        client.load_model("mixed")
        assert client.is_model_ready("mixed")
        http = httpclient.InferenceServerClient(server.http_url)
        http.unload_model("mlp")
        assert not http.is_model_ready("mlp")
        states = {row["name"]: row["state"] for row in http.get_model_repository_index()}
        assert states == {"mlp": "UNAVAILABLE", "mixed": "READY", "mlp_batched": "UNAVAILABLE"}
        http.load_model("mlp")
        x = np.random.rand(1, 16).astype(np.float32)
        tensor = httpclient.InferInput("INPUT0", [1, 16], "FP32")
        tensor.set_data_from_numpy(x)
        out = http.infer("mlp", [tensor]).as_numpy("OUTPUT0")
        SMALL_MLP.assert_close(out, modules["mlp"](torch.from_numpy(x)).detach().numpy())
    finally:
        assert server.stop() == 0


def test_broken_model_is_reported_and_others_serve(server: ServerProcess) -> None:
    http = httpclient.InferenceServerClient(server.http_url)
    assert http.is_server_ready()
    rows = {row["name"]: row for row in http.get_model_repository_index()}
    assert rows["broken"]["state"] == "UNAVAILABLE"
    assert "max_batch_size" in rows["broken"]["reason"]
    assert rows["mlp"]["state"] == "READY"
    assert not http.is_model_ready("broken")
    with pytest.raises(InferenceServerException, match="not ready"):
        tensor = httpclient.InferInput("INPUT0", [1, 16], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 16), np.float32))
        http.infer("broken", [tensor])


def test_grpc_client_deadline_is_deadline_exceeded_and_work_is_dropped(
        slow_repository: tuple[Path, torch.nn.Module]) -> None:
    """The design table's 504 / DEADLINE_EXCEEDED row: KServe v2 has no HTTP deadline, so it arises from gRPC.

    Four heavy requests occupy the single instance; a small one queued behind them with a short deadline gets
    DEADLINE_EXCEEDED and is never computed (executions grow by five: the four and the small one sent after)."""
    root, module = slow_repository
    server = ServerProcess(root)
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)

        def stats() -> tuple[int, int, int]:
            (row,) = client.get_inference_statistics("slow").model_stats
            return row.execution_count, row.inference_stats.success.count, row.inference_stats.fail.count

        before = stats()
        heavy = np.random.rand(256, 1024).astype(np.float32)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            busy = [pool.submit(slow_request, server.grpc_url, heavy) for _ in range(4)]
            time.sleep(0.2)
            small = grpcclient.InferInput("INPUT0", [1, 1024], "FP32")
            small.set_data_from_numpy(np.zeros((1, 1024), np.float32))
            with pytest.raises(InferenceServerException) as info:
                client.infer("slow", [small], client_timeout=0.2)
            assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED", info.value
            assert not all(f.done() for f in busy), "the heavy requests finished too soon to queue the small one"
            with torch.inference_mode():
                expected = module(torch.from_numpy(heavy)).numpy()
            for future in busy:
                SLOW.assert_close(future.result(timeout=120), expected)
        assert client.infer("slow", [small]).as_numpy("OUTPUT0").shape == (1, 1024)
        deadline = time.monotonic() + 10
        while stats()[2] == before[2] and time.monotonic() < deadline:
            time.sleep(0.05)
        after = stats()
        assert after[1] - before[1] == 5 and after[2] - before[2] == 1, (before, after)
        assert after[0] - before[0] == 5, f"the expired request was computed: {before} -> {after}"
    finally:
        assert server.stop() == 0
