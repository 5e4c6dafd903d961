"""The gRPC front process on a real server, both implementations (`--grpc-frontend native` and `python`): the
front owns the port, relays every method with its metadata, is restarted when it dies, dies with the server, and
a taken port fails the start. (`make test` also runs the whole gRPC suite under each front and inline.)

The native front needs `make native`; without its binary its cases skip, except under CI (CI=true), where a
missing binary is a failure: `make test` builds it, so CI must never silently test only the Python front."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.transport.grpc_front_command import NATIVE_NAME, front_command, native_binary
from tests.support.models import write_model
from tests.support.numerics import SMALL_MLP
from tests.support.server import ServerProcess, free_port

TOKEN = "front-secret"
FRONTS = ["native", "python"]


@pytest.fixture(params=FRONTS)
def front(request: pytest.FixtureRequest) -> str:
    if request.param == "native" and native_binary() is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the native gRPC front, but no {NATIVE_NAME} binary was found (make native)")
        pytest.skip(f"no {NATIVE_NAME} binary: build it with `make native`")
    return str(request.param)


def fronts(server_pid: int) -> list[int]:
    """Live children of the server that run the gRPC front module."""
    try:
        children = open(f"/proc/{server_pid}/task/{server_pid}/children").read().split()
    except OSError:
        return []
    found = []
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"server.transport.grpc_front" in command or NATIVE_NAME.encode() in command:
                found.append(int(child))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def infer(url: str, module: torch.nn.Module) -> None:
    client = grpcclient.InferenceServerClient(url)
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    request = grpcclient.InferInput("INPUT0", [3, 16], "FP32")
    request.set_data_from_numpy(x)
    out = client.infer("mlp", [request]).as_numpy("OUTPUT0")
    SMALL_MLP.assert_close(out, module(torch.from_numpy(x)).detach().numpy())


@pytest.fixture()
def front_server(model_repository: tuple[Path, dict[str, torch.nn.Module]], front: str) -> Iterator[ServerProcess]:
    process = ServerProcess(model_repository[0], "--grpc-frontend", front, "--repository-token", TOKEN)
    try:
        yield process
    finally:
        process.stop()


def test_the_front_process_owns_the_port_and_relays_every_method(
        front_server: ServerProcess, modules: dict[str, torch.nn.Module]) -> None:
    assert len(fronts(front_server.process.pid)) == 1
    infer(front_server.grpc_url, modules["mlp"])  # the fast path
    deadline = time.monotonic() + 30
    while (series := scrape(front_server))["twofour_grpc_frontend_cpu_seconds_total"] == 0:
        assert time.monotonic() < deadline, "the front's CPU counter never moved"
        infer(front_server.grpc_url, modules["mlp"])  # the native front needs a few hundred calls per clock tick
    assert series["twofour_grpc_frontend_resident_memory_bytes"] > 1e6
    assert series["twofour_grpc_frontend_restarts_total"] == 0
    client = grpcclient.InferenceServerClient(front_server.grpc_url)
    with pytest.raises(Exception, match="UNAUTHENTICATED"):  # relayed, and the missing token is noticed
        client.get_model_repository_index()
    index = client.get_model_repository_index(headers={"authorization": f"Bearer {TOKEN}"})
    assert {m.name for m in index.models} >= {"mlp", "mlp_batched"}
    with grpc.insecure_channel(front_server.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest())  # server streaming, relayed
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        with pytest.raises(grpc.RpcError) as unknown:
            channel.unary_unary("/inference.GRPCInferenceService/NoSuchMethod")(b"")
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as garbage:
            channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(b"\xff\xff\xff")
        assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid protobuf message" in str(garbage.value.details())


def http_infer(url: str, module: torch.nn.Module) -> None:
    client = httpclient.InferenceServerClient(url)
    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    request = httpclient.InferInput("INPUT0", [2, 16], "FP32").set_data_from_numpy(x)
    out = client.infer("mlp", [request]).as_numpy("OUTPUT0")
    SMALL_MLP.assert_close(out, module(torch.from_numpy(x)).detach().numpy())


def test_a_killed_front_is_restarted_on_the_same_port(
        front_server: ServerProcess, modules: dict[str, torch.nn.Module]) -> None:
    [first] = fronts(front_server.process.pid)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while front_server.output().count("serving port") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # the replacement says so once it has bound the port
    assert fronts(front_server.process.pid) not in ([], [first]), front_server.output()
    infer(front_server.grpc_url, modules["mlp"])
    http_infer(front_server.http_url, modules["mlp"])  # the native front's HTTP port came back with it
    assert front_server.alive()
    assert "exited with code -9" in front_server.output()
    assert scrape(front_server)["twofour_grpc_frontend_restarts_total"] == 1.0


def scrape(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in lines if line.startswith("twofour_grpc_front")}


def test_a_killed_server_takes_its_front_with_it(model_repository: tuple[Path, dict[str, torch.nn.Module]],
                                                 front: str) -> None:
    server = ServerProcess(model_repository[0], "--grpc-frontend", front)
    [front] = fronts(server.process.pid)
    server.process.kill()
    server.process.wait()
    deadline = time.monotonic() + 15
    while alive(front) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(front), "an orphaned front would keep the gRPC port"
    server.stop()


def test_a_taken_grpc_port_fails_the_start(model_repository: tuple[Path, dict[str, torch.nn.Module]],
                                           tmp_path: Path, front: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="cannot bind gRPC") as failed:
            ServerProcess(model_repository[0], "--grpc-frontend", front, "--grpc-port", str(port),
                          env={"TMPDIR": str(tmp_path)})
        assert "server exited with 1" in str(failed.value)
    assert not list(tmp_path.glob("twofour-grpc-*")), "a failed start must not leave its socket directory"


def test_a_front_that_cannot_reach_the_server_fails_its_start_and_never_reports_a_port(tmp_path: Path,
                                                                                       front: str) -> None:
    """The front connects its relay channel before it reports the port: the first relayed call of a client never
    meets the relay's first connection (issue 19: one CI run's first RPC after readiness got UNAVAILABLE)."""
    command, _ = front_command(front)
    nobody = tmp_path / "nobody.sock"
    result = subprocess.run(
        [*command, "--address", "127.0.0.1:0", "--fast-socket", str(tmp_path / "infer.sock"), "--relay-socket",
         str(nobody), "--max-message-bytes", "65536", "--max-concurrent-streams", "8", "--relay-connect-secs", "0.5"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 1, result
    said = json.loads(result.stdout.splitlines()[0])
    assert "port" not in said and "cannot reach the server's gRPC socket" in said["error"], said
    assert str(nobody) in said["error"]


def test_native_without_its_binary_fails_the_start_saying_what_to_do(
        model_repository: tuple[Path, dict[str, torch.nn.Module]], tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="make native") as failed:
        ServerProcess(model_repository[0], "--grpc-frontend", "native",
                      env={"TWOFOUR_GRPC_FRONT_BINARY": str(tmp_path / "missing"), "TMPDIR": str(tmp_path)})
    assert "server exited with 1" in str(failed.value)
    assert not list(tmp_path.glob("twofour-grpc-*"))


class Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


WIDE = 65536  # a row of 256 KiB: every reply frame is larger than the native front's 64 KiB read buffer


def test_large_replies_to_many_concurrent_calls_arrive_whole_and_matched(tmp_path: Path, front: str) -> None:
    """Framing under load: concurrent calls with replies of 0.25-1 MiB each, every one matched to its own call."""
    config = (f'name: "wide" backend: "twofour" max_batch_size: 4 '
              f'input [{{ name: "X" data_type: TYPE_FP32 dims: [{WIDE}] }}] '
              f'output [{{ name: "Y" data_type: TYPE_FP32 dims: [{WIDE}] }}] '
              'dynamic_batching { }')
    write_model(tmp_path, "wide", Doubler(), (torch.randn(2, WIDE),), config)
    server = ServerProcess(tmp_path, "--grpc-frontend", front)
    failures: list[str] = []

    def caller(seed: int) -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        rng = np.random.default_rng(seed)
        for _ in range(6):
            x = rng.standard_normal((int(rng.integers(1, 5)), WIDE)).astype(np.float32)
            request = grpcclient.InferInput("X", list(x.shape), "FP32")
            request.set_data_from_numpy(x)
            try:
                out = client.infer("wide", [request]).as_numpy("Y")
            except Exception as exc:  # noqa: BLE001 - reported below, from the test's thread
                failures.append(f"caller {seed}: {exc}")
                return
            if not np.array_equal(out, x * 2):
                failures.append(f"caller {seed}: a reply that is not its own request's")

    try:
        threads = [threading.Thread(target=caller, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures
        assert all(not thread.is_alive() for thread in threads)
    finally:
        server.stop()
