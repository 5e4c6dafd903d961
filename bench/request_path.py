"""Event-loop CPU per request on the in-process inference path, without any network: decode -> dataplane ->
dynamic batcher -> runtime -> encode, exactly the code a gRPC ModelInfer runs after grpc.aio hands it a message.

Why: over gRPC the event-loop thread is the server's scarce resource (grpc.aio's own per-RPC work runs there too,
measured at ~190 µs per RPC on this machine), so every microsecond our path spends on that thread caps
throughput. This measures that thread's CPU time (`time.thread_time`) per request with N requests in flight, so
changes to the path can be compared side by side without a load generator's noise.

    python bench/request_path.py                     # real model, 32 in flight
    python bench/request_path.py --null-runtime      # framework only: the runtime returns a ready output
    python bench/request_path.py --profile 25        # cProfile of the loop thread, top 25 by own time
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tritonclient.grpc import service_pb2 as pb  # noqa: E402

from bench.serve_bench import VARIANTS, build_repository  # noqa: E402
from server.app import build_app  # noqa: E402
from server.codec.grpc_tensors import encode_infer_request  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.transport.grpc import InferenceServicer  # noqa: E402
from server.types import InferRequest, InferTensor, RequestedOutput  # noqa: E402


class NullRuntime:
    """Stands in for the model: a ready output of the right shape, so only the framework's cost remains."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._row = torch.zeros(1, 10)

    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = next(iter(batch.values())).shape[0]
        return {"OUTPUT0": self._row.expand(rows, 10).clone()}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def wire_request() -> bytes:
    x = np.random.default_rng(0).standard_normal((1, 784), dtype=np.float32)
    request = InferRequest(model_name="mlp", model_version="", id="",
                           inputs=[InferTensor("INPUT0", "FP32", (1, 784), x, {})],
                           outputs=[RequestedOutput("OUTPUT0", {})], parameters={})
    return encode_infer_request(request).SerializeToString()


async def drive(servicer: InferenceServicer, data: bytes, total: int, concurrency: int) -> tuple[float, float]:
    """(loop-thread CPU seconds, wall seconds) for `total` requests with `concurrency` in flight."""
    remaining = [total]

    async def client() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            request = pb.ModelInferRequest.FromString(data)  # what grpc.aio's deserializer does
            reply = await servicer.infer(request)
            reply.SerializeToString()  # and its serializer

    cpu0, wall0 = time.thread_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.thread_time() - cpu0, time.perf_counter() - wall0


async def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(model_repository=build_repository(Path(tmp), VARIANTS[args.variant]))
        app = build_app(settings)
        await app.registry.load_all()
        app.dataplane.starting = False
        if args.null_runtime:
            loaded = app.registry.resolve("mlp")[1]
            runtime = loaded.scheduler._runtime  # noqa: SLF001 - benchmark-only substitution
            loaded.scheduler._runtime = NullRuntime(runtime)  # noqa: SLF001
        servicer = InferenceServicer(app.dataplane, app.control)
        data = wire_request()
        await drive(servicer, data, 2000, args.concurrency)  # warm-up
        profiler = cProfile.Profile() if args.profile else None
        results = []
        for _ in range(args.repeats):
            if profiler:
                profiler.enable()
            cpu, wall = await drive(servicer, data, args.requests, args.concurrency)
            if profiler:
                profiler.disable()
            results.append((cpu / args.requests * 1e6, args.requests / wall))
        stats = app.metrics.stats("mlp", "1")
        await app.registry.close()
    cpu_us = sorted(r[0] for r in results)
    rate = sorted(r[1] for r in results)
    print(f"{'runtime':<8} {'in flight':>9} {'requests':>9} {'loop CPU us/req (median)':>25} {'min':>7} "
          f"{'max':>7} {'req/s (median)':>15} {'rows/batch':>10}")
    mean_batch = stats.inference_count / max(1, stats.execution_count) if stats else float("nan")
    print(f"{'null' if args.null_runtime else 'model':<8} {args.concurrency:>9} {args.requests:>9} "
          f"{cpu_us[len(cpu_us) // 2]:>25.1f} {cpu_us[0]:>7.1f} {cpu_us[-1]:>7.1f} {rate[len(rate) // 2]:>15.0f} "
          f"{mean_batch:>10.2f}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--variant", default="batched", choices=sorted(VARIANTS))
    parser.add_argument("--null-runtime", action="store_true")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N by own time")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
