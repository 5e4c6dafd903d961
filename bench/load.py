"""Closed-loop KServe v2 load generator on tritonclient's asyncio clients (grpc.aio, http.aio).

For each concurrency N it keeps exactly N requests outstanding (like perf_analyzer --concurrency-range),
discards a warm-up, then counts completions in a fixed window. Latency is client wall time per request
(send -> decoded response). Usage:

    python bench/load.py --grpc 127.0.0.1:8001 --http 127.0.0.1:8000 --concurrency 1,8,32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a process and all its descendants (the gRPC front process of
    gRPC front process included) from /proc; 0 for what cannot be read."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / CLK_TCK
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(process_cpu_seconds(int(child)) for child in f.read().split())
    except (OSError, IndexError, ValueError):
        pass
    return total


def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine so far (all cores)."""
    with open("/proc/stat") as f:
        v = [int(a) for a in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / CLK_TCK


@dataclass
class Result:
    protocol: str
    concurrency: int
    infer_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cpu: float = float("nan")  # cores used by the server process during the window
    client_cpu: float = float("nan")  # cores used by this load generator
    other_cpu: float = float("nan")  # cores used by everything else on the machine (noise)
    first_error: str = ""

    @property
    def server_us_per_infer(self) -> float:
        """Server CPU time per inference: the figure the shared cores and the client cannot cap."""
        return self.server_cpu / self.infer_per_s * 1e6 if self.infer_per_s else float("nan")


def _client(protocol: str, url: str, concurrency: int) -> tuple[Any, Any]:
    if protocol == "grpc":
        import tritonclient.grpc.aio as tc

        return tc.InferenceServerClient(url=url), tc
    import tritonclient.http.aio as tc

    return tc.InferenceServerClient(url=url, conn_limit=max(concurrency, 1)), tc


async def measure(protocol: str, url: str, model: str, concurrency: int, x: np.ndarray, warmup: float,
                  duration: float, input_name: str = "INPUT0", output_name: str = "OUTPUT0",
                  expected: np.ndarray | None = None, server_pid: int = 0) -> Result:
    """One concurrency level against one server and protocol."""
    client, tc = _client(protocol, url, concurrency)

    def build() -> tuple[list[Any], list[Any]]:
        tensor = tc.InferInput(input_name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True) if protocol == "http" else tensor.set_data_from_numpy(x)
        out = tc.InferRequestedOutput(output_name, binary_data=True) if protocol == "http" \
            else tc.InferRequestedOutput(output_name)
        return [tensor], [out]

    try:
        if expected is not None:
            inputs, outputs = build()
            got = (await client.infer(model, inputs, outputs=outputs)).as_numpy(output_name)
            if got is None or not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
                raise SystemExit(f"{protocol}: wrong output {None if got is None else got.ravel()[:4]}")
        start = time.perf_counter()
        window_start, window_end = start + warmup, start + warmup + duration
        latencies: list[float] = []
        errors = [0, ""]

        async def worker() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= window_end:
                    return
                inputs, outputs = build()
                ok = True
                try:
                    (await client.infer(model, inputs, outputs=outputs)).as_numpy(output_name)
                except Exception as exc:  # noqa: BLE001 - counted and reported, the load goes on
                    ok = False
                    errors[1] = errors[1] or repr(exc)[:200]
                t1 = time.perf_counter()
                if t0 >= window_start and t1 <= window_end:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors[0] += 1  # type: ignore[operator]

        marks: dict[str, float] = {}

        async def marker() -> None:
            for edge, when in (("0", window_start), ("1", window_end)):
                await asyncio.sleep(max(0.0, when - time.perf_counter()))
                marks["s" + edge] = process_cpu_seconds(server_pid) if server_pid else 0.0
                t = os.times()
                marks["c" + edge] = t.user + t.system
                marks["m" + edge] = machine_busy_seconds()
                marks["w" + edge] = time.perf_counter()

        await asyncio.gather(marker(), *(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    ms = np.array(latencies) * 1e3
    q = (lambda p: float(np.percentile(ms, p))) if len(ms) else (lambda p: float("nan"))
    wall = max(marks["w1"] - marks["w0"], 1e-9)
    server = (marks["s1"] - marks["s0"]) / wall if server_pid else float("nan")
    client = (marks["c1"] - marks["c0"]) / wall
    other = (marks["m1"] - marks["m0"]) / wall - client - (server if server_pid else 0.0)
    return Result(protocol, concurrency, len(latencies) * x.shape[0] / duration, q(50), q(90), q(99), len(latencies),
                  int(errors[0]), server, client, other, str(errors[1]))


HEADER = (f"{'server':<14} {'proto':<5} {'conc':>4} {'infer/s':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'err':>4}"
          f" {'srv cpu':>7} {'us/inf':>6} {'cli cpu':>7} {'other':>5}")


def row(label: str, r: Result) -> str:
    return (f"{label:<14} {r.protocol:<5} {r.concurrency:>4} {r.infer_per_s:>9.0f} {r.p50_ms:>7.2f} {r.p90_ms:>7.2f} "
            f"{r.p99_ms:>7.2f} {r.errors:>4} {r.server_cpu:>7.2f} {r.server_us_per_infer:>6.0f} {r.client_cpu:>7.2f}"
            f" {r.other_cpu:>5.2f}")


async def sweep(label: str, urls: dict[str, str], model: str, levels: list[int], warmup: float, duration: float,
                expected: tuple[np.ndarray, np.ndarray] | None = None, features: int = 784,
                server_pid: int = 0) -> list[Result]:
    """Every protocol in `urls` at every concurrency level, printing a row as each finishes."""
    x = np.random.default_rng(1).standard_normal((1, features), dtype=np.float32)
    results = []
    for protocol, url in urls.items():
        if expected is not None:  # check the served model is the reference one before measuring it
            await measure(protocol, url, model, 1, expected[0], 0, 1e-9, expected=expected[1])
        for n in levels:
            result = await measure(protocol, url, model, n, x, warmup, duration, server_pid=server_pid)
            print(row(label, result), flush=True)
            if result.first_error:
                print(f"  first error: {result.first_error}", flush=True)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpc", default="", help="HOST:PORT of the gRPC endpoint ('' skips gRPC)")
    parser.add_argument("--http", default="", help="HOST:PORT of the HTTP endpoint ('' skips HTTP)")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--label", default="server")
    parser.add_argument("--server-pid", type=int, default=0, help="report this process's CPU use")
    args = parser.parse_args()
    urls = {p: u for p, u in (("grpc", args.grpc), ("http", args.http)) if u}
    print(HEADER)
    asyncio.run(sweep(args.label, urls, args.model, [int(c) for c in args.concurrency.split(",")], args.warmup,
                      args.duration, server_pid=args.server_pid))


if __name__ == "__main__":
    main()
