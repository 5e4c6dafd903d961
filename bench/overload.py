"""Overload: measure capacity, drive an open-loop load at 4x it, then drop back; the server must shed, not drown.

Phases against one real server (the deliberately heavy `slow` test model, `--max-inflight-requests` small):
  1. capacity: closed loop at concurrency 8 -> completions per second (X)
  2. overload: open loop (requests sent on a fixed schedule, never waiting for answers) at 4X for --seconds
  3. recovery: open loop at 0.5X
For each phase: sent, ok, shed (UNAVAILABLE), other errors, ok p50/p99, server RSS at start/end. Pass when the
overload sheds with UNAVAILABLE only, admitted p99 stays under the bound the in-flight limit implies, RSS stays
within 10%, and recovery answers everything with p99 near the capacity phase.
The load generator shares the machine's cores with the server, so overload throughput is reported as measured.

    python bench/overload.py --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tritonclient.grpc.aio as aioclient  # noqa: E402
from tritonclient.grpc import InferInput  # noqa: E402

from bench.soak import sample  # noqa: E402
from tests.support.models import build_slow_model  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402


@dataclass
class Phase:
    name: str
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # send time of each ok request, same order as latencies
    shed: int = 0
    errors: list[str] = field(default_factory=list)
    rss: tuple[float, float] = (0.0, 0.0)
    seconds: float = 0.0

    def row(self) -> str:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([float("nan")])
        return (f"| {self.name} | {self.sent} | {len(self.latencies)} ({len(self.latencies) / self.seconds:.1f}/s) "
                f"| {self.shed} | {len(self.errors)} | {np.percentile(lat, 50):.0f} | {np.percentile(lat, 99):.0f} "
                f"| {self.rss[0]:.0f} -> {self.rss[1]:.0f} |")


def make_input(rows: int) -> list[InferInput]:
    tensor = InferInput("INPUT0", [rows, 1024], "FP32")
    tensor.set_data_from_numpy(np.ones((rows, 1024), np.float32))
    return [tensor]


async def one(client: aioclient.InferenceServerClient, phase: Phase) -> None:
    start = time.perf_counter()
    try:
        await client.infer("slow", make_input(1), client_timeout=60)
        phase.latencies.append(time.perf_counter() - start)
        phase.sent_at.append(start)
    except Exception as exc:  # noqa: BLE001 - classified
        text = str(exc)
        if "UNAVAILABLE" in text or "limit of" in text or "queue" in text:
            phase.shed += 1
        else:
            phase.errors.append(text[:200])


async def closed_loop(client: aioclient.InferenceServerClient, phase: Phase, concurrency: int, seconds: float) -> None:
    end = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < end:
            phase.sent += 1
            await one(client, phase)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - started


async def open_loop(client: aioclient.InferenceServerClient, phase: Phase, rate: float, seconds: float) -> None:
    tasks = []
    started = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        phase.sent += 1
        tasks.append(asyncio.create_task(one(client, phase)))
    await asyncio.gather(*tasks)
    phase.seconds = time.perf_counter() - started


async def run(server: ServerProcess, seconds: float) -> list[Phase]:
    client = aioclient.InferenceServerClient(server.grpc_url)
    pid = server.process.pid
    await closed_loop(client, Phase("warm-up"), 4, 3)
    phases = []
    for name in ("capacity", "overload 4x", "recovery 0.5x"):
        phase = Phase(name)
        before = sample(pid)[0]
        if name == "capacity":
            await closed_loop(client, phase, 8, seconds)
            capacity = len(phase.latencies) / phase.seconds
        else:
            await open_loop(client, phase, capacity * (4 if "4x" in name else 0.5), seconds)
        phase.rss = (before, sample(pid)[0])
        phases.append(phase)
    await client.close()
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--max-inflight", type=int, default=16, help="server's --max-inflight-requests")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="twofour-overload-"))
    build_slow_model(root)
    server = ServerProcess(root, "--max-inflight-requests", str(args.max_inflight))
    try:
        phases = asyncio.run(run(server, args.seconds))
    finally:
        code = server.stop()
        shutil.rmtree(root, ignore_errors=True)
    capacity, overload, recovery = phases
    # Without shedding a 4x open loop queues without end (the last request of a phase would wait ~3/4 of it);
    # bounded means: admitted p99 within a fixed multiple of the capacity phase's, and not rising during the phase.
    order = np.argsort(overload.sent_at)
    late = np.array(overload.latencies)[order]
    first_half, second_half = late[: len(late) // 2], late[len(late) // 2:]
    halves = (float(np.percentile(first_half, 99)) * 1000, float(np.percentile(second_half, 99)) * 1000)
    print(f"slow model (64 x 1024x1024 GEMM per row, 1 row/request), --max-inflight-requests {args.max_inflight}, "
          f"{args.seconds:.0f}s per phase, server exit {code}\n")
    print("| phase | sent | ok | shed (UNAVAILABLE) | other errors | p50 ms | p99 ms | RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for phase in phases:
        print(phase.row())
    p99 = float(np.percentile(overload.latencies, 99)) * 1000 if overload.latencies else float("inf")
    cap_p99 = float(np.percentile(capacity.latencies, 99)) * 1000
    rec_p99 = float(np.percentile(recovery.latencies, 99)) * 1000 if recovery.latencies else float("inf")
    checks = {
        "overload sheds": overload.shed > 0,
        "no errors other than UNAVAILABLE": not (capacity.errors or overload.errors or recovery.errors),
        f"admitted p99 {p99:.0f} ms <= 10x capacity p99 ({cap_p99:.0f} ms)": p99 <= 10 * max(cap_p99, 1.0),
        f"admitted p99 not rising: 1st half {halves[0]:.0f} ms, 2nd half {halves[1]:.0f} ms":
            halves[1] <= 1.5 * halves[0] + 50,
        "RSS within 10% during overload": overload.rss[1] <= overload.rss[0] * 1.10,
        "recovery answers everything": recovery.shed == 0 and len(recovery.latencies) == recovery.sent,
        f"recovery p99 {rec_p99:.0f} ms <= 2x capacity p99 {cap_p99:.0f} ms": rec_p99 <= 2 * cap_p99,
        "server exit 0": code == 0,
    }
    print()
    for name, ok in checks.items():
        print(f"- {'ok  ' if ok else 'FAIL'} {name}")
    for phase in phases:
        if phase.errors:
            print(f"first error in {phase.name}: {phase.errors[0]}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
