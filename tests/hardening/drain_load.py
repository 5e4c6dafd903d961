"""The drain scenario of issue 19, as a reusable driver: N tritonclient aio clients (gRPC or HTTP) hammer a real
server, SIGTERM arrives in the middle of the load, and every request's outcome is counted by name.

Allowed outcomes: OK, UNAVAILABLE / 503 (refused: the client may retry it elsewhere), and "refused" at connect
(ECONNREFUSED once the listener is closed: nothing was sent). Anything else is a failure of the drain: CANCELLED
(the client cannot tell whether it ran, and retry policies do not retry it), a reset or closed connection on HTTP
(same), or a wrong answer. Used by test_drain_outcomes.py and runnable by hand:

    python -m tests.hardening.drain_load --runs 10 --mode native --protocol grpc
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.numerics import MNIST_MLP
from tests.support.server import ServerProcess

MODEL = "mnist_mlp"
REPOSITORY = Path(__file__).resolve().parents[2] / "model_repo"
ALLOWED = frozenset({"OK", "UNAVAILABLE", "503", "REFUSED"})


@dataclass
class Outcomes:
    """Counts by outcome name, plus the first few texts of each unexpected one."""

    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    samples: dict[str, str] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)  # monotonic time of each outcome but OK

    signalled: float = 0.0
    stop_at: float = float("inf")  # the clients stop here: set once SIGTERM is sent

    def timeline(self) -> str:
        """When each kind of outcome happened, in ms after SIGTERM (first..last)."""
        return " ".join(f"{name}@{1000 * (min(t) - self.signalled):.0f}..{1000 * (max(t) - self.signalled):.0f}ms"
                        for name, t in sorted(self.times.items()))

    def add(self, name: str, text: str = "") -> None:
        self.counts[name] += 1
        if name != "OK":
            self.times.setdefault(name, []).append(time.monotonic())
        if name not in ALLOWED and name not in self.samples:
            self.samples[name] = text[:300]

    @property
    def bad(self) -> dict[str, int]:
        return {name: n for name, n in self.counts.items() if name not in ALLOWED}


def _classify_grpc(exc: Exception) -> tuple[str, str]:
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        status = exc.status() or ""
        name = status.removeprefix("StatusCode.") or "UNKNOWN"
        if name == "UNAVAILABLE" and "Connection refused" in str(exc):
            return "REFUSED", str(exc)
        return name, str(exc)
    return type(exc).__name__, str(exc)


def _classify_http(exc: Exception) -> tuple[str, str]:
    from tritonclient.utils import InferenceServerException

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        return (status or "HTTP_ERROR"), text
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in text or "Connection refused" in text:
        return "REFUSED", text
    return "RESET:" + type(exc).__name__, text


async def _grpc_client(url: str, x: np.ndarray, expected: np.ndarray, outcomes: Outcomes,
                       close: Callable[[np.ndarray, np.ndarray], bool]) -> None:
    import tritonclient.grpc.aio as grpcaio
    from tritonclient.grpc import InferInput

    client = grpcaio.InferenceServerClient(url)
    tensor = InferInput("pixels", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    await _until_stopped(lambda: client.infer(MODEL, [tensor], client_timeout=30), _classify_grpc, client,
                         expected, outcomes, close)


async def _http_client(url: str, x: np.ndarray, expected: np.ndarray, outcomes: Outcomes,
                       close: Callable[[np.ndarray, np.ndarray], bool]) -> None:
    import tritonclient.http.aio as httpaio
    from tritonclient.http import InferInput

    client = httpaio.InferenceServerClient(url, conn_timeout=30)
    tensor = InferInput("pixels", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    await _until_stopped(lambda: client.infer(MODEL, [tensor], timeout=30), _classify_http, client,
                         expected, outcomes, close)


async def _until_stopped(infer: Callable[[], Any], classify: Callable[[Exception], tuple[str, str]],
                         client: Any, expected: np.ndarray, outcomes: Outcomes,
                         close: Callable[[np.ndarray, np.ndarray], bool]) -> None:
    """One client's loop, either protocol: infer until the window ends, counting every outcome."""
    try:
        while time.monotonic() < outcomes.stop_at:
            try:
                result = await infer()
            except Exception as exc:  # noqa: BLE001 - every outcome is classified and counted
                name, text = classify(exc)
                outcomes.add(name, text)
                await asyncio.sleep(0.02)
                continue
            outcomes.add("OK" if close(result.as_numpy("output"), expected) else "WRONG")
    finally:
        await client.close()


