"""SIGTERM while a load generator runs on both transports: readiness turns false first, every accepted request
completes with the right output, new requests are refused cleanly (UNAVAILABLE/503 or connection refused), and
the process exits 0 within --exit-timeout-secs."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.support.models import build_slow_model
from tests.support.numerics import SLOW
from tests.support.server import ServerProcess

EXIT_TIMEOUT = 20.0
REFUSAL_MARKS = ("shutting down", "UNAVAILABLE", "Connection refused", "connection refused", "failed to connect",
                 "Connect Failed", "Errno 111", "503")


@dataclass
class Tally:
    ok_before: int = 0
    ok_after: int = 0  # answered correctly although the signal came while it was in flight or queued
    refused: int = 0
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _one(protocol: str, url: str, x: np.ndarray) -> np.ndarray:
    if protocol == "grpc":
        client = grpcclient.InferenceServerClient(url)
        tensor = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer("slow", [tensor], client_timeout=60).as_numpy("OUTPUT0")
    client = httpclient.InferenceServerClient(url, network_timeout=60, connection_timeout=60)
    tensor = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    try:
        return client.infer("slow", [tensor]).as_numpy("OUTPUT0")
    finally:
        client.close()


def _client(protocol: str, server: ServerProcess, expected: np.ndarray, x: np.ndarray, signalled: threading.Event,
            tally: Tally) -> None:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    while True:
        sent_after = signalled.is_set()
        try:
            out = _one(protocol, url, x)
        except Exception as exc:  # noqa: BLE001 - classified below
            text = f"{type(exc).__name__}: {exc}"
            with tally.lock:
                # CANCELLED or a closed connection is never a refusal, not even for a request sent in the last moment
                # (the drain ends gRPC's connections before gRPC's stop and serves uvicorn's backlog: app.py)
                if any(mark in text for mark in REFUSAL_MARKS) and signalled.is_set():
                    tally.refused += 1
                else:
                    tally.wrong.append(f"{protocol}: {text[:300]}")
            if not server.alive():
                return
            time.sleep(0.05)
            continue
        with tally.lock:
            if not SLOW.close(out, expected):
                tally.wrong.append(f"{protocol}: wrong output")
            elif signalled.is_set() and not sent_after:
                tally.ok_after += 1
            else:
                tally.ok_before += 1
        if not server.alive():
            return


@pytest.fixture(scope="module")
def slow_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    root = tmp_path_factory.mktemp("shutdown_repo")
    return root, build_slow_model(root)


def test_sigterm_under_load_drains_everything_and_exits_zero(slow_repo: tuple[Path, torch.nn.Module]) -> None:
    root, module = slow_repo
    server = ServerProcess(root, "--exit-timeout-secs", str(EXIT_TIMEOUT))
    x = np.random.default_rng(0).standard_normal((4, 1024)).astype(np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    signalled, tally = threading.Event(), Tally()
    threads = [threading.Thread(target=_client, args=(p, server, expected, x, signalled, tally), daemon=True)
               for p in ("grpc", "http") * 4]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while tally.ok_before < 8 and time.monotonic() < deadline and not tally.wrong:
            time.sleep(0.05)
        assert tally.ok_before >= 8 and not tally.wrong, tally.wrong
        signalled.set()
        sent = time.monotonic()
        server.signal()
        ready_status = None
        try:  # the listener is still open while in-flight requests drain: readiness must answer 503 now
            urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=5)
            ready_status = 200
        except urllib.error.HTTPError as exc:
            ready_status = exc.code
        assert ready_status == 503, f"readiness answered {ready_status} right after SIGTERM"
        code = server.process.wait(EXIT_TIMEOUT + 10)
        elapsed = time.monotonic() - sent
        for t in threads:
            t.join(30)
        log = server.output()
    finally:
        server.stop()
    assert code == 0, log
    assert elapsed < EXIT_TIMEOUT + 3, f"exit took {elapsed:.1f}s"
    assert not tally.wrong, tally.wrong[:5]
    assert tally.ok_after >= 1, "no request was in flight at SIGTERM: the test proves nothing"
    assert tally.refused >= 1, "no request was refused after SIGTERM"
    assert "exit timeout reached" not in log
    print(f"before SIGTERM {tally.ok_before} ok; in flight at SIGTERM and completed {tally.ok_after}; "
          f"refused {tally.refused}; exit after {elapsed:.2f}s")