async def _load(server: ServerProcess, protocols: tuple[str, ...], clients: int, window: float, signal_at: float,
                x: np.ndarray, expected: np.ndarray, close: Callable[[np.ndarray, np.ndarray], bool]) -> Outcomes:
    outcomes = Outcomes()
    tasks = []
    for i in range(clients):  # the clients take turns among the protocols
        if protocols[i % len(protocols)] == "grpc":
            run, url = _grpc_client, server.grpc_url
        else:
            run, url = _http_client, server.http_url
        tasks.append(asyncio.create_task(run(url, x, expected, outcomes, close)))
    deadline = time.monotonic() + 30  # a busy machine may take a while before every client is up
    while outcomes.counts["OK"] < 4 * clients and time.monotonic() < deadline and not outcomes.bad:
        await asyncio.sleep(0.01)
    await asyncio.sleep(signal_at)  # under full load now
    server.signal(signal.SIGTERM)
    outcomes.signalled = time.monotonic()
    outcomes.stop_at = outcomes.signalled + window - signal_at
    await asyncio.gather(*tasks)
    return outcomes


def run_once(mode: str, protocols: tuple[str, ...] = ("grpc", "http"), *, clients: int = 16, window: float = 2.0,
             signal_at: float = 0.75, exit_timeout: float = 20.0) -> tuple[Outcomes, int, str]:
    """One server in `mode` (native | python | inline front), loaded by `clients` clients taking turns among
    `protocols`: once all are up (4 answers per client), SIGTERM after `signal_at` more seconds and the load goes on
    until `window - signal_at` after it; returns the outcomes, the exit code and the server log.

    The reference answer is the bundled model run eagerly; served answers must match it within the fp32 GEMM bound
    (tests/support/numerics.py), so a request answered with another request's rows counts as WRONG."""
    env = {"TWOFOUR_GRPC_FRONTEND": mode}
    x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
    expected = eager_answer(x)
    server = ServerProcess(REPOSITORY, "--exit-timeout-secs", str(exit_timeout), env=env, wait_ready=False)
    try:
        server.wait_ready(180)  # inside the try: a server that never got ready is stopped too
        outcomes = asyncio.run(_load(server, protocols, clients, window, signal_at, x, expected, MNIST_MLP.close))
        code = server.process.wait(exit_timeout + 10)
        return outcomes, code, server.output()
    finally:
        server.stop()


def eager_answer(x: np.ndarray) -> np.ndarray:
    """The bundled model's stored program and weights, run here without batching, codec or transport."""
    import torch

    from server.repository import read_config
    from server.runtime.select import create_runtime

    runtime = create_runtime(REPOSITORY / MODEL / "1", read_config(REPOSITORY / MODEL, MODEL), "cpu")
    with torch.inference_mode():
        return runtime.infer({"pixels": torch.from_numpy(x)})["output"].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", default="native", choices=["native", "python", "inline"])
    parser.add_argument("--protocol", default="grpc,http", help="grpc, http or both (comma-separated)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--signal-at", type=float, default=1.5)
    parser.add_argument("--log", action="store_true", help="print each server log")
    args = parser.parse_args()
    for i in range(args.runs):
        outcomes, code, log = run_once(args.mode, tuple(args.protocol.split(",")), clients=args.clients,
                                       window=args.window,
                                       signal_at=args.signal_at)
        print(f"run {i + 1}: exit {code} {dict(outcomes.counts)} {outcomes.samples or ''}\n  {outcomes.timeline()}",
              flush=True)
        if args.log:
            print(log)


if __name__ == "__main__":
    main()
